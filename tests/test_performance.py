"""Speed options and fast paths: replay on the device, bf16 autocast, and the rewrites that must not change results."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.actor_critic import ActorCritic
from sb3_gitstorm.buffers import SequenceReplayBuffer
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.networks import OneHotLinear
from sb3_gitstorm.priors import MaskGITPrior
from sb3_gitstorm.transformer import CausalTransformer, segment_positions
from sb3_gitstorm.world_model import ImaginedTrajectory, WorldModel
from tests.conftest import DotEnv
from tests.test_buffers import IMAGE, fill

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_replay_on_device_samples_what_the_host_replay_samples() -> None:
    """``on_device=True`` stores torch tensors on the sampling device and returns the same windows."""
    vector = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    for action_space in (spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)):
        host = SequenceReplayBuffer(60, vector, action_space, "cpu", n_envs=2)
        device = SequenceReplayBuffer(60, vector, action_space, "cpu", n_envs=2, on_device=True)
        for buffer in (host, device):
            fill(buffer, 45, done_every=7)
        assert isinstance(device.observations, th.Tensor) and device.nbytes == host.nbytes
        np.random.seed(0)
        a = host.sample(64, 5)
        np.random.seed(0)
        b = device.sample(64, 5)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.device == y.device
            assert th.equal(x, y)
        if isinstance(action_space, spaces.Discrete):
            assert a.actions.dtype == th.long


def test_replay_stores_discrete_actions_compactly() -> None:
    buffer = SequenceReplayBuffer(1000, IMAGE, spaces.Discrete(18), "cpu")
    assert buffer.actions.dtype == np.uint8
    assert buffer.nbytes / buffer.buffer_size <= 1.001 * int(np.prod(IMAGE.shape))


@pytest.mark.parametrize("policy", ["MlpPolicy", "CnnPolicy"])
def test_mixed_precision_and_replay_on_device_train(policy: str, fast_kwargs: dict) -> None:
    """bf16 autocast (here on the CPU) runs every phase; the trajectory and the losses stay float32."""
    env = DotEnv() if policy == "CnnPolicy" else "CartPole-v1"
    model = GITSTORM(policy, env, mixed_precision=True, replay_buffer_kwargs=dict(on_device=True), seed=0, **fast_kwargs)
    assert isinstance(model.replay_buffer.observations, th.Tensor)
    model.learn(40)
    world_model_logs, batch, tokens = model._train_world_model(fast_kwargs["batch_size"])
    for starts in ("replay", "batch"):
        model.imagine_starts = starts
        trajectory = model._imagine(batch, tokens)
        for name in ("features", "rewards", "continues", "latents"):
            assert getattr(trajectory, name).dtype == th.float32, name
        logs = {**world_model_logs, **model._train_actor_critic(trajectory)}
        assert all(np.isfinite(v) for v in logs.values())


def test_bf16_imagination_stays_close_to_float32() -> None:
    """The autocast KV cache holds bf16 keys/values; rewards and continuation barely move."""
    th.manual_seed(0)
    config = ModelConfig.from_size("tiny")
    vector = spaces.Box(-1, 1, (5,), np.float32)
    world_model = WorldModel(vector, spaces.Discrete(2), config, "mlp", False).eval()
    obs, actions = th.randn(16, 4, 5), th.randint(2, (16, 4))
    starts = th.zeros(16, 4, dtype=th.bool)
    future = th.randint(2, (16, 6))
    outs = []
    for enabled in (False, True):
        th.manual_seed(1)
        with th.autocast("cpu", dtype=th.bfloat16, enabled=enabled):
            start = world_model.observe(world_model.sample_tokens(obs), actions[:, :-1], starts, horizon=6)
            outs.append(world_model.dream(start, 6, future))
    assert outs[1].rewards.dtype == th.float32
    th.testing.assert_close(outs[1].continues, outs[0].continues, atol=0.02, rtol=0.0)


def test_maskgit_embedding_is_the_concatenated_projection() -> None:
    """The table-and-gather input equals ``cond_proj(concat(E[token], chunk of h)) + position``."""
    th.manual_seed(0)
    prior = MaskGITPrior(64, 8, 16, 0.01, dim=32, layers=1, heads=2, ffn_dim=32)
    hidden, tokens = th.randn(10, 64), th.randint(17, (10, 8))
    cond = hidden.reshape(10, 8, 8)
    expected = prior.cond_proj(th.cat([prior.token_embed(tokens), cond], -1)) + prior.position
    th.testing.assert_close(prior.embed(hidden, tokens), expected)
    prior.embed(hidden, tokens).sum().backward()  # gradients reach the embedding and the projection
    assert prior.token_embed.weight.grad is not None and prior.cond_proj.weight.grad is not None


@pytest.mark.parametrize("images", [False, True])
def test_encode_without_gradients_matches_the_posterior(images: bool) -> None:
    """The no-grad encoder samples the same distribution straight from the logits, in CPU chunks."""
    th.manual_seed(0)
    config = ModelConfig.from_size("tiny", unimix=0.3)
    side = config.image_size
    space = spaces.Box(0, 255, (3, side, side), np.uint8) if images else spaces.Box(-1, 1, (5,), np.float32)
    world_model = WorldModel(space, spaces.Discrete(3), config, "mlp", images).eval()
    obs = th.randint(0, 256, (2, 70, *space.shape), dtype=th.uint8) if images else th.randn(2, 70, 5)
    with th.no_grad():
        mode = world_model.encode(obs, deterministic=True)
        assert th.equal(mode, world_model.posterior(obs).argmax(-1, keepdim=True).eq(th.arange(8)).float())
        probs = world_model.posterior(obs[:1, :1]).exp()[0, 0]
        draws = world_model.encode(obs[:1, :1].expand(4000, 1, *space.shape))[:, 0]
    assert mode.shape == (2, 70, 8, 8) and bool((mode.sum(-1) == 1).all())
    th.testing.assert_close(draws.mean(0), probs, atol=0.03, rtol=0.0)


def test_throughput_benchmark_runs(tmp_path: pathlib.Path) -> None:
    """The benchmark script runs end to end on tiny batches and writes its JSON report."""
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out.json"
    argv = ["--size", "tiny", "--batch-scale", "0.02", "--repeats", "1", "--warmup", "0", "--loop-steps", "2"]
    argv += ["--loop-rounds", "1", "--fill", "70", "--no-progress", "--prior", "both", "--json", str(out)]
    module.main(argv)
    report = json.loads(out.read_text())
    results = {r["prior"]: r for r in report["results"]}
    assert set(results) == {"maskgit", "mlp"}
    for result in results.values():
        assert result["imagination_steps_per_s"] > 0 and result["naive"]["imagination_steps_per_s"] > 0
        assert result["env_steps_per_s"] > 0 and result["peak_rss_bytes"] > 0
        assert result["replay_bytes_per_frame"] > 0


def test_onehot_first_layer_matches_the_dense_one() -> None:
    """Actor and critic give the same losses and gradients with the one-hot first layer as with the dense one."""
    th.manual_seed(0)
    k, c, rest, batch, horizon = 4, 32, 16, 6, 5
    traj = ImaginedTrajectory(
        tokens=th.randint(c, (batch, horizon + 1, k)),
        hidden=th.randn(batch, horizon + 1, rest),
        num_classes=c,
        actions=th.randint(3, (batch, horizon)),
        rewards=th.rand(batch, horizon),
        continues=th.full((batch, horizon), 0.9),
    )
    results = []
    for classes in (0, c):  # 0: dense first layers
        th.manual_seed(1)
        ac = ActorCritic(ModelConfig.from_size("tiny", latent_tokens=k, latent_classes=c, hidden_dim=rest), spaces.Discrete(3))
        if not classes:  # the same weights, behind plain Linear layers
            for net in (ac.actor.net, ac.critic.net, ac.target_critic.net):
                dense = th.nn.Linear(net[0].in_features, net[0].out_features, bias=net[0].bias is not None)
                dense.load_state_dict(net[0].state_dict())
                net[0] = dense
        loss = ac.loss(traj, 0.99, 0.95, 1e-3)
        (loss.actor + loss.critic).backward()
        results.append((loss.actor, loss.critic, *(p.grad for p in ac.parameters() if p.grad is not None)))
        with th.no_grad():
            acted = ac.actor.act(traj.features[:, 0], deterministic=True)
        results[-1] += (acted,)
    for a, b in zip(*results, strict=True):
        th.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_onehot_linear_matches_the_dense_one() -> None:
    """embedding_bag without an input gradient, the dense product with one: same outputs and weight gradients."""
    th.manual_seed(0)
    k, c, rest = 4, 32, 5
    layer = OneHotLinear(k * c + rest, 8, (k, c))
    x = th.cat([th.nn.functional.one_hot(th.randint(c, (6, 3, k)), c).float().flatten(-2), th.randn(6, 3, rest)], -1)
    fast = layer(x)
    (fast.square().sum()).backward()
    fast_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    dense_input = x.clone().requires_grad_()
    dense = layer(dense_input)
    (dense.square().sum()).backward()
    assert dense_input.grad is not None  # the straight-through latents of the world-model loss need it
    th.testing.assert_close(fast, dense.detach(), rtol=1e-4, atol=1e-5)
    for a, b in zip(fast_grads, layer.parameters(), strict=True):
        th.testing.assert_close(a, b.grad, rtol=1e-4, atol=1e-5)


def test_onehot_stem_matches_the_dense_one() -> None:
    """The sequence model gives the same h through the one-hot stem as through the dense one, cached or not."""
    th.manual_seed(0)
    k, c, extra = 4, 32, 3
    net = CausalTransformer(k * c + extra, dim=32, layers=1, heads=2, ffn_dim=32, dropout=0.0, max_length=16, latent_shape=(k, c))
    tokens = th.randint(c, (5, 9, k))
    inputs = th.cat([th.nn.functional.one_hot(tokens, c).float().flatten(-2), th.randn(5, 9, extra)], -1)
    segments, positions = segment_positions(th.zeros(5, 9, dtype=th.bool))
    dense = net(inputs.clone().requires_grad_(), segments, positions).detach()  # an input gradient: the dense stem
    with th.no_grad():
        th.testing.assert_close(net(inputs, segments, positions), dense, rtol=1e-4, atol=1e-5)
        cache = net.new_cache(5, 9, inputs.device)
        first = net(inputs[:, :6], segments[:, :6], positions[:, :6], cache)
        rest = [net(inputs[:, t : t + 1], segments[:, t : t + 1], positions[:, t : t + 1], cache) for t in range(6, 9)]
    th.testing.assert_close(th.cat([first, *rest], 1), dense, rtol=1e-4, atol=1e-5)


def test_gpu_defaults_stay_off_on_cpu(fast_kwargs: dict) -> None:
    """bf16 autocast and the on-device replay default to on for CUDA only: a CPU model keeps float32 and the host replay."""
    model = GITSTORM("MlpPolicy", "CartPole-v1", device="cpu", **fast_kwargs)
    assert model.mixed_precision is None and not model.replay_buffer.on_device
    with model.policy.autocast(model.mixed_precision):
        assert not th.is_autocast_enabled("cpu")
    model = GITSTORM("MlpPolicy", "CartPole-v1", device="cpu", mixed_precision=True, **fast_kwargs)
    with model.policy.autocast(model.mixed_precision):
        assert th.is_autocast_enabled("cpu") and th.get_autocast_dtype("cpu") == th.bfloat16
