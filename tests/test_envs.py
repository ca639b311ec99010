"""Paper environments: Atari (both protocols) and DMC (pixels and vectors), alone and under GITSTORM."""

from __future__ import annotations

import subprocess
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AtariPreprocessing
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.monitor import Monitor

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs import (
    ATARI_100K_GAMES,
    atari_id,
    dmc_id,
    human_normalized_score,
    make_atari_env,
    make_dmc,
    make_dmc_env,
    setup_headless_rendering,
)
from sb3_gitstorm.envs.toy import JumpingDotEnv


@pytest.mark.parametrize("protocol, sticky, noop_max, n_actions", [("storm", 0.25, 0, 18), ("atari100k", 0.0, 30, 4)])
def test_atari_protocols(protocol: str, sticky: float, noop_max: int, n_actions: int) -> None:
    env = gym.make(atari_id("Breakout"), protocol=protocol)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(sticky)
    preprocessing = env
    while not isinstance(preprocessing, AtariPreprocessing):
        preprocessing = preprocessing.env
    assert (preprocessing.noop_max, preprocessing.frame_skip, preprocessing.grayscale_obs) == (noop_max, 4, False)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(n_actions)  # full set (storm) or Breakout's minimal set
    check_env(env)
    check_env(EpisodicLifeEnv(Monitor(env)))


@pytest.mark.parametrize("training", [True, False])
def test_atari_monitor_reports_whole_games(training: bool) -> None:
    env = make_atari_env("Breakout", seed=0, training=training)
    env.reset()
    dones, score = 0, 0.0
    while True:
        _, reward, done, infos = env.step(np.array([env.action_space.sample()]))
        dones, score = dones + int(done[0]), score + float(reward[0])
        if "episode" in infos[0]:
            break
    # Breakout has 5 lives: in training each lost life ends an episode, the Monitor still sees one game.
    assert dones == (5 if training else 1)
    assert infos[0]["episode"]["r"] == pytest.approx(score)


def test_human_normalized_score() -> None:
    assert len(ATARI_100K_GAMES) == 26
    assert human_normalized_score("Pong", -20.7) == pytest.approx(0.0)
    assert human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
    np.testing.assert_allclose(human_normalized_score("Breakout", np.array([1.7, 30.5])), [0.0, 1.0])
    with pytest.raises(KeyError, match="not an Atari 100k game"):
        human_normalized_score("Tetris", 0.0)


@pytest.mark.parametrize("pixels", [True, False])
def test_dmc(pixels: bool) -> None:
    env = gym.make(dmc_id("cartpole-balance", pixels))
    expected = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8) if pixels else gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    assert env.observation_space == expected
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    check_env(env)
    obs, _ = env.reset(seed=0)
    assert obs.flags.c_contiguous  # MuJoCo renders flipped views, which th.as_tensor refuses
    if not pixels:  # 1000 simulator steps at action repeat 2, then truncation
        env.reset(seed=0)
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
        assert (steps, terminated, truncated) == (500, False, True)


def test_dmc_action_repeat() -> None:
    """Each agent step is ``action_repeat`` simulator steps with their rewards summed: 8 make the same
    1000-step episode 125 agent steps, with the return of 8 single steps."""
    single, repeated = (
        make_dmc("cartpole-balance", pixels=False, action_repeat=1),
        make_dmc("cartpole-balance", pixels=False, action_repeat=8),
    )
    single.reset(seed=0)
    repeated.reset(seed=0)
    action = np.array([0.3], np.float32)
    rewards = [single.step(action)[1] for _ in range(8)]
    reward = repeated.step(action)[1]
    assert reward == pytest.approx(sum(rewards))
    steps, truncated = 1, False
    while not truncated:
        truncated = repeated.step(action)[3]
        steps += 1
    assert steps == 125
    with pytest.raises(ValueError, match="action_repeat must be a positive number"):
        make_dmc("cartpole-balance", action_repeat=0)


def test_dmc_fast_render_changes_the_images() -> None:
    images = [make_dmc("cartpole-balance", fast_render=fast).reset(seed=0)[0] for fast in (False, True)]
    assert images[0].shape == images[1].shape == (64, 64, 3)
    assert not np.array_equal(images[0], images[1])


def test_dmc_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="Unknown DMC task"):
        make_dmc("cartpole-fly")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    assert setup_headless_rendering() == "egl"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setitem(sys.modules, "mujoco", types.ModuleType("mujoco"))
    with pytest.raises(RuntimeError, match="imported before MUJOCO_GL"):
        setup_headless_rendering()


@pytest.mark.parametrize("kind", ["atari", "dmc"])
def test_gitstorm_trains_on_paper_envs(kind: str, fast_kwargs: dict) -> None:
    if kind == "atari":
        env = make_atari_env("Pong", n_envs=2, seed=0)
    else:
        env = make_dmc_env("cartpole-balance", seed=0, fast_render=True)
    model = GITSTORM("CnnPolicy", env, seed=0, **fast_kwargs).learn(48)
    assert model._n_updates > 0


def test_jumping_dot_is_bimodal_and_rewards_the_right_half() -> None:
    """The dot jumps up or down by ``jump`` cells (both happen), moves with the action, and pays in the right half."""
    env = gym.make("gitstorm/JumpingDot-v0")
    env.reset(seed=0)
    base = env.unwrapped
    jumps = set()
    for action in [0] * 10 + [2] * 30:  # to the left border, then to the right one
        y, x = base.cell
        _, reward, terminated, _, _ = env.step(action)
        jumps.add(int((base.cell[0] - y) % base.cells))
        assert base.cell[1] == np.clip(x + action - 1, 0, base.cells - 1) and not terminated
        assert reward == float(base.cell[1] >= base.cells // 2)
    assert jumps == {base.jump, base.cells - base.jump} and reward == 1.0
    obs, _ = env.reset(seed=1)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and (obs == 255).all(-1).sum() == 16


@pytest.mark.parametrize("outcomes", [2, 4, 8])
def test_jumping_dot_jumps_to_every_outcome_and_real_frames_are_feasible(outcomes: int) -> None:
    """Every step lands on one of the ``outcomes`` targets (each of them happens), and the checker accepts every real frame."""
    env = JumpingDotEnv(size=16, cells=4, jump=1, outcomes=outcomes)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    landed: set[tuple[int, int]] = set()
    for _ in range(300):
        cell, action = env.cell.copy(), int(env.action_space.sample())
        previous = obs.transpose(2, 0, 1) / 255.0
        obs, *_ = env.step(action)
        targets = env.targets(cell, action)
        assert len(targets) == outcomes and tuple(env.cell) in targets
        assert env.locate(obs.transpose(2, 0, 1) / 255.0) == tuple(env.cell)
        assert env.feasible(previous, action, obs.transpose(2, 0, 1) / 255.0)
        landed.add(tuple(int(v) for v in (np.array(env.cell) - env._moved(cell, action)) % env.cells))
    assert len(landed) == outcomes


def test_jumping_dot_pays_in_its_reward_columns_which_are_tinted() -> None:
    """``reward_columns`` decides where the dot earns 1 (the column it lands in) and which columns are tinted."""
    env = JumpingDotEnv(size=16, cells=4, jump=1, outcomes=4, reward_columns=[1, 2])
    env.reset(seed=0)
    env.action_space.seed(0)
    paid = {0: set(), 1: set()}
    for _ in range(200):
        _, reward, *_ = env.step(int(env.action_space.sample()))
        paid[int(reward)].add(int(env.cell[1]))
    assert paid == {0: {0, 3}, 1: {1, 2}}
    tint = env._background()[0, :, 2]
    np.testing.assert_array_equal(tint, np.repeat([0, 64, 64, 0], 4))
    np.testing.assert_array_equal(JumpingDotEnv(size=16, cells=4, jump=1)._background()[0, :, 2], np.repeat([0, 0, 64, 64], 4))
    for columns in ([], [4], [-1]):
        with pytest.raises(ValueError, match=r"reward_columns must be some of the grid's columns 0\.\.3"):
            JumpingDotEnv(size=16, cells=4, jump=1, reward_columns=columns)


def test_jumping_dot_late_reward_pays_for_the_cell_the_step_starts_in() -> None:
    """With ``late_reward`` a step pays for the column the dot was in before it moved and jumped."""
    env = JumpingDotEnv(size=16, cells=4, jump=1, outcomes=4, reward_columns=[1, 2], late_reward=True)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(100):
        start = int(env.cell[1])
        _, reward, *_ = env.step(int(env.action_space.sample()))
        assert reward == float(start in (1, 2))


def test_jumping_dot_checker_rejects_mixed_missing_and_misplaced_dots() -> None:
    """Two half dots, no dot, a dot in a cell the jump cannot reach, or a smeared dot are infeasible."""
    env = JumpingDotEnv(size=16, cells=4, jump=1, outcomes=4)
    env.reset(seed=0)
    env.cell = np.array([1, 1])
    previous = env._obs().transpose(2, 0, 1) / 255.0

    def frame(*cells: tuple[int, int]) -> np.ndarray:
        env.cell = np.array(cells[0])
        out = env._obs().transpose(2, 0, 1) / 255.0
        for y, x in cells[1:]:
            out[:, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4] = 1.0
        return out

    assert env.targets((1, 1), 1) == {(0, 1), (2, 1), (1, 0), (1, 2)}
    assert env.feasible(previous, 1, frame((0, 1))) and env.feasible(previous, 2, frame((1, 3)))
    assert not env.feasible(previous, 1, frame((1, 1)))  # stayed: not a jump target
    assert not env.feasible(previous, 1, frame((0, 1), (2, 1)))  # two dots
    two_halves = frame((0, 1))
    two_halves[:, 2:4] = 0.0  # the lower half of the dot is missing ...
    two_halves[:, 8:10, 4:8] = 1.0  # ... and the upper half of the other target's dot is there
    assert env.locate(two_halves) is None and not env.feasible(previous, 1, two_halves)
    empty = env._background().transpose(2, 0, 1) / 255.0
    assert env.locate(empty) is None and not env.feasible(previous, 1, empty) and not env.feasible(empty, 1, frame((0, 1)))
    faint = frame((0, 1)) * 0.4  # a ghost of the dot below the threshold
    assert env.locate(faint) is None
    shifted = np.roll(frame((0, 1)), 2, axis=2)  # half in one cell, half in the next
    assert env.locate(shifted) is None
    with pytest.raises(ValueError, match="multiples of cells"):
        env.locate(np.zeros((3, 15, 15)))
    with pytest.raises(ValueError, match="outcomes must be one of"):
        JumpingDotEnv(outcomes=3)
    with pytest.raises(ValueError, match="distinct cells"):
        JumpingDotEnv(size=8, cells=2, jump=1, outcomes=8)


def test_which_half_rewards_naming_the_half_the_square_is_in() -> None:
    """The square wanders one cell at a time inside the frame; naming its half pays 1, passing or the other half 0."""
    env = gym.make("gitstorm/WhichHalf-v0")
    obs, _ = env.reset(seed=0)
    base = env.unwrapped
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and (obs == 255).all(-1).sum() == 64
    rng = np.random.default_rng(0)
    rewards = {0: [], 1: [], 2: []}
    for t in range(base.max_steps):
        cell, action = base.cell.copy(), int(rng.integers(3))
        obs, reward, terminated, truncated, _ = env.step(action)
        right = int(obs.any(-1).nonzero()[1].min() >= 32)  # where the frame now shows the square
        assert np.abs(base.cell - cell).sum() <= 1 and right == int(base.cell[1] >= 4)
        assert reward == float(action == int(cell[1] >= 4))
        rewards[action].append(reward)
        assert not terminated and truncated == (t == base.max_steps - 1)
    assert rewards[2] and not any(rewards[2]) and 0 < np.mean(rewards[0] + rewards[1]) < 1


def test_importing_the_library_registers_the_env_ids() -> None:
    """``import sb3_gitstorm`` is enough for ``gym.make("gitstorm/...")`` and ``GITSTORM(policy, "gitstorm/...")``."""
    code = "import gymnasium as gym, sb3_gitstorm; print(gym.spec('gitstorm/dmc-cartpole-balance-v0').entry_point)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "sb3_gitstorm.envs.dmc:make_dmc"
