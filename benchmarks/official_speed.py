"""Training-step time of sb3_gitstorm against the official STORM and GIT-STORM code, interleaved in one process.

Examples::

    python benchmarks/official_speed.py --storm-path /tmp/storm --gitstorm-path /tmp/git-storm --json speed.json
    python benchmarks/official_speed.py --storm-path /tmp/storm --quick

One step is what both codebases run per environment step once the replay buffer is warm: a world-model
update on ``--batch-size`` replay windows of 64 steps, imagination of ``--imagine-batch-size`` rollouts
(8 context steps, horizon 16) and an actor-critic update on them. For sb3_gitstorm that is
``GITSTORM.train(1, batch_size)``; for the official code it is what its ``train.py`` loop calls:
``replay_buffer.sample`` + ``world_model.update``, ``replay_buffer.sample`` + ``world_model.imagine_data``
(no grad, eval mode, no video) and ``agent.update``. Both sides see 64x64 RGB frames of
:class:`throughput.ImageEnv` (4 actions) and start after ``--fill`` random steps.

The variants run in turn, one step each, for ``--warmup`` untimed and ``--repeats`` timed rounds (the order
rotates every round), with one torch thread: on a machine shared with other work every variant sees the
same load, so the *ratios* hold even where the absolute seconds drift. The table gives the median process
CPU seconds and wall-clock seconds per step and, for every sb3_gitstorm variant, its ratio to each official one
(ours / theirs: below 1 is faster), with the range of the ratios within a round. On a loaded machine the wall
clock also counts the time the process waits for a core; the CPU seconds do not, so they are the steadier
figure there (the two agree on an idle machine, where one thread keeps its core).

Getting the official code (neither is a pip package, so it is read from a directory)::

    git clone https://github.com/weipu-zhang/STORM /tmp/storm
    git clone https://github.com/Cmeo97/GIT-STORM /tmp/git-storm
    pip install einops yacs tensorboardX  # what their modules import

Their files are imported unmodified; to run on a CPU this script applies, at run time only:

- every tensor they create with ``device="cuda"`` (``torch.zeros``, ``torch.empty``) is made on the CPU and
  ``Tensor.cuda()`` returns the tensor (a :class:`~torch.overrides.TorchFunctionMode`, active only while
  their code runs; the code hard-codes ``"cuda"`` in its replay buffer, KV cache, imagination buffers and
  lambda-returns);
- ``use_amp`` is turned off (float32, as sb3_gitstorm runs on a CPU): their bf16/fp16 autocast and
  GradScaler are CUDA-only, and their imagination buffers would otherwise be half precision;
- GIT-STORM's ``update`` calls ``forward(obs, action, reward, termination, logger)`` although its
  ``forward`` takes ``(data, type)`` (a known bug: its launcher trains STORM instead); the call is routed to
  ``forward({"obs": ..., ...}, "regular")``, the code path it was meant to run;
- GIT-STORM's ``sample_mask`` (MaskGIT's random chunks of the 32 positions) is decorated with
  ``torch.compile``, which fails on a CPU here (an inductor error in torch 2.13); it runs uncompiled;
- their ``train.py`` wraps both networks in ``torch.compile(mode="max-autotune")`` on CUDA; neither side is
  compiled here. Their configuration files give the architecture (``config_files/STORM.yaml``,
  ``config_files/GITSTORM.yaml``); the batch sizes are the paper's, as for sb3_gitstorm (GITSTORM.yaml has
  ``BatchLength: 4 #64``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import json
import os
import pathlib
import random
import shlex
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
import yaml
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import throughput  # benchmarks/ is not a package: imported from this file's folder

# Top-level module names of the official checkouts: the same in both, so each is imported in isolation.
OFFICIAL_MODULES = ("agents", "utils", "replay_buffer", "sub_models", "env_wrapper")
OURS_DEFAULT = ("maskgit:batch", "maskgit:replay", "mlp:replay")
CLOCKS = ("cpu", "wall")  # process CPU seconds (what a shared machine's load hardly changes) and wall-clock seconds


class CudaToCpu(TorchFunctionMode):
    """Inside, tensors asked for on ``"cuda"`` are made on the CPU and ``Tensor.cuda()`` is the identity."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is th.Tensor.cuda:
            return args[0]
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and th.device(device).type == "cuda":
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def import_checkout(path: str, names: list[str]) -> dict[str, types.ModuleType]:
    """Import ``names`` from the checkout at ``path`` and take its top-level modules out of ``sys.modules``
    again, so that another checkout with the same module names (STORM and GIT-STORM) can be imported next.
    The returned modules keep references to their own siblings."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No official checkout at {path!r} (see the module docstring for how to get it)")

    def ours() -> dict[str, types.ModuleType]:
        return {k: m for k, m in sys.modules.items() if k.split(".")[0] in OFFICIAL_MODULES}

    saved = ours()
    for key in saved:
        del sys.modules[key]
    sys.path.insert(0, path)
    try:
        return {name: importlib.import_module(name) for name in names}
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"{error} while importing the code at {path} (pip install einops yacs tensorboardX)") from error
    finally:
        sys.path.remove(path)
        for key in ours():
            del sys.modules[key]
        sys.modules.update(saved)


def namespace(tree: Any) -> Any:
    """A YAML mapping as nested attributes (``conf.Models.MaskGit.VocabSize``), as their config loaders give;
    strings that are Python literals become values, as their loaders (yacs, OmegaConf) read ``3E-4``."""
    if isinstance(tree, dict):
        return types.SimpleNamespace(**{k: namespace(v) for k, v in tree.items()})
    if isinstance(tree, str):
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(tree)
    return tree


def fill_official_buffer(replay_class: type, steps: int, seed: int) -> Any:
    """Their replay buffer (numpy storage) with ``steps`` random steps of :class:`throughput.ImageEnv`."""
    kwargs = dict(obs_shape=(64, 64, 3), num_envs=1, max_length=max(steps + 1000, 10_000), warmup_length=steps - 1)
    if "device" in inspect.signature(replay_class).parameters:  # GIT-STORM's takes a device, STORM's does not
        kwargs["device"] = th.device("cpu")
    buffer = replay_class(**kwargs, store_on_gpu=False)
    env, rng = throughput.ImageEnv(), np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = int(rng.integers(env.action_space.n))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.append(obs.transpose(1, 2, 0)[None], np.array([action]), np.array([reward]), np.array([terminated]))
        obs = env.reset()[0] if terminated or truncated else next_obs
    return buffer


def official_step_fn(name: str, path: str, args: argparse.Namespace, lengths: tuple[int, int, int]) -> Callable[[], None]:
    """Build the official STORM (``name="storm"``) or GIT-STORM (``"gitstorm"``) world model, agent and
    replay buffer at paper size, with the CPU shims above; return one training step."""
    batch_length, context, horizon = lengths
    modules = import_checkout(path, ["agents", "replay_buffer", "sub_models.world_models"])
    agents, world_models = modules["agents"], modules["sub_models.world_models"]
    config_file = {"storm": "STORM.yaml", "gitstorm": "GITSTORM.yaml"}[name]
    with open(os.path.join(path, "config_files", config_file)) as f:
        conf = namespace(yaml.safe_load(f))
    wm, ag, n_actions = conf.Models.WorldModel, conf.Models.Agent, throughput.ImageEnv().action_space.n
    th.manual_seed(args.seed)
    with CudaToCpu():
        sizes = dict(
            in_channels=wm.InChannels,
            action_dim=n_actions,
            transformer_max_length=wm.TransformerMaxLength,
            transformer_hidden_dim=wm.TransformerHiddenDim,
            transformer_num_layers=wm.TransformerNumLayers,
            transformer_num_heads=wm.TransformerNumHeads,
        )
        if name == "gitstorm":
            world_model = world_models.GITWorldModel(**sizes, device=th.device("cpu"), conf=conf)
        else:
            world_model = world_models.WorldModel(**sizes)
        agent = agents.ActorCriticAgent(
            feat_dim=32 * 32 + wm.TransformerHiddenDim,
            num_layers=ag.NumLayers,
            hidden_dim=ag.HiddenDim,
            action_dim=n_actions,
            gamma=ag.Gamma,
            lambd=ag.Lambda,
            entropy_coef=ag.EntropyCoef,
        )
    for model in (world_model, agent):  # float32 on a CPU, as sb3_gitstorm
        model.use_amp, model.tensor_dtype = False, th.float32
        model.scaler = th.amp.GradScaler("cpu", enabled=False)
    if name == "gitstorm":
        regular = world_model.forward

        def forward(*inputs: Any) -> Any:  # update()'s call, routed to the path it means
            if len(inputs) == 5:
                keys = ("obs", "action", "reward", "termination")
                return regular(dict(zip(keys, inputs[:4], strict=True)), "regular")
            return regular(*inputs)

        world_model.forward = forward
        # MaskGIT's mask drawing is decorated with torch.compile, which fails on a CPU (inductor, torch 2.13):
        # run it as written, uncompiled (a randperm of 32 positions, twice per imagined step).
        maskgit_globals = type(world_model.maskgit).sample.__globals__  # its module's namespace
        maskgit_globals["sample_mask"] = inspect.unwrap(maskgit_globals["sample_mask"])
    replay = fill_official_buffer(modules["replay_buffer"].ReplayBuffer, args.fill, args.seed)

    def step() -> None:
        with CudaToCpu():
            obs, action, reward, termination = replay.sample(args.batch_size, 0, batch_length)
            world_model.update(obs, action, reward, termination, logger=None)
            world_model.eval()
            agent.eval()
            with th.no_grad():
                obs, action, _, _ = replay.sample(args.imagine_batch_size, 0, context)
                imagined = world_model.imagine_data(
                    agent,
                    obs,
                    action,
                    imagine_batch_size=args.imagine_batch_size,
                    imagine_batch_length=horizon,
                    log_video=False,
                    logger=None,
                )
            latent, action, reward_hat, termination_hat = imagined
            agent.update(latent, action, None, None, reward_hat, termination_hat, logger=None)

    return step


def ours_step_fn(variant: str, args: argparse.Namespace) -> tuple[Callable[[], None], tuple[int, int, int]]:
    """A paper-size CnnPolicy GITSTORM (``variant`` = ``"<prior>:<imagine_starts>"``) on :class:`throughput.ImageEnv`
    after ``--fill`` random steps; returns one training step and its (batch length, context, horizon)."""
    prior, starts = variant.split(":")
    # throughput's own command line, so options it adds later get their defaults here too
    options = throughput.parse_args(
        [
            *("--policy", "cnn", "--size", args.size, "--fill", str(args.fill), "--seed", str(args.seed)),
            *("--batch-scale", str(args.batch_size / 16), "--imagine-batch-size", str(args.imagine_batch_size)),
        ]
    )
    model = throughput.make_model(options, prior, starts, th.device("cpu"))
    lengths = (model.batch_length, model.imagine_context_length, model.imagine_horizon)
    return (lambda: model.train(1, model.batch_size)), lengths


def parse_variant(text: str) -> str:
    prior, _, starts = text.partition(":")
    if prior not in ("maskgit", "mlp") or starts not in ("batch", "replay"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected <maskgit|mlp>:<batch|replay>, e.g. maskgit:batch")
    return text


def interleave(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Run every step once per round, the order rotated each round; wall and CPU seconds of the timed rounds."""
    names = list(steps)
    times: dict[str, dict[str, list[float]]] = {name: {clock: [] for clock in CLOCKS} for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            steps[name]()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            label = f"round {round_ + 1}/{warmup + repeats}{' (warm-up)' if round_ < warmup else ''}"
            print(f"{label} {name}: {cpu:.2f} cpu s, {wall:.2f} wall s", flush=True)
            if round_ >= warmup:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    return times


def summarise(times: dict[str, dict[str, list[float]]], ours: list[str], theirs: list[str]) -> dict[str, Any]:
    """Medians per variant and, for each (ours, theirs) pair and clock, the ratio of the medians and the range
    of the ratios within a round."""
    summary: dict[str, Any] = {"seconds_per_step": {}, "ratios": {}}
    for name, t in times.items():
        summary["seconds_per_step"][name] = {clock: statistics.median(t[clock]) for clock in CLOCKS}
    for mine in ours:
        for other in theirs:
            ratio: dict[str, float] = {}
            for clock in CLOCKS:
                per_round = [a / b for a, b in zip(times[mine][clock], times[other][clock], strict=True)]
                medians = summary["seconds_per_step"]
                ratio[clock] = medians[mine][clock] / medians[other][clock]
                ratio[f"{clock}_per_round_min"], ratio[f"{clock}_per_round_max"] = min(per_round), max(per_round)
            summary["ratios"][f"{mine} / {other}"] = ratio
    return summary


def print_report(summary: dict[str, Any], info: dict[str, Any], command: str) -> None:
    load = [[round(x, 1) for x in info[key] or ()] for key in ("load_average", "load_average_end")]
    print(f"\n{info['date']} | {info['cpu']} | {info['torch_threads']} torch thread(s) | torch {info['torch']}")
    print(f"load average {load[0]} -> {load[1]} | {command}\n")
    print(f"{'median s/step':30s}{'cpu':>8s}{'wall':>8s}")
    for name, s in summary["seconds_per_step"].items():
        print(f"{name:30s}{s['cpu']:>8.2f}{s['wall']:>8.2f}")
    if summary["ratios"]:
        print(f"\n{'ours / theirs':42s}{'cpu':>7s}{'(rounds)':>12s}{'wall':>7s}{'(rounds)':>12s}")
        for pair, r in summary["ratios"].items():
            cells = [f"{r[c]:>6.2f}x{r[c + '_per_round_min']:>6.2f}-{r[c + '_per_round_max']:.2f}" for c in CLOCKS]
            print(f"{pair:42s}{''.join(cells)}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storm-path", default=None, help="checkout of github.com/weipu-zhang/STORM")
    parser.add_argument("--gitstorm-path", default=None, help="checkout of github.com/Cmeo97/GIT-STORM")
    parser.add_argument(
        "--ours",
        nargs="*",
        type=parse_variant,
        default=list(OURS_DEFAULT),
        help="sb3_gitstorm variants as <prior>:<imagine_starts> (default: %(default)s)",
    )
    parser.add_argument("--size", choices=["tiny", "small", "base"], default="base", help="sb3_gitstorm's size (base: the paper)")
    parser.add_argument("--batch-size", type=int, default=16, help="world-model windows of 64 steps (paper: 16)")
    parser.add_argument("--imagine-batch-size", type=int, default=1024, help="imagined rollouts (paper: 1024)")
    parser.add_argument("--fill", type=int, default=1024, help="random steps stored before the first update (paper: 1024)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 5; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 1, imagine batch 16, fill 128, 1 timed round")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.imagine_batch_size, args.fill = 1, 16, 128
    args.repeats = args.repeats or (1 if args.quick else 5)
    if args.fill <= 64:
        parser.error("--fill must exceed the 64-step training window")
    if not args.ours and not (args.storm_path or args.gitstorm_path):
        parser.error("nothing to time: give --ours variants or an official checkout")

    th.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)  # their replay buffers sample with np.random
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
    steps: dict[str, Callable[[], None]] = {}
    lengths = (64, 8, 16)
    for variant in args.ours:
        steps[f"sb3_gitstorm {variant}"], lengths = ours_step_fn(variant, args)
    official = {"STORM": ("storm", args.storm_path), "GIT-STORM": ("gitstorm", args.gitstorm_path)}
    theirs = [label for label, (_, path) in official.items() if path]
    for label in theirs:
        name, path = official[label]
        steps[label] = official_step_fn(name, path, args, lengths)

    info = throughput.machine_info(th.device("cpu"))
    times = interleave(steps, args.warmup, args.repeats)
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    summary = summarise(times, [f"sb3_gitstorm {v}" for v in args.ours], theirs)
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", "benchmarks/official_speed.py", *argv])
    print_report(summary, info, command)
    report = {
        "machine": info,
        "command": command,
        "args": vars(args),
        "lengths": dict(zip(("batch_length", "imagine_context_length", "imagine_horizon"), lengths, strict=True)),
        "times": times,
        **summary,
    }
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
