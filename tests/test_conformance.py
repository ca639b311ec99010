"""GITSTORM where an SB3 user swaps it in for PPO: callbacks, evaluate_policy, vectorised envs,
parameters, training mode and seeding."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from sb3_gitstorm import GITSTORM
from tests.conftest import DotEnv, FixedLengthEnv


def short_cartpole(n_envs: int = 1, seed: int = 0) -> VecEnv:
    """CartPole with episodes of at most 50 steps, Monitor-wrapped."""
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, env_kwargs=dict(max_episode_steps=50))


# ------------------------------------------------------------------------------------- callbacks
def test_eval_and_checkpoint_callbacks_with_progress_bar(tmp_path, fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", short_cartpole(), seed=0, **fast_kwargs)
    evaluation = EvalCallback(
        short_cartpole(seed=1),
        n_eval_episodes=3,
        eval_freq=40,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "eval"),
        deterministic=True,
    )
    checkpoints = CheckpointCallback(save_freq=40, save_path=str(tmp_path / "checkpoints"), save_replay_buffer=True)
    model.learn(80, callback=CallbackList([evaluation, checkpoints]), progress_bar=True)

    log = np.load(tmp_path / "eval" / "evaluations.npz")
    assert log["timesteps"].tolist() == [40, 80]
    assert log["results"].shape == (2, 3) and np.all(log["results"] >= 1)
    assert evaluation.best_mean_reward == log["results"].mean(1).max()
    # Callbacks run before the step's transition is stored (SB3's order): a save at timestep 80 holds the
    # state at the start of that step, 79 steps, and a resumed run takes step 80 again.
    best = GITSTORM.load(tmp_path / "best" / "best_model.zip")
    assert best.num_timesteps in (39, 79)
    for steps in (40, 80):
        assert (tmp_path / "checkpoints" / f"rl_model_{steps}_steps.zip").exists()
    restored = GITSTORM.load(tmp_path / "checkpoints" / "rl_model_80_steps.zip", env=short_cartpole())
    restored.load_replay_buffer(tmp_path / "checkpoints" / "rl_model_replay_buffer_80_steps.pkl")
    assert restored.num_timesteps == restored.replay_buffer.pos == 79
    np.testing.assert_array_equal(restored.replay_buffer.observations[:79], model.replay_buffer.observations[:79])


def test_stop_training_on_reward_threshold(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", short_cartpole(), seed=0, **fast_kwargs)
    stop = StopTrainingOnRewardThreshold(reward_threshold=0.5)  # any CartPole episode earns at least 1
    model.learn(10_000, callback=EvalCallback(short_cartpole(seed=1), callback_on_new_best=stop, eval_freq=40, n_eval_episodes=2))
    assert model.num_timesteps == 40


class StopAfter(BaseCallback):
    """Stops training by returning False once ``steps`` steps were taken."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def _on_step(self) -> bool:
        return self.num_timesteps < self.steps


def test_custom_callback_stops_training(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", short_cartpole(), seed=0, **fast_kwargs)
    model.learn(10_000, callback=[StopAfter(45)])  # a list becomes a CallbackList
    assert model.num_timesteps == 45 and model._n_updates > 0


# ------------------------------------------------------------------------------- evaluate_policy
def record_predict(model: GITSTORM) -> list[dict[str, Any]]:
    """Make ``model.predict`` record its inputs and outputs."""
    calls: list[dict[str, Any]] = []
    predict = model.predict

    def recorded(observation, state=None, episode_start=None, deterministic=False):
        action, new_state = predict(observation, state, episode_start, deterministic)
        calls.append(
            dict(obs=np.array(observation), state=state, starts=np.array(episode_start), action=action, new_state=new_state)
        )
        return action, new_state

    model.predict = recorded  # type: ignore[method-assign]
    return calls


def check_context(model: GITSTORM, calls: list[dict[str, Any]], lengths: list[int], episodes: list[int]) -> None:
    """The state evaluate_policy passes back and forth is each column's own recent history.

    Column ``i`` runs ``episodes[i]`` episodes of exactly ``lengths[i]`` steps.
    """
    kept = model.policy.context_length - 1
    policy = model.policy
    for j, call in enumerate(calls):
        tokens, actions, context_lengths = call["new_state"]
        if j == 0:
            assert call["state"] is None
        else:
            assert call["state"] is calls[j - 1]["new_state"]  # passed back unchanged
            np.testing.assert_array_equal(tokens[:, :-1], call["state"][0][:, 1:])  # the window slides by one step
        latent = policy.world_model.encode(policy.model_observation(th.as_tensor(call["obs"])), deterministic=True)
        np.testing.assert_array_equal(tokens[:, -1], latent.argmax(-1).numpy())  # newest entry: this observation
        np.testing.assert_array_equal(actions[:, -1], call["action"])  # ... and the action taken at it
        for i, (length, n) in enumerate(zip(lengths, episodes, strict=True)):
            if j < length * n:  # evaluate_policy stops updating a column once it has its episodes
                assert call["starts"][i] == (j % length == 0)
                assert context_lengths[i] == min(j % length + 1, kept)


def test_evaluate_policy_single_env(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", FixedLengthEnv(5), seed=0, **fast_kwargs)
    model.learn(40)
    calls = record_predict(model)
    rewards, lengths = evaluate_policy(
        model, FixedLengthEnv(5), n_eval_episodes=3, deterministic=True, return_episode_rewards=True
    )
    assert lengths == [5, 5, 5] and rewards == [5.0, 5.0, 5.0]
    check_context(model, calls, [5], [3])
    mean, std = evaluate_policy(model, FixedLengthEnv(4), n_eval_episodes=2)
    assert (mean, std) == (4.0, 0.0)


def test_evaluate_policy_carries_each_columns_context(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", FixedLengthEnv(5), seed=0, **fast_kwargs)
    model.learn(40)
    calls = record_predict(model)
    env = DummyVecEnv([lambda: FixedLengthEnv(3), lambda: FixedLengthEnv(5)])
    env.seed(0)
    _, lengths = evaluate_policy(model, env, n_eval_episodes=4, deterministic=True, return_episode_rewards=True)
    assert sorted(lengths) == [3, 3, 5, 5]
    check_context(model, calls, [3, 5], [2, 2])
    # Each column's actions are what the model does on that column alone, with its own history.
    for i in range(2):
        state = None
        for j, call in enumerate(calls[: [6, 10][i]]):
            action, state = model.predict(call["obs"][i : i + 1], state, call["starts"][i : i + 1], deterministic=True)
            assert action[0] == call["action"][i], (i, j)
            for alone, together in zip(state, call["new_state"], strict=True):
                np.testing.assert_array_equal(alone[0], together[i])


# --------------------------------------------------------------------------------- vectorised envs
class RecordingVecEnv(VecEnvWrapper):
    """Records every observation an action was taken at, the action, reward and done."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.dones: list[np.ndarray] = []

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self.observations.append(self._obs.copy())
        self.actions.append(np.array(actions))
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.rewards.append(rewards.copy())
        self.dones.append(dones.copy())
        self._obs = obs
        return obs, rewards, dones, infos


def test_four_envs_are_all_stored_and_sampled(fast_kwargs: dict) -> None:
    env = RecordingVecEnv(short_cartpole(n_envs=4))
    model = GITSTORM("MlpPolicy", env, seed=0, **fast_kwargs)
    buffer = model.replay_buffer
    sampled: list[int] = []
    get_samples = buffer._get_samples

    def recorded(starts, env_indices, sequence_length):
        sampled.extend(env_indices.tolist())
        return get_samples(starts, env_indices, sequence_length)

    buffer._get_samples = recorded  # type: ignore[method-assign]
    model.learn(4 * 24)
    assert model.num_timesteps == 96 and buffer.pos == 24 and buffer.n_envs == 4
    np.testing.assert_array_equal(buffer.observations[:24], np.stack(env.observations))
    np.testing.assert_array_equal(buffer.actions[:24], np.stack(env.actions))
    np.testing.assert_array_equal(buffer.rewards[:24], np.stack(env.rewards))
    first = np.vstack([np.ones((1, 4), bool), np.stack(env.dones)[:-1]])
    np.testing.assert_array_equal(buffer.episode_starts[:24], first)
    assert len({buffer.observations[0, i].tobytes() for i in range(4)}) == 4  # four different environments
    assert model._n_updates > 0 and set(sampled) == {0, 1, 2, 3}


# ------------------------------------------------------------------- parameters, modes and seeds
def test_get_and_set_parameters(tmp_path, fast_kwargs: dict) -> None:
    source = GITSTORM("CnnPolicy", DotEnv(), seed=0, **fast_kwargs)
    source.learn(48)
    params = source.get_parameters()
    assert set(params) == {"policy", "policy.world_model_optimizer", "policy.actor_optimizer", "policy.critic_optimizer"}
    target = GITSTORM("CnnPolicy", DotEnv(), seed=1, **fast_kwargs)
    target.set_parameters(params)
    for name in params:
        assert str(target.get_parameters()[name]) == str(params[name]), name
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    state_a = state_b = None
    for frame in frames:
        a, state_a = source.predict(frame, state_a, deterministic=True)
        b, state_b = target.predict(frame, state_b, deterministic=True)
        assert a == b
    source.save(tmp_path / "source.zip")
    fresh = GITSTORM("CnnPolicy", DotEnv(), seed=2, **fast_kwargs)
    fresh.set_parameters(str(tmp_path / "source.zip"))
    assert fresh.predict(frames[0], deterministic=True)[0] == source.predict(frames[0], deterministic=True)[0]
    other_size = GITSTORM("CnnPolicy", DotEnv(), **{**fast_kwargs, "policy_kwargs": dict(size="tiny", hidden_dim=64)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        other_size.set_parameters(params)


def test_set_training_mode(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs)
    policy = model.policy
    policy.set_training_mode(True)
    assert all(module.training for module in policy.modules())
    policy.set_training_mode(False)
    assert not any(module.training for module in policy.modules())
    policy.set_training_mode(True)
    model.predict(np.zeros(4, np.float32))
    assert not any(module.training for module in policy.modules())  # predict acts in eval mode (no dropout)


def record_losses(model: GITSTORM) -> list[dict[str, float]]:
    """Make the model record the losses of every world-model and actor-critic update."""
    losses: list[dict[str, float]] = []
    for name in ("_train_world_model", "_train_actor_critic"):
        update = getattr(model, name)

        def recorded(*args, update=update):
            out = update(*args)
            losses.append(out[0] if isinstance(out, tuple) else out)  # the world model's logs, not its batch
            return out

        setattr(model, name, recorded)
    return losses


@pytest.mark.parametrize(
    "policy, make_env", [("MlpPolicy", lambda: gym.make("CartPole-v1")), ("CnnPolicy", lambda: DotEnv(True))]
)
def test_same_seed_same_losses(policy: str, make_env, fast_kwargs: dict) -> None:
    runs = []
    for seed in (3, 3, 4):
        model = GITSTORM(policy, make_env(), seed=seed, **fast_kwargs)
        losses = record_losses(model)
        model.learn(48)
        runs.append(losses)
    assert len(runs[0]) == 2 * 16  # 16 updates of the world model and of the actor-critic
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
