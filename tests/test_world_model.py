"""World-model loss and imagination on tiny models."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_gitstorm import imagination
from sb3_gitstorm.actor_critic import Actor
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.distributions import categorical_kl
from sb3_gitstorm.imagination import imagine, imagine_from_batch, sample_starts
from sb3_gitstorm.policies import MlpPolicy
from sb3_gitstorm.priors import DecodeSchedule
from sb3_gitstorm.transformer import segment_positions
from sb3_gitstorm.world_model import WorldModel, motion_weights

ROOT = pathlib.Path(__file__).resolve().parents[1]

CFG = ModelConfig.from_size("tiny")
IMAGE = spaces.Box(0, 255, (3, CFG.image_size, CFG.image_size), np.uint8)
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


@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
def test_imagination_kl_uses_the_eval_mode_sequence_model(prior: str) -> None:
    """``imagination_kl`` scores the prior at ``h_t`` as imagination computes it (no dropout), not at the
    training pass's ``h_t``: the exact one-pass KL from the posterior of each next step."""
    th.manual_seed(0)
    wm = WorldModel(VECTOR, spaces.Discrete(3), dataclasses.replace(CFG, dropout=0.5), prior, False).train()
    obs, actions, rewards, starts = batch(VECTOR, spaces.Discrete(3))
    loss = wm.loss(obs, actions, rewards, rewards > 0.9, starts)
    assert wm.training and wm.transformer.training  # the eval-mode pass leaves the training mode on
    segments, positions = segment_positions(starts)
    inputs = wm.sequence_input(wm.tokens_to_latent(loss.tokens), actions)
    posterior = wm.posterior(obs)[:, 1:]
    valid = ~starts[:, 1:]

    def kl_at(hidden: th.Tensor) -> float:
        prior_log_probs = wm.prior.log_probs(hidden[:, :-1].flatten(0, 1)).view(posterior.shape)
        return float((categorical_kl(posterior, prior_log_probs).sum(-1) * valid).sum() / valid.sum())

    with th.no_grad():
        train_mode = kl_at(wm.transformer(inputs, segments, positions))
        wm.eval()
        eval_mode = kl_at(wm.transformer(inputs, segments, positions))
    assert float(loss.imagination_kl) == pytest.approx(eval_mode, rel=1e-5)
    assert abs(train_mode - eval_mode) > 1e-3  # dropout changes h: the test can tell the two apart
    assert loss.logs()["imagination_kl"] == pytest.approx(eval_mode, rel=1e-5)


@pytest.mark.parametrize("decode, kind", [(DecodeSchedule(2, 1, 0), "upper_bound"), (DecodeSchedule(1, 2, 1), "not_available")])
def test_imagination_kl_of_chunked_decoding(decode: DecodeSchedule, kind: str) -> None:
    """A draft alone logs an upper bound of the KL (the prior's ``kl_kind``); revise rounds have no tractable
    likelihood of their samples, so nothing is logged under the KL's name (it used to be a pseudo-likelihood)."""
    th.manual_seed(0)
    wm = WorldModel(VECTOR, spaces.Discrete(3), CFG, "maskgit", False, decode)
    obs, actions, rewards, starts = batch(VECTOR, spaces.Discrete(3))
    loss = wm.loss(obs, actions, rewards, rewards > 0.9, starts)
    if kind == "not_available":
        assert loss.imagination_kl is None and "imagination_kl" not in loss.logs()
    else:
        assert float(loss.imagination_kl) > 0 and "imagination_kl" in loss.logs()
    assert wm.prior.kl_kind == kind


def test_imagination_kl_orders_zero_skips_the_diagnostic() -> None:
    """``imagination_kl_orders=0`` skips the diagnostic's extra passes; neither the loss nor the random draws of
    training change, also where the diagnostic draws random numbers (a MaskGIT draft's decoding orders)."""
    obs, actions, rewards, starts = batch(VECTOR, spaces.Discrete(3))
    runs = []
    for orders in (1, 0):
        th.manual_seed(0)
        config = dataclasses.replace(CFG, imagination_kl_orders=orders)
        wm = WorldModel(VECTOR, spaces.Discrete(3), config, "maskgit", False, DecodeSchedule(2, 1, 0))
        th.manual_seed(1)
        runs.append([wm.loss(obs, actions, rewards, rewards > 0.9, starts) for _ in range(2)])
    assert runs[1][0].imagination_kl is None and "imagination_kl" not in runs[1][0].logs()
    assert float(runs[0][0].imagination_kl) > 0
    for with_kl, without in zip(*runs, strict=True):  # the second loss samples after the first's diagnostic
        assert with_kl.total.item() == without.total.item()
    with pytest.raises(ValueError, match="imagination_kl_orders"):
        dataclasses.replace(CFG, imagination_kl_orders=-1)


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


def test_motion_weights_favour_the_pixels_that_move() -> None:
    frames = th.full((2, 5, 3, 4, 4), 0.5)
    frames[0, :, 1, 2, 3] = th.linspace(0, 1, 5)  # one channel of one pixel moves in the first window
    weights = motion_weights(frames, th.zeros(2, 5, dtype=th.bool), coef=10.0)
    assert weights.shape == (2, 5, 1, 4, 4)
    # sd / mean(sd) is 16 at the moving pixel, 0 elsewhere: weights 161 and 1, over their mean 1 + 10.
    expected = th.full((4, 4), 1 / 11)
    expected[2, 3] = 161 / 11
    th.testing.assert_close(weights[0, :, 0], expected.expand(5, 4, 4))
    th.testing.assert_close(weights[1], th.ones(5, 1, 4, 4))  # nothing moves: every pixel counts the same


def test_motion_weights_take_each_episode_segment_on_its_own() -> None:
    """A reset between two still episodes is no motion; a one-step segment (or window) gets weights of 1."""
    gen = th.Generator().manual_seed(0)
    first, second = th.rand(3, 4, 4, generator=gen), th.rand(3, 4, 4, generator=gen)
    frames = th.stack([first] * 3 + [second] * 3)[None]  # (1, 6, 3, 4, 4): still, reset, still
    starts = th.tensor([[True, False, False, True, False, False]])
    th.testing.assert_close(motion_weights(frames, starts, coef=10.0), th.ones(1, 6, 1, 4, 4))
    # The moving pixel of the second segment is weighted there only; the last step is a segment of its own.
    frames[0, 3:5, 0, 1, 2] = th.tensor([0.0, 1.0])
    starts[0, 5] = True
    weights = motion_weights(frames, starts, coef=10.0)
    th.testing.assert_close(weights[0, :3], th.ones(3, 1, 4, 4))
    th.testing.assert_close(weights[0, 5], th.ones(1, 4, 4))
    assert float(weights[0, 3, 0, 1, 2]) == pytest.approx(161 / 11) and float(weights[0, 4, 0, 0, 0]) == pytest.approx(1 / 11)
    single = motion_weights(frames[:, :1], th.zeros(1, 1, dtype=th.bool), coef=10.0)  # batch_length=1
    th.testing.assert_close(single, th.ones(1, 1, 1, 4, 4))


def test_motion_weighted_reconstruction() -> None:
    obs, actions, rewards, starts = batch(IMAGE, spaces.Discrete(3))
    still = obs[:, :1].expand_as(obs)
    losses = {}
    for coef in (0.0, 10.0):
        th.manual_seed(0)
        wm = WorldModel(IMAGE, spaces.Discrete(3), dataclasses.replace(CFG, motion_weight=coef), "mlp", True)
        for name, frames in (("still", still), ("moving", obs)):
            th.manual_seed(1)  # the same latent samples
            loss = wm.loss(frames, actions, rewards, rewards > 0.9, starts)
            losses[name, coef] = float(loss.reconstruction)
            assert float(loss.reconstruction_error) == pytest.approx(losses[name, 0.0])  # the unweighted error
            assert loss.logs()["reconstruction_error"] == float(loss.reconstruction_error)
    # Still frames have no motion to weight; on moving frames the weights change the loss.
    assert losses["still", 10.0] == pytest.approx(losses["still", 0.0], rel=1e-5)
    assert losses["moving", 10.0] != pytest.approx(losses["moving", 0.0], rel=1e-3)
    th.manual_seed(0)
    wm = WorldModel(IMAGE, spaces.Discrete(3), dataclasses.replace(CFG, motion_weight=10.0), "mlp", True)
    one_step = wm.loss(obs[:, :1], actions[:, :1], rewards[:, :1], rewards[:, :1] > 0.9, starts[:, :1])  # batch_length=1
    assert bool(th.isfinite(one_step.total)) and one_step.reconstruction == one_step.reconstruction_error
    with pytest.raises(ValueError, match="motion_weight"):
        WorldModel(VECTOR, spaces.Discrete(3), dataclasses.replace(CFG, motion_weight=1.0), "mlp", False)
    with pytest.raises(ValueError, match="motion_weight"):
        dataclasses.replace(CFG, motion_weight=-1.0)


@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
def test_imagination_shapes_and_cache_equivalence(prior: str) -> None:
    th.manual_seed(0)
    action_space = spaces.Box(-1, 1, (2,), np.float32)
    wm = WorldModel(IMAGE, action_space, CFG, prior, True).eval()
    actor = Actor(CFG.feature_dim, action_space, 16, 1, 0.01, CFG.actor_std_range)
    obs, actions, _, starts = batch(IMAGE, action_space, b=5, length=4)
    starts[1, -1] = True  # a context whose last step starts an episode: h_{T-1} must be zero
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    runs = []
    for rollout in (imagine, throughput.naive_imagine):  # with the cache, and recomputing the history
        th.manual_seed(1)
        runs.append(rollout(wm, actor, obs, actions, starts, horizon=6))
    traj = runs[0]
    assert traj.features.shape == (5, 7, CFG.feature_dim)
    assert traj.actions.shape == (5, 6, 2) and traj.rewards.shape == (5, 6) and traj.continues.shape == (5, 6)
    assert traj.latents.shape == (5, 7, CFG.latent_dim) and traj.hidden.shape == (5, 7, CFG.hidden_dim)
    assert bool(((traj.continues >= 0) & (traj.continues <= 1)).all())
    assert bool((traj.features[1, 0, CFG.latent_dim :] == 0).all())
    assert bool((traj.features[2, 0, CFG.latent_dim :] != 0).any())
    for name in ("tokens", "hidden", "actions", "rewards", "continues"):
        th.testing.assert_close(getattr(runs[0], name), getattr(runs[1], name), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)], ids=["discrete", "box"])
def test_batch_starts_see_the_context_of_replay_starts_and_of_acting(action_space: spaces.Space, monkeypatch) -> None:
    """A rollout from a step inside the world-model batch is the one from a replay window of the same
    imagine_context_length steps (same h, same imagined steps for the same random draws), and its h is
    the one the acting policy computes for those steps; not the one of the window's longer history."""
    th.manual_seed(0)
    context, horizon = 4, 3
    policy = MlpPolicy(VECTOR, action_space, lambda _: 1e-4, size="tiny", context_length=context).eval()
    wm, actor = policy.world_model, policy.actor_critic.actor
    obs, actions, _, episode_starts = batch(VECTOR, action_space, b=3, length=12)
    episode_starts[2, 7] = True
    tokens = wm.sample_tokens(obs)
    # Long histories (window 1), an episode start inside the context (0: 5, 2: 9) or at the start itself (2: 7).
    starts = th.tensor([[5, 9, 11], [3, 8, 11], [7, 9, 10]])
    monkeypatch.setattr(imagination, "sample_starts", lambda *args, **kwargs: starts)
    th.manual_seed(1)
    from_batch = imagine_from_batch(wm, actor, tokens, actions, episode_starts, horizon, 9, context)

    steps = starts[..., None] + th.arange(1 - context, 1)  # (3, 3, context): each start's real steps
    window = [th.stack([x[w, steps[w, s]] for w in range(3) for s in range(3)]) for x in (tokens, actions, episode_starts)]
    with th.no_grad():
        replay_start = wm.observe(window[0], window[1][:, :-1], window[2], horizon)
        th.manual_seed(1)
        from_replay = imagination._dream(wm, actor, replay_start, horizon, differentiable=False)
        # Acting: the last `lengths` context steps since the episode start, padded in front.
        since_start = th.stack([(window[2][i].nonzero().max() if window[2][i].any() else th.tensor(0)) for i in range(9)])
        lengths = context - 1 - since_start
        acting = policy.observe(window[0][:, :-1], window[1][:, :-1], lengths, window[0][:, -1])
    for name in ("tokens", "hidden", "actions", "rewards", "continues"):
        th.testing.assert_close(getattr(from_batch, name), getattr(from_replay, name), rtol=1e-4, atol=1e-5)
    th.testing.assert_close(from_batch.hidden[:, 0], acting.hidden, rtol=1e-4, atol=1e-5)
    assert bool((from_batch.hidden[6, 0] == 0).all()) and bool((from_batch.hidden[[4, 7], 0] != 0).any(-1).all())


def test_differentiable_dream_has_the_gradient_of_the_uncached_sequence_model() -> None:
    """Dynamics backpropagation: through the key/value cache, the gradient of the imagined h with
    respect to the actions is the one of running the sequence model over the whole sequence at once
    (the imagined latents with their straight-through gradient)."""
    th.manual_seed(0)
    space = spaces.Box(-1, 1, (2,), np.float32)
    wm = WorldModel(VECTOR, space, CFG, "maskgit", False).eval()
    obs, actions, _, episode_starts = batch(VECTOR, space, b=3, length=5)
    tokens, horizon = wm.sample_tokens(obs), 3
    with th.no_grad():
        start = wm.observe(tokens, actions[:, :-1], episode_starts, horizon)
    future = (th.rand(3, horizon, 2) * 2 - 1).requires_grad_()
    traj = wm.dream(start, horizon, future)
    weights = th.randn(3, horizon, CFG.hidden_dim)  # any function of the imagined h
    (traj.hidden[:, 1:] * weights).sum().backward(retain_graph=True)  # the latents' graph is used again below
    cached, future.grad = future.grad, None
    seq_latents = th.cat([wm.tokens_to_latent(tokens), traj.latents[:, 1:horizon]], 1)
    seq_actions = th.cat([actions[:, :-1], future], 1)
    segments, positions = segment_positions(th.cat([episode_starts, th.zeros(3, horizon - 1, dtype=th.bool)], 1))
    out = wm.transformer(wm.sequence_input(seq_latents, seq_actions), segments, positions)
    (out[:, -horizon:] * weights).sum().backward()
    th.testing.assert_close(cached, future.grad, rtol=1e-4, atol=1e-6)
    assert bool((cached.abs().sum(-1) > 0).all())


@pytest.mark.parametrize("from_batch", [False, True], ids=["replay", "batch"])
def test_differentiable_imagination_trains_only_the_actor(from_batch: bool) -> None:
    th.manual_seed(0)
    space = spaces.Box(-1, 1, (2,), np.float32)
    wm = WorldModel(VECTOR, space, CFG, "maskgit", False).eval()
    actor = Actor(CFG.feature_dim, space, 16, 1, 0.01, CFG.actor_std_range)
    obs, actions, _, starts = batch(VECTOR, space, b=3, length=8)
    if from_batch:
        traj = imagine_from_batch(wm, actor, wm.sample_tokens(obs), actions, starts, 3, 6, 2, differentiable=True)
    else:
        traj = imagine(wm, actor, obs, actions, starts, 3, differentiable=True)
    (traj.continues.sum() + traj.features.sum()).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in actor.parameters())
    assert all(p.grad is None and p.requires_grad for p in wm.parameters())  # frozen meanwhile, then trainable again
    with pytest.raises(ValueError, match="Box actions"):
        discrete = spaces.Discrete(3)
        wm = WorldModel(VECTOR, discrete, CFG, "mlp", False).eval()
        obs, actions, _, starts = batch(VECTOR, discrete, b=3, length=8)
        imagine(wm, Actor(CFG.feature_dim, discrete, 16, 1, 0.01, CFG.actor_std_range), obs, actions, starts, 3, True)


def test_batch_starts_are_every_step_after_a_full_context() -> None:
    th.manual_seed(0)
    starts = sample_starts(3, 10, 10, context_length=3, device=th.device("cpu"))
    assert starts.shape == (3, 10)
    for row in starts.tolist():  # steps 2..9, the last ones included: all eight once, then two repeats
        assert set(row) == set(range(2, 10)) and len(set(row[:8])) == 8
    wm = WorldModel(VECTOR, spaces.Discrete(3), CFG, "mlp", False).eval()
    actor = Actor(CFG.feature_dim, spaces.Discrete(3), 16, 1, 0.01, CFG.actor_std_range)
    obs, actions, _, episode_starts = batch(VECTOR, spaces.Discrete(3), b=3, length=10)
    traj = imagine_from_batch(
        wm, actor, wm.sample_tokens(obs), actions, episode_starts, horizon=4, num_starts=20, context_length=3
    )
    assert traj.tokens.shape == (21, 5, CFG.latent_tokens)  # 3 windows x ceil(20 / 3) starts
    with pytest.raises(ValueError, match="no start"):
        sample_starts(3, 10, 2, context_length=11, device=th.device("cpu"))


def test_open_loop_imagination_takes_the_given_actions() -> None:
    th.manual_seed(0)
    wm = WorldModel(VECTOR, spaces.Discrete(3), CFG, "maskgit", False).eval()
    obs, actions, _, starts = batch(VECTOR, spaces.Discrete(3), b=4, length=5)
    future = th.randint(3, (4, 6))

    def dream(future: th.Tensor):
        th.manual_seed(1)
        return wm.dream(wm.observe(wm.sample_tokens(obs), actions[:, :-1], starts, horizon=6), 6, future)

    traj = dream(future)
    assert th.equal(traj.actions, future)
    a, b = dream(future), dream((future + 1) % 3)
    assert not th.allclose(a.continues, b.continues)  # the actions drive the predictions


def test_images_must_have_the_configured_size() -> None:
    with pytest.raises(ValueError, match="image_size"):
        WorldModel(spaces.Box(0, 255, (3, 64, 64), np.uint8), spaces.Discrete(3), CFG, "maskgit", True)
    with pytest.raises(ValueError, match="times a power of two"):
        ModelConfig.from_size("tiny", image_size=48)
    assert ModelConfig(image_size=64, cnn_final_side=8).conv_channels == (32, 64, 128)
    assert ModelConfig.from_size("tiny", image_size=32).conv_channels == (4, 8, 16)  # down to a 4x4 map
    assert ModelConfig.from_size("tiny", image_size=64).conv_channels == (4, 8, 16, 16)
    assert ModelConfig(image_size=128).conv_channels == (32, 64, 128, 256, 256)
