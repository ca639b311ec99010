"""Resuming training: save + save_replay_buffer, load + load_replay_buffer + learn(reset_num_timesteps=False)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.buffers import SequenceReplayBuffer
from sb3_gitstorm.priors import MaskGITPrior, MLPPrior
from tests.conftest import DotEnv, FixedLengthEnv


def assert_same_state(a: dict, b: dict) -> None:
    """Two (possibly nested) state dicts hold equal values."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], th.Tensor):
            assert th.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def adam_steps(optimizer: th.optim.Optimizer) -> float:
    return float(next(iter(optimizer.state.values()))["step"])


def test_resume_keeps_replay_optimisers_and_return_scale(tmp_path, fast_kwargs: dict) -> None:
    model = GITSTORM("CnnPolicy", DotEnv(size=(48, 80)), seed=1, **fast_kwargs)  # images resized in the buffer
    model.learn(64)
    assert not (model.replay_buffer.terminated[63, 0] or model.replay_buffer.truncated[63, 0])  # ends mid-episode
    model.save(tmp_path / "agent")
    model.save_replay_buffer(tmp_path / "buffer")

    loaded = GITSTORM.load(tmp_path / "agent.zip", env=DotEnv(size=(48, 80)))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert loaded.num_timesteps == 64 and loaded._n_updates == model._n_updates > 0
    old, new = model.replay_buffer, loaded.replay_buffer
    assert (new.pos, new.full, new.n_envs) == (old.pos, old.full, old.n_envs) == (64, False, 1)
    for name in SequenceReplayBuffer.ARRAYS:
        if name != "truncated":
            np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    # The episode cut by the end of the run is marked truncated: learn() resets the environment.
    assert new.truncated[63, 0] and np.array_equal(new.truncated[:63], old.truncated[:63])
    names = ("world_model_optimizer", "actor_optimizer", "critic_optimizer")
    for name in names:
        assert_same_state(getattr(loaded.policy, name).state_dict(), getattr(model.policy, name).state_dict())
    scale = model.policy.actor_critic.normalizer.scale
    assert float(scale) > 0 and th.equal(loaded.policy.actor_critic.normalizer.scale, scale)
    assert_same_state(loaded.policy.state_dict(), model.policy.state_dict())

    steps = [adam_steps(getattr(loaded.policy, name)) for name in names]
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.num_timesteps == 80 and loaded._n_updates == model._n_updates + 16
    assert [adam_steps(getattr(loaded.policy, name)) for name in names] == [s + 16 for s in steps]
    assert new.pos == 80
    for name in SequenceReplayBuffer.ARRAYS:
        np.testing.assert_array_equal(getattr(new, name)[:63], getattr(old, name)[:63], err_msg=name)
    assert new.episode_starts[64, 0]  # the environment was reset on resume


def test_set_env_on_a_loaded_model(tmp_path, fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), seed=0, **fast_kwargs)
    model.learn(64)
    model.save(tmp_path / "agent.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")

    loaded = GITSTORM.load(tmp_path / "agent.zip")  # no env: n_envs as saved
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    with pytest.raises(ValueError, match="VecNormalize"):
        loaded.set_env(VecNormalize(make_vec_env("Pendulum-v1", n_envs=2)))
    with pytest.raises(ValueError, match="spaces do not match"):
        loaded.set_env(make_vec_env("MountainCarContinuous-v0", n_envs=2))
    loaded.set_env(make_vec_env("Pendulum-v1", n_envs=2, seed=1))
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.num_timesteps == 80 and loaded.replay_buffer.pos == 40
    np.testing.assert_array_equal(loaded.replay_buffer.observations[:32], model.replay_buffer.observations[:32])
    assert loaded.replay_buffer.episode_starts[32].all()


def test_resume_from_string_env_id(tmp_path, fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **fast_kwargs)
    model.learn(40)
    model.save(tmp_path / "agent.zip")
    loaded = GITSTORM.load(tmp_path / "agent.zip", env=gym.make("CartPole-v1"))
    loaded.learn(8, reset_num_timesteps=False)  # without the replay buffer: trains once it holds a window
    assert loaded.num_timesteps == 48


@pytest.mark.parametrize("prior, prior_class", [("maskgit", MaskGITPrior), ("mlp", MLPPrior)])
def test_the_chosen_prior_is_the_one_trained_and_loaded(tmp_path, prior: str, prior_class: type, fast_kwargs: dict) -> None:
    fast_kwargs["policy_kwargs"]["kl_free_bits"] = 0.0  # else the untrained prior's KL is within the free nats
    model = GITSTORM("MlpPolicy", "CartPole-v1", prior=prior, seed=0, **fast_kwargs)
    assert type(model.policy.world_model.prior) is prior_class
    before = [p.clone() for p in model.policy.world_model.prior.parameters()]
    model.learn(40)
    assert all(not th.equal(a, b) for a, b in zip(before, model.policy.world_model.prior.parameters(), strict=True))
    model.save(tmp_path / "agent.zip")
    loaded = GITSTORM.load(tmp_path / "agent.zip")
    assert loaded.prior == prior and type(loaded.policy.world_model.prior) is prior_class


class CountingEnv(gym.Env):
    """No randomness at all: episodes of ``length`` steps, the observation a function of the actions so far."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 8) -> None:
        self.length = length

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.length, self.x], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t, self.x = 0, 0.0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.x += 0.25 if int(action) else -0.25
        return self._obs(), float(self.x > 0), self.t == self.length, False, {}


class CountingImageEnv(CountingEnv):
    """:class:`CountingEnv` as an 8x8 image: the step lit in the first row, the position in the second."""

    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)

    def _obs(self) -> np.ndarray:
        image = np.zeros((8, 8, 3), np.uint8)
        image[0, min(self.t, 7)] = 255
        image[1, int(np.clip(4 + 4 * self.x, 0, 7))] = 255
        return image


@pytest.fixture
def recorded_losses(monkeypatch) -> list[dict[str, float]]:
    """Every world-model and actor-critic update's losses, in order, whichever model makes them."""
    losses: list[dict[str, float]] = []
    for name in ("_train_world_model", "_train_actor_critic"):
        method = getattr(GITSTORM, name)

        def recorded(self, *args, method=method):
            out = method(self, *args)
            losses.append(out[0] if isinstance(out, tuple) else out)  # the world model's logs, not its batch
            return out

        monkeypatch.setattr(GITSTORM, name, recorded)
    return losses


@pytest.mark.parametrize(
    "checkpoint_at, policy, make_env, settings",
    [
        (25, "MlpPolicy", CountingEnv, {}),  # during the random warm-up (32 steps)
        (49, "MlpPolicy", CountingEnv, {}),  # while training
        (49, "CnnPolicy", CountingImageEnv, dict(imagine_starts="batch")),  # BatchNorm statistics, batch starts
    ],
    ids=["warm-up", "training", "cnn-batch-starts"],
)
def test_checkpoint_resume_continues_the_uninterrupted_run(
    tmp_path, checkpoint_at: int, policy: str, make_env: type[gym.Env], settings: dict, recorded_losses, fast_kwargs: dict
):
    """A run resumed from a ``CheckpointCallback`` checkpoint makes exactly the updates the uninterrupted run makes.

    ``learn`` after ``load`` resets the environment, so the resumed run can only see the transitions
    of the uninterrupted one where that reset changes nothing: this environment is deterministic and
    the checkpoint is taken at a step that starts an episode (8-step episodes). Everything else (the
    replay, the weights, the optimisers, the return normaliser, the slow critic, the random streams of
    replay sampling, of the networks and of the warm-up actions) comes from the checkpoint, and the
    next 16 steps' losses, replays and weights must be equal to the last bit.
    """
    total = checkpoint_at + 16
    model = GITSTORM(policy, make_env(), seed=0, **settings, **fast_kwargs)
    model.learn(total, callback=CheckpointCallback(checkpoint_at, str(tmp_path), save_replay_buffer=True))
    uninterrupted = list(recorded_losses)
    recorded_losses.clear()

    # SB3 saves from callbacks before the step's transition is stored: the checkpoint is the state before that step.
    resumed = GITSTORM.load(tmp_path / f"rl_model_{checkpoint_at}_steps.zip", env=make_env())
    resumed.load_replay_buffer(tmp_path / f"rl_model_replay_buffer_{checkpoint_at}_steps.pkl")
    assert resumed.num_timesteps == resumed.replay_buffer.pos == checkpoint_at - 1
    resumed.learn(total - resumed.num_timesteps, reset_num_timesteps=False)

    assert resumed.num_timesteps == total and resumed._n_updates == model._n_updates
    assert len(recorded_losses) == 2 * (total - max(checkpoint_at, fast_kwargs["learning_starts"] + 1) + 1) > 0
    assert recorded_losses == uninterrupted[-len(recorded_losses) :]
    for name in SequenceReplayBuffer.ARRAYS:
        np.testing.assert_array_equal(getattr(resumed.replay_buffer, name), getattr(model.replay_buffer, name), err_msg=name)
    assert_same_state(resumed.policy.state_dict(), model.policy.state_dict())


def test_checkpoint_mid_episode_marks_the_seam(tmp_path, fast_kwargs: dict) -> None:
    """A checkpoint in the middle of an episode: the resumed replay ends that episode where the checkpoint cut it
    (truncated) and starts a new one after it, so no training window joins the two."""
    model = GITSTORM("MlpPolicy", DotEnv(size=(8, 8)), seed=0, **fast_kwargs)
    model.learn(44, callback=CheckpointCallback(44, str(tmp_path), save_replay_buffer=True))
    cut = model.replay_buffer
    assert not cut.episode_starts[43, 0] and not (cut.terminated[42, 0] or cut.truncated[42, 0])  # mid-episode

    resumed = GITSTORM.load(tmp_path / "rl_model_44_steps.zip", env=DotEnv(size=(8, 8)))
    resumed.load_replay_buffer(tmp_path / "rl_model_replay_buffer_44_steps.pkl")
    resumed.learn(4, reset_num_timesteps=False)
    buffer = resumed.replay_buffer
    assert buffer.truncated[42, 0] and not buffer.terminated[42, 0] and buffer.episode_starts[43, 0]
    np.testing.assert_array_equal(buffer.observations[:43], cut.observations[:43])


def test_a_resumed_run_sees_new_episodes(tmp_path, fast_kwargs: dict) -> None:
    """The environment of a resumed run is not seeded with the run's seed again (which would replay the first
    segment's episodes), but with one derived from the seed and the resume step: the same for every resume
    from that checkpoint."""
    model = GITSTORM("MlpPolicy", FixedLengthEnv(), seed=0, **fast_kwargs)  # a random number in every observation
    model.learn(40)
    model.save(tmp_path / "agent.zip")
    first = model.replay_buffer.observations[model.replay_buffer.episode_starts[:, 0]]  # every episode's first frame

    def resume() -> np.ndarray:
        resumed = GITSTORM.load(tmp_path / "agent.zip", env=FixedLengthEnv())
        resumed.learn(24, reset_num_timesteps=False)
        buffer = resumed.replay_buffer
        assert buffer.pos == 24 and buffer.episode_starts[0, 0]  # no replay loaded: the resumed steps only
        return buffer.observations[: buffer.pos][buffer.episode_starts[: buffer.pos, 0]]

    resumed_first = resume()
    assert len(first) == 8 and len(resumed_first) == 5
    assert not any(np.array_equal(frame, seen) for frame in resumed_first for seen in first)
    np.testing.assert_array_equal(resume(), resumed_first)
