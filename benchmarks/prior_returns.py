"""GIT-STORM's claim in returns: what a prior-returns sweep's agents learned, and why.

The sweep (``benchmarks/configs/prior-returns.yml``) trains GITSTORM online on JumpingDot with STORM's MLP
prior, MaskGIT decoded in one pass (1/1/1, the paper's) and MaskGIT drafting and revising in chunks, at equal
environment steps; ``compare.py`` reports their returns. This script reads that sweep's folder and adds what
explains them:

- **the task**, by value iteration over its 16 cells (``JumpingDotEnv.targets`` and ``rewarding``): the optimal
  return, the best constant action's, and whether acting on the expected *immediate* reward alone is optimal
  (then the best action needs no imagined state beyond the first step, whose reward the world model predicts
  from ``h_t``, before the prior samples ``z_{t+1}``);
- **the agents**: return and the share of steps whose action is optimal, over ``--episodes`` episodes each
  agent plays (deterministic actions, its context carried);
- **their world models** (the saved ``<run>.zip``), open loop with the real actions on held-out random-policy
  episodes (:class:`~sb3_gitstorm.world_model_metrics.FeasibilityEvaluator`): feasible imagined frames after
  1 step and whole rollouts, the reconstructions' rate (the ceiling), prior perplexity, open-loop frame error;
- **the curves**: evaluation return per step, mean and 95% CI over seeds (``results.json``).

    python benchmarks/compare.py --config benchmarks/configs/prior-returns.yml --out runs/prior-returns --workers 2 --save-models
    python benchmarks/prior_returns.py --sweep runs/prior-returns

Writes ``analysis.md`` and ``analysis.json`` into the sweep folder (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

# Run against this checkout (and import the shared helpers of benchmarks/prior_comparison.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym
import numpy as np
import torch as th
from tqdm import tqdm

from benchmarks.prior_comparison import mean_ci
from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs.toy import JumpingDotEnv
from sb3_gitstorm.world_model_metrics import FeasibilityEvaluator, collect_episode

CONTEXT, HORIZON, SAMPLES = 4, 4, 4
HELD_OUT_SEED = 10_000  # held-out episodes: seeds the sweep's runs (0, 1, ...) never reset with


def task_values(env: JumpingDotEnv) -> dict[str, Any]:
    """Exact values of ``env`` over its ``max_steps`` steps from a uniformly random cell, by value iteration.

    Returns ``optimal``, ``best_constant`` (the best single action played throughout), ``myopic_is_optimal``
    (every action with the best expected immediate reward in a cell is also optimal there, at every step
    to go) and ``optimal_actions``: a ``(max_steps, cells, cells, 3)`` bool array indexed by the steps played
    (``env.t``), the row and the column of the dot, and the action.
    """
    cells = env.cells
    states = [(y, x) for y in range(cells) for x in range(cells)]
    # landing[s, a]: the indices (row * cells + column) of the cells the dot may land in, each with probability 1 / outcomes
    landing = np.array([[[y * cells + x for y, x in sorted(env.targets(s, a))] for a in range(3)] for s in states])
    if env.late_reward:  # paid for the cell the step starts in, whatever the action
        reward = np.repeat(env.rewarding[np.arange(len(states)) % cells, None], 3, 1).astype(np.float64)
    else:  # the expected reward of the landing cell
        reward = env.rewarding[landing % cells].mean(-1).astype(np.float64)  # (S, A)
    value = np.zeros(len(states))
    constant = np.zeros((len(states), 3))  # the value of playing each action throughout
    myopic = np.isclose(reward, reward.max(-1, keepdims=True))
    optimal_actions, myopic_is_optimal = [], True
    for _ in range(env.max_steps):
        q = reward + value[landing].mean(-1)
        best = np.isclose(q, q.max(-1, keepdims=True))
        myopic_is_optimal &= bool((best | ~myopic).all())
        optimal_actions.append(best.reshape(cells, cells, 3))
        value = q.max(-1)
        constant = reward + np.stack([constant[landing[:, a], a].mean(-1) for a in range(3)], -1)
    return dict(
        optimal=float(value.mean()),
        best_constant=float(constant.mean(0).max()),
        myopic_is_optimal=myopic_is_optimal,
        optimal_actions=np.stack(optimal_actions[::-1]),  # [k]: k steps played, max_steps - k to go
    )


def play(model: GITSTORM, env: JumpingDotEnv, optimal_actions: np.ndarray, episodes: int, seed: int) -> dict[str, float]:
    """Mean return and share of optimal actions over ``episodes`` episodes of deterministic actions."""
    returns, optimal = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, start, done, total = None, np.ones(1, bool), False, 0.0
        while not done:
            action, state = model.predict(obs[None], state=state, episode_start=start, deterministic=True)
            optimal.append(optimal_actions[env.t, env.cell[0], env.cell[1], int(action[0])])
            obs, reward, terminated, truncated, _ = env.step(int(action[0]))
            total, start, done = total + reward, np.zeros(1, bool), terminated or truncated
        returns.append(total)
    return dict(return_=float(np.mean(returns)), optimal_action_rate=float(np.mean(optimal)))


def world_model_quality(model: GITSTORM, env: JumpingDotEnv, episodes: int) -> dict[str, Any]:
    """Open-loop feasibility, perplexity and frame error on held-out random-policy episodes."""
    held_out = [collect_episode(env, None, HELD_OUT_SEED + i) for i in range(episodes)]
    evaluator = FeasibilityEvaluator(model, CONTEXT, HORIZON, env.feasible, samples=SAMPLES)
    th.manual_seed(0)
    evaluator.add_episodes(held_out, stride=HORIZON)
    summary = evaluator.summary()
    keys = ("feasible", "feasible_rollout", "reconstruction_feasible", "prior_perplexity", "mse")
    return {key: summary[key] for key in keys} | {"feasible_per_step": summary["feasible_per_step"]}


def saved_runs(sweep: Path) -> list[dict[str, Any]]:
    """Every finished GITSTORM run of the sweep that kept its model: its spec (the ``.jsonl`` header) and paths."""
    runs = []
    for curve in sorted((sweep / "runs").glob("*/*/seed*.jsonl")):
        with curve.open() as f:
            spec = json.loads(f.readline())["run"]
        if spec["zoo_algo"] == "gitstorm" and curve.with_suffix(".zip").is_file():
            runs.append(dict(spec=spec, model=curve.with_suffix(".zip")))
    if not runs:
        raise SystemExit(f"{sweep}/runs has no finished GITSTORM run with a saved model (compare.py --save-models)")
    return runs


def curves(sweep: Path, algos: list[str]) -> dict[str, list[tuple[int, float, float, int]]]:
    """``algo -> [(step, mean return, 95% CI half-width, seeds)]`` from the sweep's ``results.json``."""
    points = json.loads((sweep / "results.json").read_text())["points"]
    out = {}
    for algo in algos:
        by_step: dict[int, list[float]] = {}
        for point in points:
            if point["algo"] == algo:
                by_step.setdefault(point["step"], []).append(point["mean_return"])
        out[algo] = [(step, *mean_ci(values), len(values)) for step, values in sorted(by_step.items())]
    return out


def fmt(values: list[float], digits: int = 2) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def report(task: dict[str, Any], records: list[dict[str, Any]], curve: dict[str, list], command: str, env_kwargs: dict) -> str:
    algos = list(dict.fromkeys(r["algo"] for r in records))
    lines = [
        f"{datetime.date.today().isoformat()}, command: `{command}`; JumpingDot {json.dumps(env_kwargs)}",
        "",
        "## The task (value iteration)",
        "",
        f"Optimal return {task['optimal']:.1f}; best constant action {task['best_constant']:.1f}; acting on the expected "
        f"immediate reward alone is optimal: **{'yes' if task['myopic_is_optimal'] else 'no'}**.",
        "",
        "## Agents and their world models (mean ± 95% CI over seeds)",
        "",
        "| variant | seeds | return (deterministic) | optimal actions | feasible 1 step | feasible 4-step rollouts | "
        "recon. feasible | prior perplexity | open-loop MSE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for algo in algos:
        rows = [r for r in records if r["algo"] == algo]
        cells = [fmt([r["return_"] for r in rows], 1)]
        for key in ("optimal_action_rate", "feasible", "feasible_rollout", "reconstruction_feasible", "prior_perplexity", "mse"):
            values = [r[key] for r in rows if r[key] is not None]  # no perplexity with revise rounds
            cells.append(fmt(values, 4 if key == "mse" else 2) if values else "n/a")
        lines.append(f"| {algo} | {len(rows)} | " + " | ".join(cells) + " |")
    steps = [step for step, *_ in next(iter(curve.values()))]
    lines += ["", "## Evaluation return per environment step (mean ± 95% CI over seeds)", ""]
    lines += ["| step | " + " | ".join(curve) + " |", "|---" * (len(curve) + 1) + "|"]
    for i, step in enumerate(steps):
        cells = [f"{c[i][1]:.1f} ± {c[i][2]:.1f}" if i < len(c) else "" for c in curve.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Optimal actions: share of the agents' steps whose action is optimal in the dot's cell with the steps left "
        f"(value iteration). World models: open loop with the real actions on held-out random-policy episodes, context "
        f"{CONTEXT}, horizon {HORIZON}, {SAMPLES} samples per window; feasible: the imagined frame shows one dot where "
        "the dynamics allow (`JumpingDotEnv.feasible`), after the frame before it; prior perplexity: n/a with revise "
        "rounds (no tractable likelihood).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, type=Path, help="the compare.py output folder (run with --save-models)")
    parser.add_argument("--out", type=Path, default=None, help="where analysis.md / .json go (default: --sweep)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes each agent plays")
    parser.add_argument("--held-out", type=int, default=8, help="random-policy episodes for the world models")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    runs = saved_runs(args.sweep)
    env_kwargs = runs[0]["spec"]["env_kwargs"]
    if any(run["spec"]["env_kwargs"] != env_kwargs for run in runs):
        raise SystemExit("the sweep's GITSTORM runs are on different environments: analyse one at a time")
    env = gym.make(runs[0]["spec"]["env_id"], **env_kwargs).unwrapped
    if not isinstance(env, JumpingDotEnv):
        raise SystemExit(f"{runs[0]['spec']['env_id']} is not a JumpingDotEnv: no value iteration or feasibility checker")
    task = task_values(env)
    records = []
    for run in tqdm(runs, desc="models"):
        model = GITSTORM.load(run["model"], device="cpu")
        spec = run["spec"]
        record = dict(algo=spec["algo"], seed=spec["seed"])
        record |= play(model, env, task["optimal_actions"], args.episodes, HELD_OUT_SEED)
        record |= world_model_quality(model, env, args.held_out)
        records.append(record)
    curve = curves(args.sweep, list(dict.fromkeys(r["algo"] for r in records)))
    command = " ".join(["python benchmarks/prior_returns.py", *(argv if argv is not None else sys.argv[1:])])
    text = report(task, records, curve, command, env_kwargs)
    out = args.out or args.sweep
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.md").write_text(text)
    task_json = {key: value for key, value in task.items() if key != "optimal_actions"}
    result = dict(task=task_json, runs=records, curves=curve, env_kwargs=env_kwargs)
    (out / "analysis.json").write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
