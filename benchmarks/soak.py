"""Soak test: tiny GITSTORM training for many minutes with periodic checkpoint / reload and evaluation.

Examples::

    python benchmarks/soak.py --minutes 60 --out /tmp/soak
    python benchmarks/soak.py --minutes 5 --policies mlp --buffer-size 1000 --out /tmp/soak-short

Each policy (``cnn``: tiny CnnPolicy on 64x64 frames; ``mlp``: tiny MlpPolicy on CartPole-v1) trains
in its own single-threaded process for ``--minutes``, the processes side by side. Every
``--reload-every`` steps SB3's ``CheckpointCallback(save_replay_buffer=True)`` writes a checkpoint;
the worker then evaluates the policy on a separate environment and continues from that checkpoint
with the README's recipe (``GITSTORM.load`` + ``load_replay_buffer`` + ``learn(reset_num_timesteps=False)``),
dropping the old model. Every ``--sample-seconds`` it records its resident memory (``VmRSS``), the
steps done and the steps per second since the previous sample, as JSON lines in
``<out>/<policy>.jsonl`` (so an interrupted soak keeps what it measured).

At the end (or with ``--report-only``, from the JSON-lines files of an earlier run) ``<out>/soak.json``
holds per policy: resident memory at start, maximum and end; its growth once the replay buffer is
full, as the least-squares slope (MiB per 1k steps, and percent of the resident memory per 10k
steps) and from the highest value in each half of that period (robust to the allocator's swings);
steps per second over time and any error. ``<out>/soak.png`` plots memory and steps per second
against time. Linux only (``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from sb3_gitstorm import GITSTORM

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is in the zoo extra
    tqdm = None

POLICIES = {"cnn": "CnnPolicy", "mlp": "MlpPolicy"}
# Small batches: the soak is about memory and stability over many steps, not the paper's batch sizes.
HYPERPARAMS = dict(
    learning_starts=256,
    batch_size=8,
    batch_length=16,
    imagine_batch_size=32,
    imagine_context_length=4,
    imagine_horizon=8,
    learning_rate=3e-4,
    actor_learning_rate=3e-4,
    critic_learning_rate=3e-4,
    policy_kwargs=dict(size="tiny"),
)


def rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_env(policy: str, seed: int) -> VecEnv:
    if policy == "cnn":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from throughput import ImageEnv  # the throughput benchmark's 64x64 frames

        return make_vec_env(lambda: ImageEnv(max_steps=200), seed=seed)
    return make_vec_env("CartPole-v1", seed=seed)


class Sampler(BaseCallback):
    """Appends a memory / speed record every ``interval`` seconds and stops ``learn`` at ``deadline``."""

    def __init__(self, log: Any, interval: float, deadline: float, start: float) -> None:
        super().__init__()
        self.log, self.interval, self.deadline, self.start = log, interval, deadline, start
        self.last_time, self.last_steps = time.monotonic(), 0

    def record(self, event: str, **extra: Any) -> None:
        """Append a record; only ``sample`` records carry the steps per second since the previous record."""
        now = time.monotonic()
        steps = self.model.num_timesteps
        sps = (steps - self.last_steps) / (now - self.last_time) if event == "sample" else None
        full = bool(self.model.replay_buffer.full)
        row = dict(event=event, t=now - self.start, steps=steps, rss_mib=rss_mib(), sps=sps, buffer_full=full, **extra)
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()
        self.last_time, self.last_steps = now, steps

    def _on_training_start(self) -> None:
        self.last_time, self.last_steps = time.monotonic(), self.model.num_timesteps

    def _on_step(self) -> bool:
        if time.monotonic() - self.last_time >= self.interval:
            self.record("sample")
        return time.monotonic() < self.deadline


def worker(args: argparse.Namespace) -> None:
    """One policy's soak: train, checkpoint, evaluate, reload, until the time is up."""
    th.set_num_threads(1)
    out = Path(args.out)
    checkpoints = out / f"{args.worker}_checkpoints"
    start = time.monotonic()
    deadline = start + args.minutes * 60
    env, eval_env = make_env(args.worker, args.seed), make_env(args.worker, args.seed + 1)
    with open(out / f"{args.worker}.jsonl", "w") as log:
        sampler = Sampler(log, args.sample_seconds, deadline, start)
        try:
            model = GITSTORM(POLICIES[args.worker], env, buffer_size=args.buffer_size, seed=args.seed, **HYPERPARAMS)
            checkpoint = CheckpointCallback(args.reload_every, str(checkpoints), save_replay_buffer=True)
            sampler.init_callback(model)
            sampler.record("start")
            while time.monotonic() < deadline:
                model.learn(args.reload_every, callback=[checkpoint, sampler], reset_num_timesteps=False)
                if time.monotonic() >= deadline:
                    break
                paused = time.monotonic()
                mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes)
                steps = model.num_timesteps
                model = GITSTORM.load(checkpoints / f"rl_model_{steps}_steps.zip", env=env)
                model.load_replay_buffer(checkpoints / f"rl_model_replay_buffer_{steps}_steps.pkl")
                for path in checkpoints.iterdir():  # keep the disk flat too
                    path.unlink()
                for callback in (checkpoint, sampler):
                    callback.init_callback(model)
                gc.collect()  # free the old model now rather than at the collector's next full pass
                sampler.record("reload", eval_return=float(mean_return), seconds=time.monotonic() - paused)
            sampler.record("end")
        except Exception:
            log.write(json.dumps(dict(event="error", t=time.monotonic() - start, error=traceback.format_exc())) + "\n")
            raise


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory and speed figures of one policy's records."""
    samples = [r for r in rows if "rss_mib" in r]
    errors = [r["error"] for r in rows if r["event"] == "error"]
    if not samples:
        return dict(error=errors[0] if errors else "no records")
    rss = np.array([r["rss_mib"] for r in samples])
    full = [r for r in samples if r["buffer_full"]]
    summary: dict[str, Any] = dict(
        steps=samples[-1]["steps"],
        minutes=samples[-1]["t"] / 60,
        rss_start_mib=rss[0],
        rss_max_mib=rss.max(),
        rss_end_mib=rss[-1],
        reloads=sum(r["event"] == "reload" for r in rows),
        reload_seconds_max=max((r["seconds"] for r in rows if r["event"] == "reload"), default=None),
        eval_returns=[r["eval_return"] for r in rows if r["event"] == "reload"],
        error=errors[0] if errors else None,
    )
    if len(full) >= 2 and full[-1]["steps"] > full[0]["steps"]:
        steps = np.array([r["steps"] for r in full], dtype=float)
        full_rss = np.array([r["rss_mib"] for r in full])
        slope = np.polyfit(steps / 1000, full_rss, 1)[0]
        # The allocator keeps freed memory for a while, so resident memory swings between samples; the
        # highest value in each half of the run after the fill shows whether it settles or keeps climbing.
        later = steps > (steps[0] + steps[-1]) / 2
        high_water = [float(full_rss[~later].max()), float(full_rss[later].max())]
        summary.update(
            buffer_full_at_steps=full[0]["steps"],
            buffer_full_at_minutes=full[0]["t"] / 60,
            rss_at_full_mib=full[0]["rss_mib"],
            growth_after_full_mib_per_1k_steps=slope,
            growth_after_full_percent_per_10k_steps=100 * 10 * slope / full[0]["rss_mib"],
            rss_max_after_full_halves_mib=high_water,
            # the halves' middles are half the period apart
            high_water_growth_percent_per_10k_steps=100 * (high_water[1] / high_water[0] - 1) * 2e4 / (steps[-1] - steps[0]),
        )
    speeds = [(r["t"], r["sps"]) for r in samples if r["sps"] is not None]
    if speeds:
        tenth = max(len(speeds) // 10, 1)
        values = [s for _, s in speeds]
        summary.update(
            sps_first_tenth=float(np.mean(values[:tenth])),
            sps_median=float(np.median(values)),
            sps_last_tenth=float(np.mean(values[-tenth:])),
        )
    return summary


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, speed) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for policy, rows in results.items():
        samples = [r for r in rows if "rss_mib" in r]
        minutes = [r["t"] / 60 for r in samples]
        (line,) = memory.plot(minutes, [r["rss_mib"] for r in samples], label=POLICIES[policy])
        full = next((r["t"] / 60 for r in samples if r["buffer_full"]), None)
        if full is not None:
            memory.axvline(full, color=line.get_color(), linestyle=":", linewidth=1)
        speed.plot([r["t"] / 60 for r in samples if r["sps"] is not None], [r["sps"] for r in samples if r["sps"] is not None])
    memory.set_ylabel("resident memory (MiB)")
    memory.set_title("GITSTORM soak (dotted: replay buffer full)")
    memory.legend()
    speed.set_ylabel("env steps / s")
    speed.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_workers(args: argparse.Namespace, out: Path) -> dict[str, int]:
    """Run one worker process per policy, with a progress bar; their exit codes."""
    command = [sys.executable, __file__, "--minutes", str(args.minutes), "--out", str(out), "--seed", str(args.seed)]
    options = ["--buffer-size", args.buffer_size, "--reload-every", args.reload_every]
    options += ["--sample-seconds", args.sample_seconds, "--eval-episodes", args.eval_episodes]
    workers = {
        policy: subprocess.Popen([*command, *map(str, options), "--worker", policy], stdout=subprocess.DEVNULL)
        for policy in args.policies
    }
    bar = tqdm(total=round(args.minutes * 60), unit="s", file=sys.stderr, disable=tqdm is None or args.no_progress)
    start = time.monotonic()
    while any(w.poll() is None for w in workers.values()):
        time.sleep(1)
        bar.n = min(round(time.monotonic() - start), bar.total)
        last = {p: read_rows(out / f"{p}.jsonl")[-1:] for p in workers}
        bar.set_postfix({p: f"{r[0].get('steps', '?')} steps {r[0].get('rss_mib', 0):.0f} MiB" for p, r in last.items() if r})
        bar.refresh()
    bar.close()
    return {policy: w.returncode for policy, w in workers.items()}


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exit_codes = {} if args.report_only else run_workers(args, out)
    results = {policy: read_rows(out / f"{policy}.jsonl") for policy in args.policies}
    report = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        torch=th.__version__,
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        settings=dict(vars(args), hyperparams=HYPERPARAMS),
        policies={policy: summarize(rows) for policy, rows in results.items()},
        exit_codes=exit_codes,
    )
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=float))
    plot(results, out / "soak.png")
    for policy, summary in report["policies"].items():
        print(policy, json.dumps({k: v for k, v in summary.items() if k != "eval_returns"}, default=float))
    return int(any(code != 0 for code in exit_codes.values()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="training time of each policy")
    parser.add_argument("--out", default="soak", help="output folder")
    parser.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=["cnn", "mlp"])
    parser.add_argument("--buffer-size", type=int, default=1000, help="replay capacity: small, so that it fills early")
    parser.add_argument("--reload-every", type=int, default=1000, help="steps between checkpoint / evaluation / reload")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from <out>/<policy>.jsonl")
    parser.add_argument("--worker", choices=sorted(POLICIES), help=argparse.SUPPRESS)  # internal: run one policy
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        sys.exit(main(arguments))
