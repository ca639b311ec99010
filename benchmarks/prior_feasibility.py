"""GIT-STORM's claim, measured: does a MaskGIT prior imagine fewer infeasible states than STORM's MLP prior?

The task is JumpingDot (:class:`sb3_gitstorm.envs.toy.JumpingDotEnv`) on a small grid: every step the dot
jumps to one of ``outcomes`` cells with equal probability, so the next frame has ``outcomes`` modes, and
:meth:`~sb3_gitstorm.envs.toy.JumpingDotEnv.feasible` tells from a decoded frame whether it shows exactly
one dot where the dynamics allow it. An MLP prior samples the latent tokens independently given ``h_t``
(so does MaskGIT decoded in one all-``[MASK]`` pass, the paper's 1/1/1); MaskGIT decoding in several
chunks conditions later tokens on earlier ones.

Every world model (a GITSTORM model's world model, trained alone) learns *offline* from ONE fixed
dataset of uniformly random episodes per ``outcomes``, for the same number of updates, so the comparison
isolates the prior. Then, on held-out episodes (:class:`~sb3_gitstorm.world_model_metrics.FeasibilityEvaluator`,
open loop with the real actions):

- feasible-state rate of the imagined frames (each given the frame before it in its rollout) and the
  share of rollouts feasible throughout, per imagined step; the rate of the world model's own
  reconstructions of the real frames is the ceiling;
- open-loop frame MSE, the reconstruction MSE against that of an empty (background-only) frame (does the
  model draw the dot at all?), the KL and prior perplexity as ``OpenLoopEvaluator`` reports them;
- imagination time per step relative to the MLP prior (all models of an ``outcomes`` timed in turn on
  the same batch, after the sweep).

Runs are resumable: ``<out>/runs/o<outcomes>/<model>/seed<k>.zip`` (the trained model) and ``.json``
(its evaluation). ``--eval-only`` re-evaluates the saved models (e.g. after a change of the metrics).

    python benchmarks/prior_feasibility.py --out benchmarks/results/prior-feasibility --workers 1
    python benchmarks/prior_feasibility.py --out /tmp/feas --outcomes 4 --seeds 0 --variants mlp maskgit-draft4 \\
        --updates 20 --episodes 4 --held-out 1        # a smoke run (seconds)
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

# Run against this checkout (and import the shared helpers of benchmarks/prior_comparison.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch as th
from tqdm import tqdm

from benchmarks.prior_comparison import mean_ci
from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs.toy import JumpingDotEnv
from sb3_gitstorm.priors import DecodeSchedule, MaskGITPrior
from sb3_gitstorm.world_model_metrics import Episode, FeasibilityEvaluator, collect_episode, gather_windows, window_starts

# 16 x 16 frames, a 4 x 4 grid: the dot is a 4 x 4 block, and a jump of one cell moves all of it.
ENV = dict(size=16, cells=4, jump=1, max_steps=100)
CONTEXT, HORIZON, SAMPLES = 4, 4, 4
BATCH, LENGTH = 16, 8  # windows per update, steps per window (the task is Markov: a short context suffices)
MODEL = dict(
    size="tiny",
    image_size=16,
    latent_tokens=16,
    latent_classes=16,
    cnn_channels=(16, 32),
    hidden_dim=64,
    transformer_heads=2,
    transformer_ffn=128,
    head_hidden=32,
    maskgit_dim=32,
    maskgit_layers=2,
    maskgit_heads=2,
    maskgit_ffn=64,
    max_length=LENGTH,
)
LEARNING_RATE = 1e-3

# name -> the prior it trains (``train``: a model shared with another variant), its training schedule and
# its decoding in imagination (draft_steps, revise_steps, revise_rounds).
VARIANTS: dict[str, dict[str, Any]] = {
    "mlp": dict(prior="mlp", decode=(1, 1, 1)),
    "maskgit": dict(prior="maskgit", decode=(1, 1, 1)),
    **{f"maskgit-draft{d}": dict(prior="maskgit", decode=(d, 1, 0)) for d in (2, 4, 8)},
    **{f"maskgit-draft{d}-revise": dict(prior="maskgit", decode=(d, d, 1)) for d in (2, 4, 8)},
    "maskgit-cosine-draft8": dict(prior="maskgit", schedule="cosine", decode=(8, 1, 0), train="maskgit-cosine"),
    "maskgit-cosine-draft8-revise": dict(prior="maskgit", schedule="cosine", decode=(8, 8, 1), train="maskgit-cosine"),
}
# The first variant of each shared model trains it; the others load it.
SHARING = {
    name
    for name, v in VARIANTS.items()
    if "train" in v and name != next(n for n, w in VARIANTS.items() if w.get("train") == v["train"])
}


def make_env(outcomes: int) -> JumpingDotEnv:
    return JumpingDotEnv(**ENV, outcomes=outcomes)


def dataset(outcomes: int, episodes: int, first_seed: int) -> list[Episode]:
    """Uniformly random episodes, each seeded by its index: the same for every model."""
    env = make_env(outcomes)
    return [collect_episode(env, None, first_seed + i) for i in range(episodes)]


def train_seed(outcomes: int) -> int:
    return 1_000 * outcomes


def held_out_seed(outcomes: int) -> int:
    return 1_000 * outcomes + 500


def new_model(variant: dict[str, Any], outcomes: int, seed: int) -> GITSTORM:
    """A GITSTORM model whose world model the sweep trains (its replay buffer and actor-critic stay unused)."""
    draft, revise, rounds = variant["decode"]
    return GITSTORM(
        "CnnPolicy",
        make_env(outcomes),
        learning_rate=LEARNING_RATE,
        buffer_size=LENGTH,
        learning_starts=0,
        batch_size=BATCH,
        batch_length=LENGTH,
        imagine_batch_size=BATCH,
        imagine_context_length=CONTEXT,
        imagine_horizon=HORIZON,
        prior=variant["prior"],
        draft_steps=draft,
        revise_steps=revise,
        revise_rounds=rounds,
        policy_kwargs={**MODEL, "maskgit_schedule": variant.get("schedule", "decode")},
        seed=seed,
        device="cpu",
    )


def train(variant: dict[str, Any], outcomes: int, seed: int, updates: int, episodes: list[Episode]) -> tuple[GITSTORM, list]:
    """``updates`` world-model updates on windows drawn uniformly from ``episodes``; returns the model and a
    loss curve ``[(update, reconstruction, kl, imagination_kl)]``."""
    model = new_model(variant, outcomes, seed)
    world_model, optimizer = model.policy.world_model.train(), model.policy.world_model_optimizer
    # Channel-first frames, as the world model takes them.
    obs = th.as_tensor(np.stack([e.observations[:-1] for e in episodes])).permute(0, 1, 4, 2, 3).contiguous()
    actions = th.as_tensor(np.stack([e.actions for e in episodes]), dtype=th.long)
    rewards = th.as_tensor(np.stack([e.rewards for e in episodes]))
    rng = np.random.default_rng(seed)
    curve = []
    for update in tqdm(range(updates), desc=f"o{outcomes} seed {seed}", leave=False, mininterval=30):
        rows = th.as_tensor(rng.integers(0, len(episodes), BATCH))
        starts = rng.integers(0, obs.shape[1] - LENGTH + 1, BATCH)
        steps = th.as_tensor(starts[:, None] + np.arange(LENGTH))
        episode_starts = th.zeros(BATCH, LENGTH, dtype=th.bool)
        episode_starts[:, 0] = th.as_tensor(starts == 0)
        loss = world_model.loss(
            obs[rows[:, None], steps], actions[rows[:, None], steps], rewards[rows[:, None], steps],
            th.zeros(BATCH, LENGTH), episode_starts,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        th.nn.utils.clip_grad_norm_(world_model.parameters(), model.world_model_max_grad_norm)
        optimizer.step()
        if update % 100 == 0 or update == updates - 1:
            logs = loss.logs()
            curve.append((update, logs["reconstruction_loss"], logs["kl"], logs.get("imagination_kl", float("nan"))))
    world_model.eval()
    return model, curve


def set_decode(model: GITSTORM, decode: tuple[int, int, int]) -> None:
    """Decode with ``decode`` in imagination (a model trained once, evaluated under several decodings)."""
    prior = model.policy.world_model.prior
    if isinstance(prior, MaskGITPrior):
        prior.decode = DecodeSchedule(*decode)


def evaluate(model: GITSTORM, outcomes: int, held_out: list[Episode], seed: int) -> dict[str, Any]:
    """Open-loop metrics and feasibility on the held-out windows, and the error of an empty frame."""
    env = make_env(outcomes)
    evaluator = FeasibilityEvaluator(model, CONTEXT, HORIZON, env.feasible, samples=SAMPLES)
    th.manual_seed(seed)
    evaluator.add_episodes(held_out, stride=HORIZON)
    metrics = evaluator.summary()
    # The error of a frame without the dot: a model whose reconstructions do no better has not learnt the dot.
    background = env._background().astype(np.float32) / 255.0
    frames = np.stack([e.observations for e in held_out]).astype(np.float32) / 255.0
    keys = ("feasible", "feasible_rollout", "reconstruction_feasible", "mse", "prior_kl", "prior_perplexity")
    return dict(
        windows=metrics["windows"],
        prior_kl_kind=metrics["prior_kl_kind"],
        empty_frame_mse=float(((frames - background) ** 2).mean()),
        reconstruction_mse=metrics["reconstruction_mse"],
        **{key: metrics[key] for key in keys},
        **{f"{key}_per_step": metrics[f"{key}_per_step"] for key in keys if key != "prior_perplexity"},
    )


def run(job: tuple[str, int, int, int, int, int, Path, bool]) -> dict[str, Any]:
    """Train (unless saved) and evaluate one variant; writes ``<path>.json`` and returns the record.

    ``job``: variant, outcomes, seed, updates, training episodes, held-out episodes, output folder, eval only."""
    name, outcomes, seed, updates, episodes, held_out_episodes, out, eval_only = job
    th.set_num_threads(1)
    variant = VARIANTS[name]
    folder = out / "runs" / f"o{outcomes}"
    model_path = folder / variant.get("train", name) / f"seed{seed}.zip"
    train_path = model_path.with_suffix(".train.json")
    if model_path.exists():
        model = GITSTORM.load(model_path, device="cpu")
        training = json.loads(train_path.read_text())
    elif eval_only:
        raise FileNotFoundError(f"--eval-only: no saved model {model_path}")
    else:
        started = time.process_time()
        model, curve = train(variant, outcomes, seed, updates, dataset(outcomes, episodes, train_seed(outcomes)))
        training = dict(updates=updates, episodes=episodes, train_cpu_seconds=time.process_time() - started, curve=curve)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        train_path.write_text(json.dumps(training) + "\n")
    set_decode(model, variant["decode"])
    started = time.process_time()
    held_out = dataset(outcomes, held_out_episodes, held_out_seed(outcomes))
    record = dict(
        variant=name,
        outcomes=outcomes,
        seed=seed,
        decode=variant["decode"],
        updates=training["updates"],
        train_cpu_seconds=training["train_cpu_seconds"],
        final_reconstruction_loss=training["curve"][-1][1],
        **evaluate(model, outcomes, held_out, seed),
    )
    record["eval_cpu_seconds"] = time.process_time() - started
    path = folder / name / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n")
    return record


TIMING_BATCH, TIMING_REPEATS = 256, 5


def imagination_times(out: Path, outcomes: int, names: list[str], seeds: list[int]) -> dict[str, float]:
    """Seconds per imagined step of a batch of :data:`TIMING_BATCH` states, per variant: the minimum over
    :data:`TIMING_REPEATS` rounds that time every saved model in turn on the same batch (one thread), averaged
    over the seeds."""
    th.set_num_threads(1)
    models = {}
    for name in names:
        for seed in seeds:
            path = out / "runs" / f"o{outcomes}" / VARIANTS[name].get("train", name) / f"seed{seed}.zip"
            if path.exists():
                model = GITSTORM.load(path, device="cpu")
                set_decode(model, VARIANTS[name]["decode"])
                models[(name, seed)] = model.policy.world_model.eval()
    batch, rng = TIMING_BATCH, np.random.default_rng(0)
    tokens = th.as_tensor(rng.integers(0, MODEL["latent_classes"], (batch, CONTEXT, MODEL["latent_tokens"])))
    actions = th.as_tensor(rng.integers(0, 3, (batch, CONTEXT - 1 + HORIZON)))
    starts = th.zeros(batch, CONTEXT, dtype=th.bool)
    best = {key: float("inf") for key in models}
    with th.no_grad():
        for _ in range(TIMING_REPEATS):
            for key, world_model in models.items():
                start = world_model.observe(tokens, actions[:, : CONTEXT - 1], starts, HORIZON)
                began = time.perf_counter()
                world_model.dream(start, HORIZON, actions[:, CONTEXT - 1 :])
                best[key] = min(best[key], (time.perf_counter() - began) / HORIZON)
    return {name: float(np.mean([t for (n, _), t in best.items() if n == name])) for name in names if (name, seeds[0]) in best}


COLUMNS = [
    ("feasible 1 step ↑", "feasible_step1"),
    (f"feasible {HORIZON} steps ↑", "feasible_rollout_last"),
    ("recon. feasible (ceiling)", "reconstruction_feasible"),
    ("one-step KL (nats)", "kl_step1"),
    (f"KL over {HORIZON} steps", "prior_kl"),
    (f"open-loop MSE ({HORIZON} steps)", "mse"),
    ("recon. MSE / empty", "reconstruction_vs_empty"),
    ("prior perplexity", "prior_perplexity"),
]


def summarise(records: list[dict[str, Any]], times: dict[int, dict[str, float]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per outcomes and variant: mean and 95% CI over seeds of every column, the per-step curves, the time ratio."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["outcomes"], list(VARIANTS).index(r["variant"]), r["seed"])):
        row = {
            **r,
            "feasible_step1": r["feasible_per_step"][0],
            "kl_step1": (r["prior_kl_per_step"] or [None])[0],
            "feasible_rollout_last": r["feasible_rollout_per_step"][-1],
            "reconstruction_vs_empty": r["reconstruction_mse"] / r["empty_frame_mse"],
        }
        entry = summary.setdefault(f"o{r['outcomes']}", {}).setdefault(r["variant"], {"seeds": [], "rows": []})
        entry["seeds"].append(r["seed"])
        entry["rows"].append(row)
    for key, variants in summary.items():
        step_times = times.get(int(key[1:]), {})
        for name, entry in variants.items():
            rows = entry.pop("rows")
            entry["decode"] = rows[0]["decode"]
            entry["updates"] = sorted({row["updates"] for row in rows})
            for _, column in COLUMNS:
                values = [row[column] for row in rows]
                entry[column] = None if None in values else mean_ci(values)  # no KL for revise decodings
            entry["prior_kl_kind"] = rows[0]["prior_kl_kind"]
            for column in ("feasible_per_step", "feasible_rollout_per_step", "mse_per_step", "prior_kl_per_step"):
                if any(row[column] is None for row in rows):
                    entry[column] = None
                    continue
                steps = np.array([row[column] for row in rows], dtype=np.float64)
                entry[column] = [mean_ci(list(steps[:, k])) for k in range(steps.shape[1])]
            entry["seconds_per_step"] = step_times.get(name)
            entry["time_ratio"] = step_times[name] / step_times["mlp"] if name in step_times and "mlp" in step_times else None
    return summary


def markdown(summary: dict[str, Any], header: str) -> str:
    lines = [header, ""]
    for key, variants in summary.items():
        updates = sorted({n for entry in variants.values() for n in entry["updates"]})
        lines += [f"### JumpingDot, {key[1:]} outcomes, {' / '.join(map(str, updates))} updates", ""]
        lines.append(
            "| variant | decode (draft/revise/rounds) | seeds | " + " | ".join(c for c, _ in COLUMNS) + " | KL is | time / MLP |"
        )
        lines.append("|---" * (len(COLUMNS) + 5) + "|")
        for name, entry in variants.items():
            cells = ["n/a" if entry[column] is None else "{:.3g} ± {:.2g}".format(*entry[column]) for _, column in COLUMNS]
            ratio = "–" if entry["time_ratio"] is None else f"{entry['time_ratio']:.2f}"
            decode = "/".join(map(str, entry["decode"]))
            cells += [entry["prior_kl_kind"], ratio]
            lines.append(f"| {name} | {decode} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Mean ± half-width of the 95% confidence interval (Student t) over seeds. Feasible: the imagined frame shows "
        "one clean dot at a cell the dynamics allow after the frame before it (1 step: after the last real frame; "
        f"{HORIZON} steps: every frame of the rollout). Recon. feasible: the same for the reconstructions of the real "
        "frames. KL: the all-token KL(posterior || the distribution imagination samples), as OpenLoopEvaluator reports "
        "it (one step: teacher-forced from the real context): exact for one-pass decodings, an upper bound (log-mean-exp "
        "over 32 decoding orders) for drafts without revise rounds, n/a with revise rounds (no tractable likelihood of "
        "their samples: the feasible rates are the measure there). Recon. MSE / empty: reconstruction error over the "
        "error of a frame without the dot."
    )
    return "\n".join(lines) + "\n"


def plot_rates(summary: dict[str, Any], path: Path) -> None:
    """Feasible-state rates per variant (1 imagined step, whole rollouts, reconstructions), mean and 95% CI, one panel
    per ``outcomes``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = (("feasible_step1", "1 imagined step"), ("feasible_rollout_last", f"{HORIZON}-step rollouts"))
    fig, axes = plt.subplots(1, len(summary), figsize=(6.5 * len(summary), 3.6), squeeze=False)
    for ax, (key, variants) in zip(axes[0], summary.items(), strict=True):
        names = list(variants)
        x = np.arange(len(names))
        for i, (column, label) in enumerate(bars):
            mean, ci = (np.array(v) for v in zip(*(variants[n][column] for n in names), strict=True))
            ax.bar(x + (i - 0.5) * 0.4, mean, 0.4, yerr=ci, capsize=2, label=label)
        ceiling = [variants[n]["reconstruction_feasible"][0] for n in names]
        ax.plot(x, ceiling, "k_", markersize=14, label="reconstructions (ceiling)")
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.3)  # room for the legend above the bars
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("feasible imagined frames")
        ax.set_title(f"JumpingDot, {key[1:]} outcomes", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(out: Path, outcomes_list: list[int], names: list[str], seed: int, path: Path, samples: int = 8) -> None:
    """Imagined next frames per variant for one held-out window per ``outcomes``: the real next frame, the
    reconstruction, then ``samples`` prior samples framed green (feasible) or red (infeasible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(names), len(outcomes_list), figsize=(1.0 * (samples + 2) * len(outcomes_list), 1.05 * len(names) + 0.6), squeeze=False
    )
    for col, outcomes in enumerate(outcomes_list):
        env = make_env(outcomes)
        held_out = dataset(outcomes, 1, held_out_seed(outcomes))
        window = gather_windows(held_out, window_starts(held_out, CONTEXT, 1, stride=1)[5:6], CONTEXT, 1)
        for row, name in enumerate(names):
            ax = axes[row, col]
            ax.axis("off")
            model_path = out / "runs" / f"o{outcomes}" / VARIANTS[name].get("train", name) / f"seed{seed}.zip"
            if not model_path.exists():
                continue
            model = GITSTORM.load(model_path, device="cpu")
            set_decode(model, VARIANTS[name]["decode"])
            evaluator = FeasibilityEvaluator(model, CONTEXT, 1, env.feasible, samples=samples)
            th.manual_seed(seed)
            p = evaluator.predict(window)
            last = model.policy.world_model.preprocess(
                evaluator._observations(window.observations[:, CONTEXT - 1 : CONTEXT])[:, 0]
            )
            frames = [p.real[0, 0], p.reconstructed[0, 0], *p.predicted[0, :, 0]]
            verdicts = [None, None] + [
                env.feasible(last[0].numpy(), window.actions[0, CONTEXT - 1], f.numpy()) for f in p.predicted[0, :, 0]
            ]
            side = frames[0].shape[-1]
            strip = np.ones((side + 4, len(frames) * (side + 6), 3))
            for i, (frame, ok) in enumerate(zip(frames, verdicts, strict=True)):
                x = i * (side + 6) + 2
                if ok is not None:
                    strip[0 : side + 4, x - 2 : x + side + 2] = (0.1, 0.7, 0.1) if ok else (0.85, 0.1, 0.1)
                strip[2 : side + 2, x : x + side] = frame.permute(1, 2, 0).numpy()
            ax.imshow(strip, interpolation="nearest")
            ax.set_title(f"{name} ({outcomes} outcomes)", fontsize=7, loc="left")
    fig.suptitle("real next frame | reconstruction | prior samples (green: feasible, red: infeasible)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--outcomes", nargs="+", type=int, default=[4, 2], choices=JumpingDotEnv.OUTCOMES)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=1500, help="world-model updates per model")
    parser.add_argument("--episodes", type=int, default=200, help="episodes of 100 steps in the training dataset")
    parser.add_argument("--held-out", type=int, default=8, help="held-out episodes")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (one thread each)")
    parser.add_argument("--eval-only", action="store_true", help="re-evaluate the saved models, train none")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    started = time.time()
    jobs, records = [], []
    for outcomes in args.outcomes:  # in this order, so that a sweep cut short has every variant of its first seeds
        for seed in args.seeds:
            for name in args.variants:
                path = out / "runs" / f"o{outcomes}" / name / f"seed{seed}.json"
                if path.exists() and not args.eval_only:
                    records.append(json.loads(path.read_text()))
                else:
                    jobs.append((name, outcomes, seed, args.updates, args.episodes, args.held_out, out, args.eval_only))
    # Variants that evaluate a model another one trains go after it, so that the model is (almost always) saved by then.
    jobs.sort(key=lambda job: (args.outcomes.index(job[1]), args.seeds.index(job[2]), job[0] in SHARING))
    if args.workers == 1:
        records += [run(job) for job in tqdm(jobs, desc="runs")]
    elif jobs:
        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            records += list(tqdm(pool.imap_unordered(run, jobs), total=len(jobs), desc="runs"))
    times = {outcomes: imagination_times(out, outcomes, args.variants, args.seeds) for outcomes in args.outcomes}
    summary = summarise(records, times)
    # Each trained model once (variants that share one report its training too), every evaluation.
    training = {
        (r["outcomes"], VARIANTS[r["variant"]].get("train", r["variant"]), r["seed"]): r["train_cpu_seconds"] for r in records
    }
    cpu_hours = (sum(training.values()) + sum(r["eval_cpu_seconds"] for r in records)) / 3600
    header = (
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, torch {th.__version__}, "
        f"command: `python benchmarks/prior_feasibility.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
        f"{len(training)} models trained, {len(records)} evaluations, {cpu_hours:.2f} CPU hours (one thread each)"
    )
    wall = time.time() - started
    (out / "results.json").write_text(
        json.dumps(
            {"header": header, "cpu_hours": cpu_hours, "wall_seconds_this_call": wall, "summary": summary, "runs": records},
            indent=1,
        )
        + "\n"
    )
    (out / "summary.md").write_text(markdown(summary, header))
    plot_rates(summary, out / "feasibility.png")
    figure(out, args.outcomes, args.variants, args.seeds[0], out / "imagined.png")
    print(markdown(summary, header))
    return summary


if __name__ == "__main__":
    main()
