"""World-model loss and imagination on tiny models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_gitstorm.actor_critic import Actor
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.imagination import imagine
from sb3_gitstorm.world_model import WorldModel

CFG = ModelConfig.from_size("tiny")
IMAGE = spaces.Box(0, 255, (3, 64, 64), np.uint8)
VECTOR = spaces.Box(-5, 5, (4,), np.float32)


def batch(obs_space: spaces.Box, action_space: spaces.Space, b: int = 3, length: int = 6):
    gen = th.Generator().manual_seed(0)
    if obs_space.dtype == np.uint8:
        obs = th.randint(0, 256, (b, length, *obs_space.shape), generator=gen, dtype=th.uint8)
    else:
        obs = th.randn(b, length, *obs_space.shape, generator=gen)
    if isinstance(action_space, spaces.Discrete):
        actions = th.randint(int(action_space.n), (b, length), generator=gen)
    else:
        actions = th.rand(b, length, action_space.shape[0], generator=gen) * 2 - 1
    starts = th.zeros(b, length, dtype=th.bool)
    starts[:, 0] = True
    starts[0, 3] = True
    return obs, actions, th.rand(b, length, generator=gen), starts


@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
@pytest.mark.parametrize("images", [True, False])
@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)], ids=["discrete", "box"])
def test_loss_and_gradients(prior: str, images: bool, action_space: spaces.Space) -> None:
    th.manual_seed(0)
    space = IMAGE if images else VECTOR
    # No free nats: the KL of an untrained (near-uniform) prior is below them, which would stop its gradient.
    wm = WorldModel(space, action_space, dataclasses.replace(CFG, kl_free_bits=0.0), prior, images)
    obs, actions, rewards, starts = batch(space, action_space)
    loss = wm.loss(obs, actions, rewards, rewards > 0.9, starts)
    assert loss.total.ndim == 0 and th.isfinite(loss.total)
    assert float(loss.kl_dynamics) > 0 and float(loss.kl_representation) > 0
    assert float(loss.imagination_kl) > 0
    loss.total.backward()
    for name, part in (("encoder", wm.encoder), ("decoder", wm.decoder), ("transformer", wm.transformer), ("prior", wm.prior)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), name
    if prior == "maskgit":
        assert 0.0 < float(loss.prior_mask_ratio) <= 1.0
    else:
        assert float(loss.prior_mask_ratio) == 1.0


def test_world_model_fits_a_small_batch() -> None:
    th.manual_seed(0)
    wm = WorldModel(VECTOR, spaces.Discrete(3), CFG, "maskgit", False)
    opt = th.optim.Adam(wm.parameters(), lr=3e-3)
    obs, actions, rewards, starts = batch(VECTOR, spaces.Discrete(3))
    losses = []
    for _ in range(150):
        loss = wm.loss(obs, actions, rewards, rewards > 0.9, starts)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append((float(loss.reconstruction), float(loss.reward)))
    assert losses[-1][0] < 0.3 * losses[0][0] and losses[-1][1] < 0.3 * losses[0][1]


def test_rejects_wrong_observation_shape() -> None:
    wm = WorldModel(VECTOR, spaces.Discrete(3), CFG, "mlp", False)
    with pytest.raises(ValueError, match="does not end with"):
        wm.encode(th.zeros(2, 5))


@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
def test_imagination_shapes_and_cache_equivalence(prior: str) -> None:
    th.manual_seed(0)
    action_space = spaces.Box(-1, 1, (2,), np.float32)
    wm = WorldModel(IMAGE, action_space, CFG, prior, True).eval()
    actor = Actor(CFG.feature_dim, action_space, 16, 1, 0.01)
    obs, actions, _, starts = batch(IMAGE, action_space, b=5, length=4)
    starts[1, -1] = True  # a context whose last step starts an episode: h_{T-1} must be zero
    runs = []
    for use_cache in (True, False):
        th.manual_seed(1)
        runs.append(imagine(wm, actor, obs, actions, starts, horizon=6, use_kv_cache=use_cache))
    traj = runs[0]
    assert traj.features.shape == (5, 7, CFG.feature_dim)
    assert traj.actions.shape == (5, 6, 2) and traj.rewards.shape == (5, 6) and traj.continues.shape == (5, 6)
    assert traj.latents.shape == (5, 7, CFG.latent_dim)
    assert bool(((traj.continues >= 0) & (traj.continues <= 1)).all())
    assert bool((traj.features[1, 0, CFG.latent_dim :] == 0).all())
    assert bool((traj.features[2, 0, CFG.latent_dim :] != 0).any())
    for a, b in zip(runs[0], runs[1], strict=True):
        th.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_open_loop_imagination_takes_the_given_actions() -> None:
    th.manual_seed(0)
    wm = WorldModel(VECTOR, spaces.Discrete(3), CFG, "maskgit", False).eval()
    obs, actions, _, starts = batch(VECTOR, spaces.Discrete(3), b=4, length=5)
    future = th.randint(3, (4, 6))
    traj = imagine(wm, None, obs, actions, starts, horizon=6, future_actions=future)
    assert th.equal(traj.actions, future)
    th.manual_seed(1)
    a = imagine(wm, None, obs, actions, starts, horizon=6, future_actions=future)
    th.manual_seed(1)
    b = imagine(wm, None, obs, actions, starts, horizon=6, future_actions=(future + 1) % 3)
    assert not th.allclose(a.continues, b.continues)  # the actions drive the predictions
