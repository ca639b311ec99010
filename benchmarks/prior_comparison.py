"""GIT-STORM against STORM: the MaskGIT prior and the MLP prior on the same tasks, seeds and budgets.

Every task x variant x seed trains one GITSTORM model (``prior="maskgit"`` with the library's defaults,
the released code's ``maskgit_schedule="reference"``, ``prior="mlp"``, on CartPole MaskGIT's own
``"cosine"`` schedule; ``--variants maskgit-draft4`` adds MaskGIT decoding in 4 chunks), then measures on held-out
episodes of a uniformly random policy, the same episodes for every model of a task:

- the all-token ``KL(posterior || prior)`` of the prior as imagination samples it, per imagined step
  (step 1 is the teacher-forced one-step KL), and the prior's perplexity
  (:class:`sb3_gitstorm.world_model_metrics.OpenLoopEvaluator`; exact for the one-pass priors, an upper bound
  for ``maskgit-draft4``: the record's ``kl_kind``);
- the open-loop observation error (frames: MSE in [0, 1] pixels; vectors: MSE in observation units)
  over a 16-step horizon with the real actions;
- the final evaluation return (SB3's ``evaluate_policy``, deterministic actions);

and the training curve of ``world_model/imagination_kl``. It reports the mean and the 95% confidence
interval (Student t) over seeds in ``summary.md`` / ``results.json`` and draws ``priors.png`` (KL and
open-loop error per horizon step, one line per variant). Runs are resumable: finished runs are kept in
``<out>/runs/<task>/<variant>/seed<k>.json``, next to the trained model (``seed<k>.zip``).

    python benchmarks/prior_comparison.py --out runs/priors --workers 2
    python benchmarks/prior_comparison.py --out runs/priors --tasks cartpole --seeds 0 --budget-scale 0.1   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from scipy import stats
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from tqdm import tqdm

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.priors import DecodeSchedule, MaskGITPrior
from sb3_gitstorm.world_model_metrics import Episode, OpenLoopEvaluator, collect_episode, gather_windows, window_starts

CONTEXT, HORIZON = 8, 16

# 32 x 32 latents (as at the paper's size) on networks small enough for a CPU.
MODEL = dict(
    size="tiny",
    latent_tokens=32,
    latent_classes=32,
    hidden_dim=128,
    transformer_heads=4,
    transformer_ffn=256,
    head_hidden=64,
    mlp_hidden=128,
    maskgit_dim=32,
    maskgit_layers=2,
    maskgit_heads=2,
    maskgit_ffn=64,
    ac_hidden=64,
)
AGENT = dict(
    learning_rate=3e-4,
    actor_learning_rate=3e-4,
    critic_learning_rate=3e-4,
    learning_starts=512,
    batch_size=16,
    batch_length=32,
    imagine_batch_size=128,
    train_freq=4,  # one update per 4 environment steps (the paper's DMC code: one per 16)
)
TASKS: dict[str, dict[str, Any]] = {
    "jumpingdot": dict(
        label="JumpingDot (pixels, stochastic)",
        env="gitstorm/JumpingDot-v0",
        policy="CnnPolicy",
        budget=2000,
        model=dict(image_size=32),
        held_out=8,
        variants=("maskgit", "maskgit-reference", "mlp"),
    ),
    "cartpole": dict(
        label="CartPole-v1",
        env="CartPole-v1",
        policy="MlpPolicy",
        budget=2000,
        model={},
        held_out=300,
        variants=("maskgit", "maskgit-reference", "mlp", "maskgit-cosine"),
    ),
    "dmc-cartpole-balance": dict(
        label="DMC cartpole-balance (state)",
        env="gitstorm/dmc-cartpole-balance-proprio-v0",
        policy="MlpPolicy",
        budget=2000,
        model={},
        held_out=4,
        variants=("maskgit", "maskgit-reference", "mlp"),
    ),
}
VARIANTS: dict[str, dict[str, Any]] = {
    "maskgit": dict(prior="maskgit"),
    "maskgit-reference": dict(prior="maskgit", model=dict(maskgit_schedule="reference")),
    "maskgit-cosine": dict(prior="maskgit", model=dict(maskgit_schedule="cosine")),
    "mlp": dict(prior="mlp"),
    "maskgit-draft4": dict(prior="maskgit", draft_steps=4, revise_rounds=0),
}


class ImaginationKL(BaseCallback):
    """Records ``world_model/imagination_kl`` every ``every`` environment steps (the value of the last update)."""

    def __init__(self, every: int = 250) -> None:
        super().__init__()
        self.every, self.curve = every, []

    def _on_step(self) -> bool:
        value = self.model.logger.name_to_value.get("world_model/imagination_kl")
        if self.num_timesteps % self.every == 0 and value is not None:
            self.curve.append((self.num_timesteps, float(value)))
        return True


def held_out_episodes(task_name: str) -> list[Episode]:
    """Episodes of a uniformly random policy, the same for every model of the task (seeded by index only)."""
    env = gym.make(TASKS[task_name]["env"])
    return [collect_episode(env, None, 20_000 + i) for i in range(TASKS[task_name]["held_out"])]


def run(task_name: str, variant_name: str, seed: int, budget_scale: float, path: Path) -> dict[str, Any]:
    """Train one model, evaluate it, write ``path`` (JSON) and return the record."""
    th.set_num_threads(1)
    task, variant = TASKS[task_name], VARIANTS[variant_name]
    budget = int(task["budget"] * budget_scale)
    started = time.perf_counter()
    model = GITSTORM(
        task["policy"],
        gym.make(task["env"]),
        prior=variant["prior"],
        draft_steps=variant.get("draft_steps", 1),
        revise_rounds=variant.get("revise_rounds", 1),
        policy_kwargs={**MODEL, **task["model"], **variant.get("model", {})},
        seed=seed,
        **{**AGENT, "learning_starts": min(AGENT["learning_starts"], budget // 2)},
    )
    curve = ImaginationKL()
    model.learn(budget, callback=curve)
    train_seconds = time.perf_counter() - started

    eval_env = Monitor(gym.make(task["env"]))
    eval_env.reset(seed=10_000 + seed)
    mean_return, std_return = evaluate_policy(model, eval_env, n_eval_episodes=10)

    episodes = held_out_episodes(task_name)
    evaluator = OpenLoopEvaluator(model, CONTEXT, HORIZON, samples=1)
    th.manual_seed(seed)
    evaluator.add_episodes(episodes, stride=4)
    metrics = evaluator.summary()
    record = dict(
        task=task_name,
        variant=variant_name,
        seed=seed,
        steps=budget,
        train_seconds=train_seconds,
        final_return=float(mean_return),
        final_return_std=float(std_return),
        imagination_kl_curve=curve.curve,
        windows=metrics["windows"],
        kl=metrics["prior_kl"],
        kl_per_step=metrics["prior_kl_per_step"],
        kl_kind=metrics["prior_kl_kind"],
        **{key: metrics[key] for key in ("mse", "mse_per_step", "prior_perplexity", "reconstruction_mse")},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path.with_suffix(".zip"))  # for later looks at the model (world_model_eval.py takes it)
    path.write_text(json.dumps(record) + "\n")
    return record


def _run(job: tuple[str, str, int, float, Path]) -> dict[str, Any]:
    return run(*job)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% Student-t confidence interval (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


COLUMNS = [
    ("all-token KL ↓ (nats)", "kl"),
    ("one-step KL ↓", "kl_step1"),
    ("prior perplexity", "prior_perplexity"),
    ("open-loop MSE ↓ (16 steps)", "mse"),
    ("reconstruction MSE", "reconstruction_mse"),
    ("final return ↑", "final_return"),
    ("train minutes", "train_minutes"),
]


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and variant: mean and CI of every column, the per-step curves and the seeds."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        r = {**r, "kl_step1": r["kl_per_step"][0], "train_minutes": r["train_seconds"] / 60}
        entry = summary.setdefault(r["task"], {}).setdefault(r["variant"], {"seeds": [], "steps": set(), "rows": []})
        entry["seeds"].append(r["seed"])
        entry["steps"].add(r["steps"])
        entry["rows"].append(r)
    for variants in summary.values():
        for entry in variants.values():
            rows = entry.pop("rows")
            entry["steps"] = sorted(entry["steps"])  # one value unless runs of other budgets were mixed
            for _, key in COLUMNS:
                entry[key] = mean_ci([row[key] for row in rows])
            for key in ("kl_per_step", "mse_per_step"):
                steps = np.array([row[key] for row in rows], dtype=np.float64)
                entry[key] = [mean_ci(list(steps[:, k])) for k in range(steps.shape[1])]
    return summary


def markdown(summary: dict[str, Any], header: str) -> str:
    lines = [header, ""]
    for task, variants in summary.items():
        steps = sorted({n for entry in variants.values() for n in entry["steps"]})
        lines += [f"### {TASKS[task]['label']}, {' / '.join(map(str, steps))} steps", ""]
        lines.append("| variant | seeds | " + " | ".join(label for label, _ in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 2) + "|")
        for name, entry in variants.items():
            cells = [f"{m:.4g} ± {ci:.2g}" for m, ci in (entry[key] for _, key in COLUMNS)]
            lines.append(f"| {name} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Mean ± half-width of the 95% confidence interval (Student t) over seeds.")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    """KL and open-loop error per horizon step (one row per task), mean and 95% CI band per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summary), 2, figsize=(10, 3.2 * len(summary)), squeeze=False)
    for row, (task, variants) in enumerate(summary.items()):
        for col, (key, label) in enumerate((("kl_per_step", "all-token KL (nats)"), ("mse_per_step", "open-loop MSE"))):
            ax = axes[row, col]
            for name, entry in variants.items():
                mean, ci = (np.array(v) for v in zip(*entry[key], strict=True))
                steps = np.arange(1, len(mean) + 1)
                ax.plot(steps, mean, label=name)
                ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
            ax.set_title(f"{TASKS[task]['label']}: {label}", fontsize=9)
            ax.set_xlabel("imagined step")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Decoding schedules whose one-step KL shows what a MaskGIT prior learned: all tokens in one pass (exact), and
# drafts of D chunks, each given the earlier ones (upper bounds over decoding orders): a prior that uses the
# tokens it sees has a lower KL the more chunks it decodes in. Revise rounds have no KL (kl_kind).
DIAGNOSTIC_SCHEDULES = {
    "all masked (1/1/1)": DecodeSchedule(1, 1, 1),
    "draft 4 chunks": DecodeSchedule(4, 1, 0),
    "draft 1 token at a time": DecodeSchedule(MODEL["latent_tokens"], 1, 0),
}


DIAGNOSTIC_WINDOWS = 512  # held-out windows per task: enough for three significant digits


def diagnose(out: Path, tasks: list[str]) -> str:
    """The all-token one-step KL (held-out windows) of every saved model under the schedules
    of :data:`DIAGNOSTIC_SCHEDULES`: what each training schedule taught the prior, mean over seeds."""
    header = "| task | variant | seeds | " + " | ".join(DIAGNOSTIC_SCHEDULES) + " |"
    lines = [header, "|---" * (len(DIAGNOSTIC_SCHEDULES) + 3) + "|"]
    for task in tasks:
        episodes = held_out_episodes(task)
        starts = window_starts(episodes, CONTEXT, 1, stride=4)[:DIAGNOSTIC_WINDOWS]
        results: dict[str, dict[str, list[float]]] = {}
        for path in tqdm(sorted((out / "runs" / task).glob("*/seed*.zip")), desc=f"diagnose {task}"):
            model = GITSTORM.load(path, device="cpu")
            prior = model.policy.world_model.prior
            for label, decode in DIAGNOSTIC_SCHEDULES.items():
                if isinstance(prior, MaskGITPrior):
                    prior.decode = decode
                elif decode != DecodeSchedule():
                    continue  # the MLP prior has one schedule
                evaluator = OpenLoopEvaluator(model, CONTEXT, 1)
                th.manual_seed(0)
                for i in range(0, len(starts), 256):
                    evaluator.add(gather_windows(episodes, starts[i : i + 256], CONTEXT, 1))
                results.setdefault(path.parent.name, {}).setdefault(label, []).append(evaluator.summary()["prior_kl"])
        for variant, columns in results.items():
            cells = [f"{np.mean(columns[label]):.3g}" if label in columns else "–" for label in DIAGNOSTIC_SCHEDULES]
            seeds = len(columns[next(iter(DIAGNOSTIC_SCHEDULES))])
            lines.append(f"| {TASKS[task]['label']} | {variant} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None, help="default: each task's own")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every task's environment steps")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--diagnose", action="store_true", help="only the one-step KL of the saved models per schedule")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    if args.diagnose:
        th.set_num_threads(1)
        table = diagnose(out, args.tasks)
        (out / "diagnostics.md").write_text(table)
        print(table)
        return {}
    jobs, records = [], []
    for task in args.tasks:
        for variant in args.variants or TASKS[task]["variants"]:
            for seed in args.seeds:
                path = out / "runs" / task / variant / f"seed{seed}.json"
                if path.exists():
                    records.append(json.loads(path.read_text()))
                else:
                    jobs.append((task, variant, seed, args.budget_scale, path))
    # Longest first (images), so that the last worker does not start the slowest run alone.
    jobs.sort(key=lambda job: TASKS[job[0]]["policy"] != "CnnPolicy")
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for record in tqdm(pool.imap_unordered(_run, jobs), total=len(jobs), desc="runs"):
            records.append(record)
    summary = summarise(records)
    header = (
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, torch {th.__version__}, "
        f"command: `python benchmarks/prior_comparison.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
    )
    (out / "results.json").write_text(json.dumps({"header": header, "summary": summary, "runs": records}, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary, header))
    plot(summary, out / "priors.png")
    print(markdown(summary, header))
    return summary


if __name__ == "__main__":
    main()
