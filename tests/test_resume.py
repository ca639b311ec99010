"""Resuming training: save + save_replay_buffer, load + load_replay_buffer + learn(reset_num_timesteps=False)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.priors import MaskGITPrior, MLPPrior
from tests.conftest import DotEnv

BUFFER_ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "episode_starts")


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
    model = GITSTORM("CnnPolicy", DotEnv(size=(48, 80)), seed=0, **fast_kwargs)  # images resized in the buffer
    model.learn(64)
    model.save(tmp_path / "agent")
    model.save_replay_buffer(tmp_path / "buffer")

    loaded = GITSTORM.load(tmp_path / "agent.zip", env=DotEnv(size=(48, 80)))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert loaded.num_timesteps == 64 and loaded._n_updates == model._n_updates > 0
    old, new = model.replay_buffer, loaded.replay_buffer
    assert (new.pos, new.full, new.n_envs) == (old.pos, old.full, old.n_envs) == (64, False, 1)
    for name in BUFFER_ARRAYS:
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
    for name in BUFFER_ARRAYS:
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
