"""GITSTORM through SB3's API: construction, learn, predict with context, save / load."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_gitstorm import GITSTORM, CnnPolicy, MlpPolicy
from sb3_gitstorm.buffers import SequenceReplayBuffer
from tests.conftest import DotEnv

ENVS = {
    ("CnnPolicy", "discrete"): lambda: DotEnv(continuous=False),
    ("CnnPolicy", "box"): lambda: DotEnv(continuous=True),
    ("MlpPolicy", "discrete"): lambda: gym.make("CartPole-v1"),
    ("MlpPolicy", "box"): lambda: gym.make("Pendulum-v1"),
}


@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
@pytest.mark.parametrize("policy, actions", list(ENVS))
def test_learn_every_combination(policy: str, actions: str, prior: str, fast_kwargs: dict) -> None:
    model = GITSTORM(policy, ENVS[(policy, actions)](), prior=prior, seed=0, **fast_kwargs)
    assert isinstance(model, BaseAlgorithm)
    before = [p.clone() for p in model.policy.parameters()]
    model.learn(48)
    assert model.num_timesteps == 48
    assert model._n_updates > 0
    changed = [not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2
    obs = model.env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(action[0])


def test_defaults_are_the_paper_settings() -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1")
    expected = dict(
        learning_rate=1e-4,
        actor_learning_rate=3e-5,
        critic_learning_rate=3e-5,
        buffer_size=100_000,
        learning_starts=1024,
        batch_size=16,
        batch_length=64,
        imagine_batch_size=1024,
        imagine_context_length=8,
        imagine_horizon=16,
        gradient_steps=1,
        gamma=0.985,
        gae_lambda=0.95,
        ent_coef=3e-4,
        prior="maskgit",
        draft_steps=1,
        revise_steps=1,
        revise_rounds=1,
    )
    for name, value in expected.items():
        assert getattr(model, name) == value, name
    assert model.train_freq.frequency == 1
    cfg = model.policy.config
    assert (cfg.latent_tokens, cfg.latent_classes, cfg.hidden_dim, cfg.transformer_layers) == (32, 32, 512, 2)
    assert (cfg.maskgit_dim, cfg.maskgit_layers, cfg.maskgit_heads, cfg.reward_bins) == (128, 4, 8, 255)
    assert model.policy.actor_optimizer.defaults["eps"] == 1e-5


def test_policy_kwargs_sizes_and_overrides() -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="small", transformer_layers=3))
    assert model.policy.config.hidden_dim == 256 and model.policy.config.transformer_layers == 3
    with pytest.raises(ValueError, match="Unknown model setting"):
        GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="tiny", hiden_dim=3))
    with pytest.raises(ValueError, match="Unknown size"):
        GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="huge"))


@pytest.mark.parametrize(
    "env, match",
    [
        (gym.make("FrozenLake-v1"), "Box observation"),
        (
            DummyVecEnv(
                [
                    lambda: gym.wrappers.TransformObservation(
                        gym.make("CartPole-v1"),
                        lambda o: {"x": o},
                        gym.spaces.Dict({"x": gym.make("CartPole-v1").observation_space}),
                    )
                ]
            ),
            "Box observation",
        ),
    ],
)
def test_unsupported_observation_spaces(env, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        GITSTORM("MlpPolicy", env)


class ActionSpaceEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)

    def __init__(self, action_space: gym.Space) -> None:
        self.action_space = action_space

    def reset(self, seed=None, options=None):
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


@pytest.mark.parametrize(
    "space, error",
    [
        (gym.spaces.MultiDiscrete([2, 3]), TypeError),
        (gym.spaces.MultiBinary(3), TypeError),
        (gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), ValueError),
        (gym.spaces.Box(-1, 1, (2, 2), np.float32), ValueError),
    ],
)
def test_unsupported_action_spaces(space: gym.Space, error: type) -> None:
    with pytest.raises(error, match="GITSTORM"):
        GITSTORM("MlpPolicy", ActionSpaceEnv(space))


def test_cnn_policy_needs_images_and_resizes_them(fast_kwargs: dict) -> None:
    with pytest.raises(ValueError, match="CnnPolicy needs"):
        GITSTORM("CnnPolicy", "CartPole-v1")
    model = GITSTORM("CnnPolicy", DotEnv(size=(48, 80)), seed=0, **fast_kwargs)
    assert model.observation_space.shape == (3, 48, 80)
    assert model.replay_buffer.observations.shape[2:] == (3, 32, 32)  # tiny: image_size 32
    model.learn(40)
    action, _ = model.predict(np.zeros((48, 80, 3), np.uint8))  # HxWxC, as the env returns it
    assert model.action_space.contains(action)


def test_rejects_vecnormalize_and_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="VecNormalize"):
        GITSTORM("MlpPolicy", VecNormalize(make_vec_env("CartPole-v1")))
    with pytest.raises(ValueError, match="prior"):
        GITSTORM("MlpPolicy", "CartPole-v1", prior="transformer")
    with pytest.raises(ValueError, match="max_length"):
        GITSTORM("MlpPolicy", "CartPole-v1", imagine_horizon=60, policy_kwargs=dict(size="tiny"))
    with pytest.raises(ValueError, match="draft_steps"):
        GITSTORM("MlpPolicy", "CartPole-v1", draft_steps=9, policy_kwargs=dict(size="tiny"))


def test_predict_carries_context_and_resets_on_episode_start(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **fast_kwargs)
    model.learn(64)
    obs = model.env.reset()
    _, state = model.predict(obs)
    assert state is not None and state[2].tolist() == [1, 1]
    for _ in range(5):
        _, state = model.predict(obs, state=state, episode_start=np.array([False, False]))
    assert state[2].tolist() == [3, 3]  # context_length - 1 = 3 steps kept
    _, state = model.predict(obs, state=state, episode_start=np.array([True, False]))
    assert state[2].tolist() == [1, 3]
    # h depends on the context: the same observation gives different features with and without it
    policy = model.policy
    tokens, actions, lengths = (th.as_tensor(x) for x in state)
    h_with = policy.observe(tokens, actions, lengths, tokens[:, -1]).hidden
    assert bool((h_with[0] != 0).any()) and bool((h_with[1] != 0).any())
    h_without = policy.observe(tokens, actions, th.zeros_like(lengths), tokens[:, -1]).hidden
    assert bool((h_without == 0).all())
    # a single (non-vectorised) observation
    action, single_state = model.predict(obs[0])
    assert np.shape(action) == () and single_state[2].tolist() == [1]
    with pytest.raises(ValueError, match="state does not match"):
        model.predict(obs, state=single_state)
    with pytest.raises(ValueError):
        model.predict(np.zeros((2, 5), np.float32))


def test_save_load_roundtrip_gives_identical_actions(tmp_path, fast_kwargs: dict) -> None:
    env = DotEnv(continuous=True)
    model = GITSTORM("CnnPolicy", env, seed=0, **fast_kwargs)
    model.learn(48)
    model.save(tmp_path / "agent.zip")
    loaded = GITSTORM.load(tmp_path / "agent.zip", env=DotEnv(continuous=True))
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    state_a = state_b = None
    for i, frame in enumerate(frames):
        start = np.array([i == 0])
        a, state_a = model.predict(frame[None], state=state_a, episode_start=start, deterministic=True)
        b, state_b = loaded.predict(frame[None], state=state_b, episode_start=start, deterministic=True)
        np.testing.assert_array_equal(a, b)
    for x, y in zip(state_a, state_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert float(loaded.policy.actor_critic.normalizer.scale) == float(model.policy.actor_critic.normalizer.scale)
    assert isinstance(loaded.policy, CnnPolicy) and isinstance(loaded.replay_buffer, SequenceReplayBuffer)
    predictor = GITSTORM.load(tmp_path / "agent.zip")  # no env: prediction only
    c, _ = predictor.predict(frames[0], deterministic=True)
    np.testing.assert_array_equal(c, model.predict(frames[0], deterministic=True)[0])


def test_load_rejects_models_of_other_algorithms(tmp_path) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1").save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not a GITSTORM policy"):
        GITSTORM.load(tmp_path / "ppo.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="zip"):
        GITSTORM.load(tmp_path / "junk.zip")


def test_policy_classes_are_exposed() -> None:
    assert GITSTORM.policy_aliases == {"MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy}


def test_warns_when_draft_and_revise_conditions_on_tokens_it_was_not_trained_on() -> None:
    tiny = dict(size="tiny")
    reference = dict(size="tiny", maskgit_schedule="reference")
    with pytest.warns(UserWarning, match="maskgit_schedule='reference'"):
        GITSTORM("MlpPolicy", "CartPole-v1", draft_steps=2, revise_rounds=0, policy_kwargs=reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GITSTORM("MlpPolicy", "CartPole-v1", draft_steps=2, revise_rounds=0, policy_kwargs=tiny)
        GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=reference)  # one pass from all-[MASK]: nothing visible


def test_warns_when_imagination_uses_untrained_positions() -> None:
    with pytest.warns(UserWarning, match="only train positions up to 15"):
        GITSTORM("MlpPolicy", "CartPole-v1", batch_length=16, policy_kwargs=dict(size="tiny"))


@pytest.mark.parametrize(
    "prior, decode",
    [("mlp", {}), ("maskgit", {}), ("maskgit", dict(draft_steps=2, revise_steps=2))],
    ids=["mlp", "maskgit-one-pass", "maskgit-chunked"],
)
def test_dynamics_gradient_reaches_the_actor_through_the_sampled_latents(prior: str, decode: dict, fast_kwargs: dict) -> None:
    """With actor_gradient='dynamics' the imagined z_{t+1} carries the straight-through gradient of the
    prior's probabilities back to h_t and the actions before it (DreamerV2), in every update of learn()."""
    env = gym.make("Pendulum-v1")
    model = GITSTORM("MlpPolicy", env, prior=prior, actor_gradient="dynamics", seed=0, **decode, **fast_kwargs)
    actor_critic = model.policy.actor_critic
    actor_weights = list(actor_critic.actor.parameters())
    loss, norms = actor_critic.loss, []

    def spy(trajectory, *args, **kwargs):
        assert trajectory.latents.requires_grad, "the imagined latents carry no gradient"
        weights = th.randn_like(trajectory.latents[:, 1:])  # any function of z_1 .. z_H (their sum has no gradient)
        grads = th.autograd.grad((trajectory.latents[:, 1:] * weights).sum(), actor_weights, retain_graph=True)
        norms.append(sum(g.norm() for g in grads).item())
        return loss(trajectory, *args, **kwargs)

    actor_critic.loss = spy
    model.learn(40)
    assert len(norms) == model._n_updates > 0
    assert min(norms) > 0
