"""GITSTORM on a CUDA GPU with what a GPU user gets: bf16 autocast, TF32 matmuls and the replay on the device.

Tests marked ``cuda`` are skipped without a GPU (tests/conftest.py); ``benchmarks/gpu_check.py`` runs them
(``pytest -m cuda``). The bf16 / fp32 agreement check runs on the CPU as well, where autocast has bf16 too.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_gitstorm import GITSTORM
from tests.conftest import DotEnv

CUDA = pytest.mark.cuda
# bf16 keeps 8 mantissa bits (a rounding error of up to 0.4% per operation) and autocast sums in fp32: on the CPU
# the losses of one batch differ by at most 0.4% (tiny models, both priors). 2% relative (or 0.02 absolute, for
# the losses near zero) leaves room for GPU kernels that sum in other orders.
LOSS_RTOL, LOSS_ATOL = 0.02, 0.02
IMAGE_SIZE = (48, 80)  # not the model's 32x32: the observations are resized on the way in

CASES = [
    pytest.param("CnnPolicy", prior, starts, mixed_precision, id=f"cnn-{prior}-{starts}-{'bf16' if mixed_precision else 'fp32'}")
    for prior in ("maskgit", "mlp")
    for starts in ("replay", "batch")
    for mixed_precision in (True, False)
]
CASES.append(pytest.param("MlpPolicy", "maskgit", "replay", True, id="mlp-policy-maskgit-replay-bf16"))


def make_env(policy: str) -> gym.Env:
    return DotEnv(size=IMAGE_SIZE) if policy == "CnnPolicy" else gym.make("CartPole-v1")


def episode_actions(model: GITSTORM, observations: list[np.ndarray]) -> np.ndarray:
    """Deterministic actions ``(T,)`` along one episode of observations, with the recurrent context."""
    state, actions = None, []
    for t, obs in enumerate(observations):
        action, state = model.predict(obs[None], state=state, episode_start=np.array([t == 0]), deterministic=True)
        actions.append(action[0])
    return np.array(actions)


def on_cuda(model: GITSTORM) -> bool:
    """The model's parameters and its replay's arrays all live on the GPU."""
    buffer = model.replay_buffer
    tensors = [*model.policy.parameters(), buffer.observations, buffer.actions]
    return model.device.type == "cuda" and buffer.on_device and all(t.device.type == "cuda" for t in tensors)


@CUDA
@pytest.mark.parametrize("policy, prior, imagine_starts, mixed_precision", CASES)
def test_learn_predict_save_load_resume_on_cuda(
    tmp_path: Path, policy: str, prior: str, imagine_starts: str, mixed_precision: bool, fast_kwargs: dict
) -> None:
    kwargs = dict(prior=prior, imagine_starts=imagine_starts, mixed_precision=mixed_precision, seed=0, **fast_kwargs)
    model = GITSTORM(policy, make_env(policy), replay_buffer_kwargs=dict(on_device=True), device="cuda", **kwargs)
    assert on_cuda(model)
    assert th.get_float32_matmul_precision() == "high"  # TF32 matmuls: GITSTORM's choice on CUDA
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(48)
    assert model._n_updates > 0 and not any(model._divergence_guard.skipped.values())  # every update was finite
    changed = [not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2

    space = model.observation_space
    space.seed(0)
    observations = [space.sample() for _ in range(6)]
    actions = episode_actions(model, observations)
    assert all(model.action_space.contains(a) for a in actions)
    model.save(tmp_path / "agent.zip")
    model.save_replay_buffer(tmp_path / "replay.pkl")

    loaded = GITSTORM.load(tmp_path / "agent.zip", env=make_env(policy), device="cuda")
    assert loaded.mixed_precision is mixed_precision
    np.testing.assert_array_equal(episode_actions(loaded, observations), actions)
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    assert on_cuda(loaded) and loaded.replay_buffer.pos == model.replay_buffer.pos
    updates = loaded._n_updates
    loaded.learn(16, reset_num_timesteps=False)  # resume
    assert loaded.num_timesteps == 64 and loaded._n_updates == updates + 16
    assert not any(loaded._divergence_guard.skipped.values())

    on_cpu = GITSTORM.load(tmp_path / "agent.zip", device="cpu")  # trained on the GPU, deployed on a CPU
    assert all(p.device.type == "cpu" for p in on_cpu.policy.parameters())
    assert all(model.action_space.contains(a) for a in episode_actions(on_cpu, observations))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
def test_bf16_and_fp32_losses_of_one_batch_agree(device: str, prior: str, fast_kwargs: dict) -> None:
    """The world-model and actor-critic losses of the same batch under bf16 autocast and in fp32.

    In eval mode (no dropout: its masks need not match across dtypes), from the same random seed and against IEEE
    fp32 (no TF32), so that only the arithmetic differs; within ``LOSS_RTOL`` / ``LOSS_ATOL``."""
    model = GITSTORM("CnnPolicy", DotEnv(), prior=prior, mixed_precision=False, device=device, seed=0, **fast_kwargs)
    model.learn(40)  # a little trained: the losses are not those of the initial weights
    policy = model.policy
    world_model, actor_critic = policy.world_model.eval(), policy.actor_critic.eval()
    np.random.seed(0)
    batch = model.replay_buffer.sample(8, fast_kwargs["batch_length"])
    th.manual_seed(0)
    trajectory = model._imagine(batch, th.empty(0))  # replay starts, in fp32
    scale = actor_critic.normalizer.scale.clone()

    def losses(mixed_precision: bool) -> dict[str, th.Tensor]:
        th.manual_seed(1)
        actor_critic.normalizer.scale.copy_(scale)  # the loss updates the return scale
        with th.no_grad(), policy.autocast(mixed_precision):
            world = world_model.loss(batch.observations, batch.actions, batch.rewards, batch.terminated, batch.episode_starts)
            behaviour = actor_critic.loss(trajectory, model.gamma, model.gae_lambda, model.ent_coef, False)
        return {**world.terms(), "actor_loss": behaviour.actor, "critic_loss": behaviour.critic}

    tf32 = th.get_float32_matmul_precision(), th.backends.cudnn.allow_tf32
    th.set_float32_matmul_precision("highest")  # an IEEE fp32 reference: no TF32 in matmuls or convolutions
    th.backends.cudnn.allow_tf32 = False
    try:
        fp32 = losses(False)
    finally:
        th.set_float32_matmul_precision(tf32[0])
        th.backends.cudnn.allow_tf32 = tf32[1]
    bf16 = losses(True)
    assert fp32.keys() == bf16.keys()
    for name, value in fp32.items():
        assert bf16[name].dtype == th.float32 and th.isfinite(value), name
        th.testing.assert_close(bf16[name], value, rtol=LOSS_RTOL, atol=LOSS_ATOL, msg=lambda m, name=name: f"{name}: {m}")
