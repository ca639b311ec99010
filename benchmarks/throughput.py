"""Throughput of GITSTORM's training loop: world-model updates, imagination, actor-critic updates, env steps.

Examples::

    python benchmarks/throughput.py --size tiny
    python benchmarks/throughput.py --size small --prior both --json small.json
    python benchmarks/throughput.py --size tiny --policy cnn
    python benchmarks/throughput.py --size base --batch-scale 0.125 --repeats 3 --skip-naive
    python benchmarks/throughput.py --size base --policy cnn --device cuda --replay-on-device --bf16
    python benchmarks/throughput.py --size base --policy cnn --device cuda --replay-on-device --matmul-precision highest
    python benchmarks/throughput.py --size tiny --policy cnn --imagine-batch-size 256 --threads 1 --skip-naive
    python benchmarks/throughput.py --size tiny --policy cnn --image-size 64 --imagine-batch-size 256 --threads 1 --skip-naive
    python benchmarks/throughput.py --size base --policy cnn --batch-scale 0.125 --prior both --decode 4/4/1 --skip-naive

Every figure is the median over ``--repeats`` timed repetitions after ``--warmup`` untimed ones,
with the paper's batch sizes (16 x 64 world-model windows, 1024 x 16 imagined steps) unless
``--batch-scale`` shrinks them. Imagination and the full loop are also measured for the naive
variant (``no-kv-cache``: the transformer recomputes the whole history at every imagined step, as
the STORM code does), interleaved with the cached one so that both see the same machine load; the
``speed-up`` column is their ratio. ``--prior both`` measures the MaskGIT and the MLP prior in one
run and prints their cost ratio per imagined step (``--decode`` sets the MaskGIT prior's decoding schedule
in imagination, e.g. ``4/4/1``: draft 4, revise 4, 1 round; the paper's 1/1/1 by default);
``--imagine-starts`` (default both) measures imagination from fresh replay windows (``"replay"``, the
paper) and from the world-model batch (``"batch"``) and prints their ratio.

On CUDA the timers synchronise the device before starting and before stopping, and the peak GPU
memory is ``torch.cuda.max_memory_allocated``. Peak RSS is the process high-water mark.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.actor_critic import Actor
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.transformer import segment_positions
from sb3_gitstorm.world_model import ImaginedTrajectory, WorldModel

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is in the zoo extra
    tqdm = None


class ImageEnv(gym.Env):
    """A bright square drifting over a 64x64 RGB frame: channel-first uint8 observations, Discrete(4) actions.

    The dynamics do not matter for throughput; the frames have the model's size, so no resize and
    no transpose wrapper runs.
    """

    def __init__(self, side: int = 64, max_steps: int = 500) -> None:
        self.side, self.max_steps = side, max_steps
        self.observation_space = gym.spaces.Box(0, 255, (3, side, side), np.uint8)
        self.action_space = gym.spaces.Discrete(4)

    def _obs(self) -> np.ndarray:
        frame = np.zeros((3, self.side, self.side), np.uint8)
        y, x = self.pos
        frame[:, y : y + 6, x : x + 6] = 255
        return frame

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.integers(0, self.side - 6, size=2), 0
        return self._obs(), {}

    def step(self, action):
        move = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])[int(action)]
        self.pos = np.clip(self.pos + move * 2, 0, self.side - 6)
        self.t += 1
        return self._obs(), float(self.pos[1] > self.side // 2), False, self.t >= self.max_steps, {}


def synchronize(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize(device)


class Timer:
    """Collects wall-clock durations of named phases; synchronises CUDA around every measurement."""

    def __init__(self, device: th.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {}
        self.cpu_times: dict[str, list[float]] = {}

    def __call__(self, name: str | None, fn: Callable[[], Any]) -> Any:
        synchronize(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        synchronize(self.device)
        if name is not None:
            self.times.setdefault(name, []).append(time.perf_counter() - start)
            self.cpu_times.setdefault(name, []).append(time.process_time() - cpu_start)
        return out

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def cpu_median(self, name: str) -> float:
        return statistics.median(self.cpu_times[name])

    def spread(self, name: str) -> float:
        """Half the inter-quartile range relative to the median: how noisy the figure is."""
        values = self.times[name]
        if len(values) < 4:
            return (max(values) - min(values)) / 2 / statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4)
        return (q3 - q1) / 2 / statistics.median(values)


class StepClock(BaseCallback):
    """Records the time of every environment step; with ``train_freq=1`` consecutive steps enclose one
    full iteration of the loop (act, env step, store, world-model update, imagination, actor-critic)."""

    def __init__(self, device: th.device) -> None:
        super().__init__()
        self.device = device
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []

    def _on_step(self) -> bool:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())
        return True


def progress(iterable, desc: str, enabled: bool):
    if enabled and tqdm is not None:
        return tqdm(iterable, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
    return iterable


@th.no_grad()
def naive_imagine(
    world_model: WorldModel, actor: Actor, obs: th.Tensor, actions: th.Tensor, episode_starts: th.Tensor, horizon: int
) -> ImaginedTrajectory:
    """:func:`~sb3_gitstorm.imagination.imagine` without the key/value cache: every imagined step runs the
    whole sequence so far through the transformer, as the STORM code does. Same arguments, same random
    draws in the same order, so the same trajectory up to float rounding."""
    tokens = world_model.sample_tokens(obs)
    state = world_model.observe(tokens, actions[:, :-1], episode_starts)
    segments, positions = segment_positions(episode_starts)
    inputs = world_model.sequence_input(world_model.tokens_to_latent(tokens[:, :-1]), actions[:, :-1])
    step_segments, step_positions = segments[:, :-1], positions[:, :-1]
    states, raw_actions = [state], []
    for _ in range(horizon):
        raw = actor.act(state.features)
        inputs = th.cat([inputs, world_model.sequence_input(state.latents, actor.squash(raw))[:, None]], 1)
        step_segments = th.cat([step_segments, state.segment], 1)
        step_positions = th.cat([step_positions, state.position], 1)
        hidden = world_model.transformer(inputs, step_segments, step_positions)[:, -1]
        state = dataclasses.replace(state, tokens=world_model.prior.sample(hidden), hidden=hidden, position=state.position + 1)
        states.append(state)
        raw_actions.append(raw)
    after = th.stack([s.hidden for s in states[1:]], 1)
    return ImaginedTrajectory(
        tokens=th.stack([s.tokens for s in states], 1),
        hidden=th.cat([states[0].hidden[:, None], after], 1),
        num_classes=world_model.config.latent_classes,
        actions=th.stack(raw_actions, 1),
        rewards=world_model.reward(after),
        continues=world_model.continuation(after),
    )


@contextlib.contextmanager
def without_kv_cache(model: GITSTORM) -> Iterator[None]:
    """Inside, ``model`` imagines with :func:`naive_imagine` (in ``learn`` as well)."""

    def imagine(*_: Any) -> ImaginedTrajectory:  # replay starts whatever the model's imagine_starts
        model.policy.world_model.eval()
        context = model.replay_buffer.sample(model.imagine_batch_size, model.imagine_context_length)
        with model.policy.autocast(model.mixed_precision):
            policy = model.policy
            obs, actions, starts = context.observations, context.actions, context.episode_starts
            return naive_imagine(policy.world_model, policy.actor_critic.actor, obs, actions, starts, model.imagine_horizon)

    model._imagine = imagine  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model._imagine


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def model_image_size(args: argparse.Namespace) -> int:
    """Side of the images the CNN sees: ``--image-size``, else the size's (64; 32 for tiny)."""
    return args.image_size or ModelConfig.from_size(args.size).image_size


def make_model(args: argparse.Namespace, prior: str, starts: str, device: th.device) -> GITSTORM:
    scale = args.batch_scale
    image = args.policy == "cnn"
    env: Any = ImageEnv() if image and args.env is None else (args.env or "CartPole-v1")
    model = GITSTORM(
        "CnnPolicy" if image else "MlpPolicy",
        env,
        learning_starts=args.fill,
        buffer_size=max(args.fill + 1000, 10_000),
        batch_size=max(1, round(16 * scale)),
        batch_length=64,
        imagine_batch_size=args.imagine_batch,
        imagine_context_length=8,
        imagine_horizon=16,
        imagine_starts=starts,
        prior=prior,
        draft_steps=args.decode[0],
        revise_steps=args.decode[1],
        revise_rounds=args.decode[2],
        policy_kwargs=dict(size=args.size, image_size=model_image_size(args)),
        device=device,
        seed=args.seed,
        **extra_kwargs(args),
    )
    if args.matmul_precision:  # after the constructor, which asks for TF32 on CUDA
        set_matmul_precision(args.matmul_precision)
    model.learn(args.fill)  # random actions only: fills the replay buffer, no update yet
    return model


def set_matmul_precision(precision: str) -> None:
    """float32 matrix products and cuDNN convolutions: ``"highest"`` (IEEE fp32) or ``"high"`` (TF32 where the GPU has it).

    A process-wide torch setting, as GITSTORM's own choice of ``"high"`` on CUDA."""
    th.set_float32_matmul_precision(precision)
    th.backends.cudnn.allow_tf32 = precision != "highest"


def extra_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor flags of the speed options: as asked on CUDA (where GITSTORM's defaults turn them on),
    on CPU only when asked for (older versions lack them)."""
    kwargs: dict[str, Any] = {}
    cuda = th.device(args.device).type == "cuda"
    if args.replay_on_device or cuda:
        kwargs["replay_buffer_kwargs"] = dict(on_device=args.replay_on_device)
    if args.bf16 or cuda:
        kwargs["mixed_precision"] = args.bf16
    return kwargs


def measure(args: argparse.Namespace, prior: str, starts: str, device: th.device) -> dict[str, Any]:
    """All figures of one prior and one ``imagine_starts`` option."""
    model = make_model(args, prior, starts, device)
    buffer = model.replay_buffer
    timer = Timer(device)
    show = not args.no_progress
    # The first variant gives the headline figures; the other (if any) the ``*_naive`` ones.
    variants = [False] if args.no_kv_cache else [True] if args.skip_naive else [True, False]

    def key(name: str, kv: bool) -> str:
        return name if kv == variants[0] else f"{name}_naive"

    def imagine(kv: bool, batch: Any, tokens: th.Tensor) -> ImaginedTrajectory:
        with contextlib.nullcontext() if kv else without_kv_cache(model):
            return model._imagine(batch, tokens)

    world_model = model.policy.world_model
    hidden = th.randn(model.imagine_batch_size, world_model.config.hidden_dim, device=device)

    def prior_sample():
        with th.no_grad(), model.policy.autocast(model.mixed_precision):
            return world_model.prior.sample(hidden)

    if device.type == "cuda":
        th.cuda.reset_peak_memory_stats(device)
    # ---------------------------------------------------------------- the updates, one phase at a time
    for rep in progress(range(args.warmup + args.repeats), f"{prior}: updates", show):
        record = rep >= args.warmup
        _, batch, tokens = timer("world_model" if record else None, lambda: model._train_world_model(model.batch_size))
        trajectory = None
        for kv in variants:
            out = timer(key("imagine", kv) if record else None, lambda kv=kv, b=batch, z=tokens: imagine(kv, b, z))
            trajectory = out if kv == variants[0] else trajectory
        timer("actor_critic" if record else None, lambda traj=trajectory: model._train_actor_critic(traj))
        timer("prior" if record else None, prior_sample)

    # ----------------------------------------------------------- the full loop, as ``learn`` runs it
    loop: dict[bool, list[float]] = {kv: [] for kv in variants}
    loop_cpu: dict[bool, list[float]] = {kv: [] for kv in variants}
    rounds = max(1, args.loop_rounds)
    for _ in progress(range(rounds), f"{prior}: training loop", show):
        for kv in variants:  # interleaved, so both variants see the same load
            clock = StepClock(device)
            with contextlib.nullcontext() if kv else without_kv_cache(model):
                model.learn(args.loop_steps + 1, callback=clock, reset_num_timesteps=False)
            loop[kv] += list(np.diff(clock.stamps)[1:])  # the first interval includes learn()'s setup
            loop_cpu[kv] += list(np.diff(clock.cpu_stamps)[1:])

    steps = model.imagine_batch_size * model.imagine_horizon
    frame_bytes = int(np.prod(buffer.obs_shape)) * np.dtype(buffer.observation_space.dtype).itemsize
    nbytes = buffer.nbytes
    result: dict[str, Any] = {
        "prior": prior,
        "imagine_starts": starts,
        "world_model_updates_per_s": 1.0 / timer.median("world_model"),
        "imagination_steps_per_s": steps / timer.median("imagine"),
        "actor_critic_updates_per_s": 1.0 / timer.median("actor_critic"),
        "kv_cache": variants[0],
        "env_steps_per_s": 1.0 / statistics.median(loop[variants[0]]),
        "prior_ms_per_imagined_step": 1e3 * timer.median("prior"),
        "ms": {
            "world_model": 1e3 * timer.median("world_model"),
            "imagine": 1e3 * timer.median("imagine"),
            "actor_critic": 1e3 * timer.median("actor_critic"),
            "loop_step": 1e3 * statistics.median(loop[variants[0]]),
        },
        "cpu_ms": {
            **{name: 1e3 * timer.cpu_median(name) for name in timer.cpu_times},
            **{key("loop_step", kv): 1e3 * statistics.median(loop_cpu[kv]) for kv in variants},
        },
        "noise": {name: timer.spread(name) for name in timer.times},
        "replay_bytes_per_frame": nbytes / (buffer.buffer_size * buffer.n_envs),
        "replay_raw_frame_bytes": frame_bytes,
        "replay_overhead_ratio": nbytes / (buffer.buffer_size * buffer.n_envs) / frame_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    if len(variants) == 2:
        result["naive"] = {
            "imagination_steps_per_s": steps / timer.median("imagine_naive"),
            "env_steps_per_s": 1.0 / statistics.median(loop[False]),
            "ms": {"imagine": 1e3 * timer.median("imagine_naive"), "loop_step": 1e3 * statistics.median(loop[False])},
        }
        result["kv_cache_speedup"] = {
            "imagination": timer.median("imagine_naive") / timer.median("imagine"),
            "env_steps": statistics.median(loop[False]) / statistics.median(loop[True]),
        }
    if device.type == "cuda":
        result["peak_gpu_bytes"] = th.cuda.max_memory_allocated(device)
    return result


def machine_info(device: th.device) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": th.get_num_threads(),
        "torch": th.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = th.cuda.get_device_name(device)
    return info


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def rate(x: float) -> str:
        return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"

    for r in results:
        naive = r.get("naive")
        ms, naive_imagine, naive_loop = r["ms"], naive and naive["imagination_steps_per_s"], naive and naive["env_steps_per_s"]
        rows = [
            ("world-model updates/s", r["world_model_updates_per_s"], None, ms["world_model"], "world_model"),
            ("imagination steps/s", r["imagination_steps_per_s"], naive_imagine, ms["imagine"], "imagine"),
            ("actor-critic updates/s", r["actor_critic_updates_per_s"], None, ms["actor_critic"], "actor_critic"),
            ("env steps/s (full loop)", r["env_steps_per_s"], naive_loop, ms["loop_step"], "loop_step"),
        ]
        print(
            f"\n== size={args.size} policy={args.policy} image_size={model_image_size(args)} "
            f"prior={r['prior']} decode={'/'.join(map(str, args.decode)) if r['prior'] == 'maskgit' else '-'} "
            f"imagine_starts={r['imagine_starts']} "
            f"device={args.device} bf16={args.bf16} matmul_precision={args.matmul_precision or 'default'} =="
        )
        first = "kv-cache" if r["kv_cache"] else "no-kv-cache"
        second = "no-kv-cache" if naive else ""
        header = f"{'':26s}{first:>12s}{second:>13s}{'speed-up':>10s}{'ms':>10s}{'noise':>8s}{'cpu ms':>10s}"
        print(header)
        for name, value, slow, ms, key in rows:
            slow_s = rate(slow) if slow else "-"
            ratio = f"{value / slow:.2f}x" if slow else "-"
            noise = f"±{100 * r['noise'][key]:.0f}%" if key in r["noise"] else ""
            cpu = f"{r['cpu_ms'][key]:.1f}" if key else ""
            print(f"{name:26s}{rate(value):>12s}{slow_s:>13s}{ratio:>10s}{ms:>10.1f}{noise:>8s}{cpu:>10s}")
        if naive:
            cpu_ratio = r["cpu_ms"]["imagine_naive"] / r["cpu_ms"]["imagine"]
            print(f"imagination speed-up of the kv cache in cpu time: {cpu_ratio:.2f}x")
        print(f"prior sample per imagined step: {r['prior_ms_per_imagined_step']:.2f} ms (batch {args.imagine_batch})")
        print(
            f"replay: {r['replay_bytes_per_frame']:,.1f} bytes per stored step, raw frame {r['replay_raw_frame_bytes']:,} bytes"
            f" -> {r['replay_overhead_ratio']:.4f}x"
        )
        mem = f"peak RSS {r['peak_rss_bytes'] / 2**20:,.0f} MiB"
        if "peak_gpu_bytes" in r:
            mem += f", peak GPU memory {r['peak_gpu_bytes'] / 2**20:,.0f} MiB"
        print(mem)
    by_variant = {(r["prior"], r["imagine_starts"]): r for r in results}
    for starts in ("replay", "batch"):
        if (mg := by_variant.get(("maskgit", starts))) and (mlp := by_variant.get(("mlp", starts))):
            print(
                f"\nMaskGIT ({'/'.join(map(str, args.decode))}) / MLP prior cost ({starts} starts): imagined step "
                f"{mg['ms']['imagine'] / mlp['ms']['imagine']:.2f}x, prior alone "
                f"{mg['prior_ms_per_imagined_step'] / mlp['prior_ms_per_imagined_step']:.2f}x, "
                f"full loop per env step {mg['ms']['loop_step'] / mlp['ms']['loop_step']:.2f}x"
            )
    for prior in ("maskgit", "mlp"):
        if (replay := by_variant.get((prior, "replay"))) and (batch := by_variant.get((prior, "batch"))):
            print(
                f"\n{prior}: batch / replay starts, imagination {batch['ms']['imagine'] / replay['ms']['imagine']:.2f}x, "
                f"full loop per env step {batch['ms']['loop_step'] / replay['ms']['loop_step']:.2f}x"
            )


def decode_schedule(text: str) -> tuple[int, int, int]:
    """``"4/4/1"`` -> ``(4, 4, 1)``."""
    parts = text.split("/")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected draft/revise/rounds, e.g. 4/4/1, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the size- and device-dependent defaults filled in (also for other scripts:
    ``measure(parse_args([...]), prior, starts, device)`` times one configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small", "base"], default="tiny")
    parser.add_argument("--policy", choices=["mlp", "cnn"], default="mlp", help="MlpPolicy (CartPole) or CnnPolicy (64x64 RGB)")
    parser.add_argument("--image-size", type=int, default=None, help="CNN image side (default: the size's)")
    parser.add_argument("--env", default=None, help="gymnasium id to use instead of CartPole-v1 / the synthetic image env")
    parser.add_argument("--prior", choices=["maskgit", "mlp", "both"], default="maskgit")
    parser.add_argument(
        "--decode",
        type=decode_schedule,
        default=(1, 1, 1),
        metavar="D/R/N",
        help="the MaskGIT prior's decoding: draft steps / revise steps / revise rounds (default 1/1/1, the paper's)",
    )
    parser.add_argument(
        "--imagine-starts", choices=["replay", "batch", "both"], default="both", help="GITSTORM's imagine_starts option(s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default: 10 tiny, 5 small, 3 base)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--loop-steps", type=int, default=None, help="env steps per full-loop round (default: 10, 4, 2)")
    parser.add_argument("--loop-rounds", type=int, default=2, help="interleaved rounds of the full loop per variant")
    parser.add_argument("--batch-scale", type=float, default=1.0, help="scale both batch sizes (e.g. 0.125 for base on CPU)")
    parser.add_argument("--imagine-batch-size", type=int, default=None, help="imagined rollouts (default: 1024 x batch scale)")
    parser.add_argument("--fill", type=int, default=1024, help="random steps stored before measuring (learning_starts)")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--skip-naive", action="store_true", help="measure only the kv-cache variant")
    variant.add_argument(
        "--no-kv-cache", action="store_true", help="measure only the no-kv-cache variant (imagination recomputes the history)"
    )
    parser.add_argument("--replay-on-device", action="store_true", help="keep the replay buffer on --device as torch tensors")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (mixed_precision=True)")
    parser.add_argument(
        "--matmul-precision",
        choices=["highest", "high"],
        default=None,
        help="float32 matmuls and convolutions: highest (IEEE fp32) or high (TF32 on CUDA); default: GITSTORM's (high on CUDA)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    device = th.device(args.device)
    if device.type == "cuda" and not th.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    cpu_defaults = {"tiny": (10, 10), "small": (5, 4), "base": (3, 2)}
    repeats, loop_steps = cpu_defaults[args.size] if device.type == "cpu" else (10, 10)
    args.repeats = args.repeats or repeats
    args.loop_steps = args.loop_steps or loop_steps
    args.imagine_batch = args.imagine_batch_size or max(1, round(1024 * args.batch_scale))
    ModelConfig.from_size(args.size)  # fail early on a bad size
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = th.device(args.device)
    if args.threads:
        th.set_num_threads(args.threads)
    info = machine_info(device)
    priors = ["maskgit", "mlp"] if args.prior == "both" else [args.prior]
    starts = ["replay", "batch"] if args.imagine_starts == "both" else [args.imagine_starts]
    results = [measure(args, prior, start, device) for prior in priors for start in starts]
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print_table(results, args)
    load = [round(x, 1) for x in info["load_average"] or ()]
    print(f"\n{info['date']} | {info['cpu']} | {info['torch_threads']} threads | torch {info['torch']} | load average {load}")
    report = {"machine": info, "args": {k: v for k, v in vars(args).items()}, "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
