"""Lambda-returns, return normalisation, actors and the actor-critic losses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_gitstorm.actor_critic import ActorCritic, ReturnNormalizer, check_actor_gradient, lambda_returns
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.world_model import ImaginedTrajectory


def test_lambda_returns_by_hand() -> None:
    rewards = th.tensor([[1.0, 2.0, 3.0]])
    continues = th.tensor([[1.0, 0.5, 1.0]])
    values = th.tensor([[10.0, 20.0, 30.0, 40.0]])
    gamma, lam = 0.9, 0.8
    r2 = 3.0 + gamma * 1.0 * 40.0  # bootstraps from V(s_3)
    r1 = 2.0 + gamma * 0.5 * ((1 - lam) * 30.0 + lam * r2)
    r0 = 1.0 + gamma * 1.0 * ((1 - lam) * 20.0 + lam * r1)
    th.testing.assert_close(lambda_returns(rewards, continues, values, gamma, lam), th.tensor([[r0, r1, r2]]))


def test_lambda_one_is_monte_carlo_and_zero_is_td() -> None:
    rewards, continues, values = th.rand(2, 5), th.ones(2, 5), th.rand(2, 6)
    mc = lambda_returns(rewards, continues, values, 1.0, 1.0)
    th.testing.assert_close(mc[:, 0], rewards.sum(1) + values[:, -1])
    td = lambda_returns(rewards, continues, values, 0.9, 0.0)
    th.testing.assert_close(td, rewards + 0.9 * values[:, 1:])


def test_return_normalizer() -> None:
    norm = ReturnNormalizer(0.5, (0.05, 0.95))
    assert float(norm.update(th.zeros(100))) == 1.0  # small spread: never divides by less than 1
    returns = th.linspace(0, 100, 1001)
    norm.update(returns)
    spread = float(th.quantile(returns, 0.95) - th.quantile(returns, 0.05))
    assert abs(float(norm.scale) - 0.5 * spread) < 1e-3  # 0.5 * 0 + (1 - 0.5) * spread


def config(**overrides) -> ModelConfig:
    """Features of 12: 2 one-hot tokens of 4 classes, then an h of 4."""
    settings = dict(latent_tokens=2, latent_classes=4, hidden_dim=4, ac_hidden=32, ac_layers=2, reward_bins=63)
    return ModelConfig.from_size("tiny", **{**settings, **overrides})


def trajectory(action_space: spaces.Space, batch: int = 8, horizon: int = 5, features: int = 12) -> ImaginedTrajectory:
    gen = th.Generator().manual_seed(0)
    if isinstance(action_space, spaces.Discrete):
        actions = th.randint(int(action_space.n), (batch, horizon), generator=gen)
    else:
        actions = th.randn(batch, horizon, action_space.shape[0], generator=gen)
    tokens, classes = 2, 4  # features: 2 one-hot tokens of 4 classes, then h
    return ImaginedTrajectory(
        tokens=th.randint(classes, (batch, horizon + 1, tokens), generator=gen),
        hidden=th.randn(batch, horizon + 1, features - tokens * classes, generator=gen),
        num_classes=classes,
        actions=actions,
        rewards=th.rand(batch, horizon, generator=gen),
        continues=th.ones(batch, horizon),
    )


def test_actor_critic_update_moves_towards_returns() -> None:
    for space in (spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32)):
        th.manual_seed(0)
        ac = ActorCritic(config(), space)
        traj = trajectory(space)
        opt = th.optim.Adam(ac.critic.parameters(), lr=1e-2)
        first = ac.loss(traj, 0.9, 0.95, 3e-4)
        for _ in range(50):
            loss = ac.loss(traj, 0.9, 0.95, 3e-4)
            opt.zero_grad()
            loss.critic.backward()
            opt.step()
        assert loss.critic.item() < first.critic.item()
        assert float(loss.mean_value) > float(first.mean_value)  # rewards are positive
        loss.actor.backward()
        assert all(p.grad is not None for p in ac.actor.parameters())


def test_dynamics_loss_reaches_the_actor_through_the_trajectory_only() -> None:
    """With dynamics backpropagation the actor's gradient comes through the imagined rewards and states
    (here a function of the actor's own output), not the critics' weights, which take no gradient from it."""
    th.manual_seed(0)
    space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    ac = ActorCritic(config(), space)
    traj = trajectory(space)
    mean_action = ac.actor.act(traj.features[:, :-1], deterministic=True)  # (B, H, 2)
    traj = dataclasses.replace(traj, rewards=traj.rewards + mean_action.sum(-1))
    loss = ac.loss(traj, 0.9, 0.95, 0.0, dynamics=True)
    loss.actor.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in ac.actor.parameters())
    assert all(p.grad is None for p in [*ac.critic.parameters(), *ac.target_critic.parameters()])
    # Rewards grow with the action: one gradient step raises the mean action.
    th.optim.SGD(ac.actor.parameters(), lr=0.1).step()
    with th.no_grad():
        assert float(ac.actor.act(traj.features[:, :-1], deterministic=True).mean()) > float(mean_action.detach().mean())


def test_actor_gradient_choice() -> None:
    box, discrete = spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.Discrete(3)
    for space in (box, discrete):
        check_actor_gradient("reinforce", space)
    check_actor_gradient("dynamics", box)
    with pytest.raises(ValueError, match="needs Box actions"):
        check_actor_gradient("dynamics", discrete)
    with pytest.raises(ValueError, match="actor_gradient must be one of"):
        check_actor_gradient("backprop", box)


def test_continuous_actor_is_bounded_and_discrete_actor_valid() -> None:
    th.manual_seed(0)
    box = ActorCritic(config(ac_layers=1), spaces.Box(-1.0, 1.0, (3,), np.float32)).actor
    features = th.randn(1000, 12) * 100
    with th.no_grad():
        dist = box.distribution(features)
    # Before the clip: a mean in [-1, 1] (tanh) and a standard deviation in std_range = (0.1, 1.0).
    assert float(dist.mean.abs().max()) <= 1.0 and 0.1 <= float(dist.stddev.min()) <= float(dist.stddev.max()) <= 1.0
    raw = box.act(features)
    action = box.squash(raw)
    outside = raw.abs() > 1.0
    assert action.shape == (1000, 3) and bool(outside.any())  # some samples leave [-1, 1] ...
    assert th.equal(action[outside], raw[outside].sign()) and th.equal(action[~outside], raw[~outside])  # ... and are clipped
    assert box.distribution(th.randn(4, 12)).entropy().shape == (4,)
    # The deterministic action is the bounded mean, inside [-1, 1] without clipping.
    mean = box.act(th.randn(1000, 12) * 100, deterministic=True)
    assert th.equal(box.squash(mean), mean)
    disc = ActorCritic(config(ac_layers=1), spaces.Discrete(4)).actor
    a = disc.act(th.randn(1000, 12))
    assert a.shape == (1000,) and int(a.min()) >= 0 and int(a.max()) <= 3
    feats = th.randn(7, 12)
    assert th.equal(disc.act(feats, deterministic=True), disc.distribution(feats).probs.argmax(-1))


@th.no_grad()
def test_untrained_actor_starts_near_uniform_and_near_zero() -> None:
    """The output layer starts at 1% of its usual scale (DreamerV3): the untrained policy barely
    depends on its input, a near-uniform categorical and a Gaussian centred near 0."""
    features = th.randn(256, 12) * 3
    box = ActorCritic(config(), spaces.Box(-1.0, 1.0, (3,), np.float32)).actor
    assert float(box.act(features, deterministic=True).abs().max()) < 0.1
    full = ActorCritic(config(actor_output_scale=1.0), spaces.Box(-1.0, 1.0, (3,), np.float32)).actor
    assert float(full.act(features, deterministic=True).abs().max()) > 0.1
    probs = ActorCritic(config(), spaces.Discrete(4)).actor.distribution(features).probs
    assert float((probs - 0.25).abs().max()) < 0.02


def test_target_critic_follows_slowly() -> None:
    ac = ActorCritic(config(ac_hidden=16, ac_layers=1, reward_bins=31), spaces.Discrete(2))
    with th.no_grad():
        for p in ac.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ac.target_critic.parameters()]
    ac.update_target(0.02)
    for b, t, c in zip(before, ac.target_critic.parameters(), ac.critic.parameters(), strict=True):
        th.testing.assert_close(t, 0.98 * b + 0.02 * c)
