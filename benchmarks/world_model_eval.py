"""World-model quality of GITSTORM models on held-out episodes (GIT-STORM vs STORM in one command).

    python benchmarks/world_model_eval.py --models gitstorm.zip storm.zip --env ALE/Pong-v5 \\
        --episodes 10 --context 8 --horizon 16 --out eval/

Records ``--episodes`` episodes with a fixed policy (uniformly random, or ``--policy model.zip``),
then for every model predicts each window of ``context + horizon`` frames open loop (real actions)
and reports, per horizon step and on average: frame MSE, PSNR and SSIM against the real frames
(resized to the model's input), FVD (with ``--i3d``), reward error, termination accuracy and recall,
the prior's and the posterior's perplexity and the posterior-prior KL (see
:mod:`sb3_gitstorm.world_model_metrics`); for environments with a ``feasible(previous, action, frame)``
checker (JumpingDot), also the share of imagined frames that can happen
(:class:`~sb3_gitstorm.world_model_metrics.FeasibilityEvaluator`). Writes ``metrics.json``, ``metrics.md``
(one column per model) and, for image models, ``<model>/rollouts.png`` and ``<model>/rollouts.gif`` (real row
above imagined rows).

``--env`` is a gymnasium id (``module:EnvId`` imports the module first) or a ``module:function``
factory returning a gymnasium.Env, called with ``--env-kwargs``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

# Run against the checkout this script belongs to, not another installed copy of the package; this
# also makes the checkout's modules (e.g. ``tests.conftest:DotEnv``) importable as env factories.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym
import torch as th
from PIL import Image
from tqdm import tqdm

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.world_model_metrics import (
    FeasibilityEvaluator,
    I3DFeatures,
    OpenLoopEvaluator,
    OpenLoopPrediction,
    check_compatible,
    collect_episode,
    gather_windows,
    rollout_pictures,
    window_starts,
)

SUMMARY_ROWS = [
    ("frame MSE ↓", "mse"),
    ("frame PSNR (dB) ↑", "psnr"),
    ("frame SSIM ↑", "ssim"),
    ("FVD ↓", "fvd"),
    ("reconstruction MSE (reference)", "reconstruction_mse"),
    ("reconstruction PSNR (dB) (reference)", "reconstruction_psnr"),
    ("reconstruction SSIM (reference)", "reconstruction_ssim"),
    ("reward MAE ↓", "reward_abs_error"),
    ("reward explained variance ↑ (0: no better than the mean reward)", "reward_explained_variance"),
    ("termination accuracy ↑", "termination_accuracy"),
    ("termination recall ↑", "termination_recall"),
    ("feasible imagined frames ↑", "feasible"),
    ("feasible rollouts to the horizon ↑", "feasible_rollout"),
    ("feasible reconstructions (ceiling)", "reconstruction_feasible"),
    ("KL(posterior ‖ prior) (nats) ↓", "prior_kl"),
    ("prior perplexity", "prior_perplexity"),
    ("posterior perplexity", "posterior_perplexity"),
]
PER_STEP_TABLES = [
    ("frame PSNR (dB)", "psnr"),
    ("frame SSIM", "ssim"),
    ("frame MSE", "mse"),
    ("KL(posterior ‖ prior)", "prior_kl"),
    ("feasible imagined frames", "feasible"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="GITSTORM .zip files to compare")
    parser.add_argument("--env", required=True, help="gymnasium id or module:function env factory")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON dict of keyword arguments for the env")
    parser.add_argument("--episodes", type=int, default=10, help="held-out episodes to record")
    parser.add_argument("--context", type=int, default=8, help="real frames the model sees before imagining")
    parser.add_argument("--horizon", type=int, default=16, help="imagined steps")
    parser.add_argument("--samples", type=int, default=3, help="imagined rollouts per window")
    parser.add_argument("--stride", type=int, default=None, help="steps between windows (default: the horizon)")
    parser.add_argument("--policy", default="random", help="'random' or a GITSTORM .zip that plays the episodes")
    parser.add_argument("--i3d", default=None, help="I3D TorchScript file (StyleGAN-V i3d_torchscript.pt) for FVD")
    parser.add_argument("--prior-orders", type=int, default=32, help="decoding orders of a MaskGIT draft's KL bound")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per imagination batch")
    parser.add_argument("--strip-windows", type=int, default=2, help="windows drawn in the rollout pictures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="output folder")
    return parser.parse_args(argv)


def make_env(spec: str, kwargs: dict[str, Any]) -> gym.Env:
    """``module:function`` factory if ``function`` exists in ``module``, otherwise ``gym.make(spec)``."""
    module_name, _, attribute = spec.partition(":")
    if attribute:
        factory = getattr(importlib.import_module(module_name), attribute, None)
        if callable(factory):
            env = factory(**kwargs)
            if not isinstance(env, gym.Env):
                raise TypeError(f"{spec} returned {type(env).__name__}, not a single gymnasium.Env")
            return env
    return gym.make(spec, **kwargs)


def model_names(paths: list[str]) -> list[str]:
    """File stems, made unique by a numeric suffix where two models share one."""
    stems = [Path(p).stem for p in paths]
    return [f"{stem}-{i}" if stems.count(stem) > 1 else stem for i, stem in enumerate(stems)]


def save_pictures(prediction: OpenLoopPrediction, folder: Path, windows: int) -> None:
    """``rollouts.png`` (the strip) and ``rollouts.gif`` (4 frames a second) in ``folder``."""
    strip, frames = rollout_pictures(prediction, windows)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(folder / "rollouts.png")
    gif = [Image.fromarray(frame) for frame in frames]
    gif[0].save(folder / "rollouts.gif", save_all=True, append_images=gif[1:], duration=250, loop=0)


def fmt(value: float | None) -> str:
    """4 significant digits, a dash for a metric the model does not have."""
    return "–" if value is None else f"{value:.4g}"


def markdown(report: dict[str, Any]) -> str:
    """``metrics.md``: the summary table and the per-step tables, one column per model, then the notes."""
    models = report["models"]
    names = list(models)

    def table(first: str, rows: list[tuple[str, list[str]]]) -> list[str]:
        lines = [f"| {first} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        return lines + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]

    s = report["settings"]
    lines = [
        "# World-model quality",
        "",
        f"{report['date']} · `{report['command']}`",
        "",
        f"env `{s['env']}`, {s['episodes']} episodes ({s['policy']} policy), {report['windows']} windows, "
        f"context {s['context']}, horizon {s['horizon']}, {s['samples']} imagined samples per window. "
        "Means over all horizon steps; ↓ lower is better, ↑ higher is better.",
        "",
    ]
    rows = [
        ("prior", [m["prior"] for m in models.values()]),
        ("size", [m["size"] for m in models.values()]),
        ("training steps", [str(m["num_timesteps"]) for m in models.values()]),
    ]
    # Rows no model has (image metrics of vector models, FVD without --i3d) are left out; the notes say why.
    rows += [
        (label, [fmt(m["metrics"].get(key)) for m in models.values()])
        for label, key in SUMMARY_ROWS
        if any(m["metrics"].get(key) is not None for m in models.values())
    ]
    rows.append(
        ("KL at step 1 (teacher-forced)", [fmt((m["metrics"]["prior_kl_per_step"] or [None])[0]) for m in models.values()])
    )
    rows.append(("prior KL and perplexity are", [m["metrics"]["prior_kl_kind"] for m in models.values()]))
    lines += table("metric", rows)
    for title, key in PER_STEP_TABLES:
        columns = [m["metrics"].get(f"{key}_per_step") or [None] * s["horizon"] for m in models.values()]
        if all(v is None for column in columns for v in column):
            continue
        lines += ["", f"### {title} per horizon step", ""]
        lines += table("step", [(str(k + 1), [fmt(column[k]) for column in columns]) for k in range(s["horizon"])])
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN / inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stride = args.stride or args.horizon
    env = make_env(args.env, args.env_kwargs)
    models = [GITSTORM.load(path, device=args.device) for path in args.models]
    video_features = I3DFeatures(args.i3d, models[0].device) if args.i3d else None
    # Tasks that can tell a possible frame from an impossible one (JumpingDot) get the feasibility rows.
    checker = getattr(env.unwrapped, "feasible", None)
    evaluators = []
    for path, model in zip(args.models, models, strict=True):
        try:
            check_compatible(model, env.observation_space, env.action_space)
            common = (args.context, args.horizon)
            if checker is not None and model.policy.images:
                evaluator = FeasibilityEvaluator(model, *common, checker, args.samples, video_features, args.prior_orders)
            else:
                evaluator = OpenLoopEvaluator(model, *common, args.samples, video_features, args.prior_orders)
            evaluators.append(evaluator)
        except ValueError as error:
            raise SystemExit(f"{path}: {error}") from error
    behaviour = None if args.policy == "random" else GITSTORM.load(args.policy, device=args.device)

    episodes = [collect_episode(env, behaviour, args.seed + i) for i in tqdm(range(args.episodes), desc="episodes")]
    starts = window_starts(episodes, args.context, args.horizon, stride)
    if not starts:
        lengths = sorted(len(e) for e in episodes)
        raise SystemExit(
            f"no episode has the {args.context + args.horizon - 1} steps a window needs (lengths {lengths}): "
            "lower --context / --horizon or record more episodes"
        )

    notes = [
        "KL(posterior ‖ prior) and prior perplexity are those of the distribution imagination samples z_t+1 from "
        "at the imagined h_t: the KL from the real frame's posterior, summed over the latent tokens, and exp of the "
        "entropy per latent token, so at most latent_classes. They are exact for one-pass priors (MLP, MaskGIT "
        "1/1/1), upper bounds estimated over random decoding orders for a MaskGIT draft without revise rounds, "
        "and not available (–) with revise rounds (row 'prior KL and perplexity are'). Posterior perplexity: "
        "exp of the mean entropy of q(z_t | o_t) on the real frames. The paper's perplexities exceed 32 and so use "
        "another normalisation: compare models with each other, not with its numbers.",
        "Reconstruction rows decode the posterior mode of the real frame: the floor the prediction error tends to.",
    ]
    if video_features is None:
        notes.append("FVD skipped: pass --i3d path/to/i3d_torchscript.pt (weights are never downloaded at run time).")
    if not any(e.terminated.any() for e in episodes):
        notes.append("No episode terminated: termination accuracy only measures false alarms; recall is undefined.")

    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/world_model_eval.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {**vars(args), "stride": stride},
        "episode_lengths": [len(e) for e in episodes],
        "windows": len(starts),
        "models": {},
        "notes": notes,
    }
    for name, path, model, evaluator in zip(model_names(args.models), args.models, models, evaluators, strict=True):
        th.manual_seed(args.seed)  # every model draws from the same random stream
        for i in tqdm(range(0, len(starts), args.batch_size), desc=name):
            windows = gather_windows(episodes, starts[i : i + args.batch_size], args.context, args.horizon)
            prediction = evaluator.add(windows)
            if i == 0 and evaluator.images:
                save_pictures(prediction, out / name, args.strip_windows)
        if not evaluator.images:
            notes.append(f"{name}: vector observations, so no PSNR / SSIM / FVD / pictures; MSE is in observation units.")
        report["models"][name] = {
            "path": str(path),
            "prior": model.prior,
            "size": model.policy.size,
            "num_timesteps": model.num_timesteps,
            "images": evaluator.images,
            "draft_revise": [model.draft_steps, model.revise_steps, model.revise_rounds],
            "metrics": evaluator.summary(),
        }
    report = finite_or_none(report)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "metrics.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
