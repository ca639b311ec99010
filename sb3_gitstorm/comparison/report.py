"""Normalised scores, rliable statistics, ``results.json``, ``summary.md`` and ``curves.png`` of a sweep.

Normalisation maps a return ``R`` to ``(R - random) / (reference - random)``: 0 is a uniformly random
policy, 1 the reference. Atari 100k games use the published random and human scores (human-normalised
scores, :func:`sb3_gitstorm.envs.human_normalized_score`); other environments use the configuration's
``random`` (else the return of uniformly random actions, which the sweep measures) and ``reference``
(else :data:`~sb3_gitstorm.comparison.sweep_config.REFERENCE_RETURNS`).

A run's score is its last evaluation (at the end of its budget). Aggregates follow Agarwal et al.,
"Deep RL at the Edge of the Statistical Precipice" (NeurIPS 2021), with ``rliable``: IQM, mean and
median of the normalised scores with 95% stratified-bootstrap confidence intervals (resampling runs
within each environment), and the probability that one algorithm's run beats another's on the same
environment, averaged over environments, with its bootstrap interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure
from rliable import library as rly
from rliable import metrics

from sb3_gitstorm.comparison.sweep import RunStore
from sb3_gitstorm.comparison.sweep_config import BenchmarkConfig, EnvSettings, RunSpec, Skip, atari_game
from sb3_gitstorm.envs import ATARI_100K_SCORES, human_normalized_score
from sb3_gitstorm.save_util import atomic_write

__all__ = [
    "METRICS",
    "Cell",
    "Estimate",
    "Normalization",
    "Report",
    "aggregate_metrics",
    "curve_band",
    "improvement_probabilities",
    "normalization",
]

METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "IQM": metrics.aggregate_iqm,
    "mean": metrics.aggregate_mean,
    "median": metrics.aggregate_median,
}


@dataclasses.dataclass(frozen=True)
class Normalization:
    """``(R - random) / (reference - random)``; for an Atari 100k ``game``, its human-normalised score."""

    random: float
    reference: float
    source: str
    game: str | None = None

    def __call__(self, returns: float | np.ndarray) -> np.ndarray:
        if self.game is not None:
            return np.asarray(human_normalized_score(self.game, np.asarray(returns, dtype=np.float64)))
        return (np.asarray(returns, dtype=np.float64) - self.random) / (self.reference - self.random)


def normalization(env: EnvSettings, store: RunStore) -> Normalization | None:
    """The normalisation of an environment; None while its random-policy return is not measured."""
    if (game := atari_game(env.env_id)) is not None:
        random, human = ATARI_100K_SCORES[game]
        return Normalization(random, human, "published random and human scores", game)
    assert env.reference is not None  # parse_config fills it in
    if env.random is not None:
        return Normalization(env.random, env.reference, "random from the configuration")
    measured = store.random_score(env.env_id)
    if measured is None:
        return None
    return Normalization(measured["mean_return"], env.reference, f"random policy measured over {measured['episodes']} episodes")


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """rliable's bootstrap draws from NumPy's global generator: seed it (for reproducible intervals) and restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class Estimate(NamedTuple):
    """A point estimate and its 95% confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def aggregate_metrics(scores: dict[str, np.ndarray], reps: int, seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """IQM, mean and median of normalised scores with 95% stratified-bootstrap confidence intervals.

    Parameters
    ----------
    scores : dict
        Per algorithm, a ``(runs, environments)`` matrix of normalised scores.
    reps : int
        Bootstrap replications.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        Per algorithm, per metric name of :data:`METRICS`, the estimate.
    """
    with _seeded_numpy(seed):
        points, intervals = rly.get_interval_estimates(
            scores, lambda s: np.array([metric(s) for metric in METRICS.values()]), reps=reps
        )
    return {algo: {name: Estimate(points[algo][i], *intervals[algo][:, i]) for i, name in enumerate(METRICS)} for algo in scores}


def improvement_probabilities(
    pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], reps: int, seed: int = 0
) -> dict[tuple[str, str], Estimate]:
    """P(X > Y): the probability that a run of X beats a run of Y on an environment, averaged over environments.

    Parameters
    ----------
    pairs : dict
        ``(X, Y)`` to their ``(runs, environments)`` score matrices over the same environments.
    reps, seed : int
        Bootstrap replications and seed.
    """
    keys = {f"{x},{y}": (x, y) for x, y in pairs}
    with _seeded_numpy(seed):
        points, intervals = rly.get_interval_estimates(
            {key: pairs[pair] for key, pair in keys.items()}, metrics.probability_of_improvement, reps=reps
        )
    return {pair: Estimate(float(points[key]), *intervals[key][:, 0]) for key, pair in keys.items()}


def curve_band(returns: np.ndarray, reps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs of a ``(runs, points)`` array of curves, with its 95% bootstrap interval at every point."""
    with _seeded_numpy(seed):
        points, intervals = rly.get_interval_estimates(
            {"curve": returns[:, None, :]},
            lambda s: np.array([metrics.aggregate_mean(s[..., i]) for i in range(s.shape[-1])]),
            reps=reps,
        )
    return points["curve"], intervals["curve"][0], intervals["curve"][1]


@dataclasses.dataclass
class Cell:
    """The finished runs of one (environment, algorithm): steps ``(points,)`` and returns ``(seeds, points)``."""

    env_id: str
    seeds: list[int]
    steps: np.ndarray
    returns: np.ndarray
    stds: np.ndarray

    @property
    def final(self) -> np.ndarray:
        return self.returns[:, -1]


class Report:
    """Everything the sweep's output files show.

    Parameters
    ----------
    config : BenchmarkConfig
        The configuration.
    runs : list of RunSpec
        Every run of the plan; unfinished ones are reported as missing.
    skipped : list of Skip
        Pairs left out for their action space.
    store : RunStore
        The sweep's files.
    """

    def __init__(self, config: BenchmarkConfig, runs: list[RunSpec], skipped: list[Skip], store: RunStore) -> None:
        self.config, self.skipped = config, skipped
        self.env_ids = [env.env_id for env in config.envs]
        self.algos = list(config.algorithms)
        finished = [spec for spec in runs if store.path(spec, "jsonl").is_file()]
        self.missing = [spec for spec in runs if spec not in finished]
        self.curves = [(spec, store.curve(spec)) for spec in finished]
        self.norms = {env.env_id: normalization(env, store) for env in config.envs}
        self.cells: dict[tuple[str, str], Cell] = {}
        for env_id, algo in itertools.product(self.env_ids, self.algos):
            runs_here = [(spec, curve) for spec, curve in self.curves if (spec.env_id, spec.algo) == (env_id, algo)]
            if runs_here:
                curves = [curve for _, curve in runs_here]
                self.cells[env_id, algo] = Cell(
                    env_id,
                    [spec.seed for spec, _ in runs_here],
                    np.array([point["step"] for point in curves[0]]),
                    np.array([[point["mean_return"] for point in curve] for curve in curves]),
                    np.array([[point["std_return"] for point in curve] for curve in curves]),
                )
        self.aggregates, self.improvements = self._statistics()

    def complete_envs(self, algo: str) -> list[str]:
        """Environments where ``algo`` finished every seed and the normalisation is known."""
        return [
            env_id
            for env_id in self.env_ids
            if (cell := self.cells.get((env_id, algo))) is not None
            and len(cell.seeds) == len(self.config.seeds)
            and self.norms[env_id] is not None
        ]

    def normalized_finals(self, algo: str, env_ids: list[str]) -> np.ndarray:
        """``(seeds, environments)`` normalised final scores."""
        return np.stack([self.norms[env_id](self.cells[env_id, algo].final) for env_id in env_ids], axis=1)  # type: ignore[misc]

    def _statistics(self) -> tuple[dict[str, dict[str, Estimate]], dict[tuple[str, str], tuple[list[str], Estimate]]]:
        reps = self.config.bootstrap_reps
        envs = {algo: self.complete_envs(algo) for algo in self.algos}
        scored = [algo for algo in self.algos if envs[algo]]
        aggregates = aggregate_metrics({algo: self.normalized_finals(algo, envs[algo]) for algo in scored}, reps)
        common = {(x, y): [env_id for env_id in envs[x] if env_id in envs[y]] for x, y in itertools.combinations(scored, 2)}
        common = {pair: env_ids for pair, env_ids in common.items() if env_ids}
        pairs = {
            (x, y): (self.normalized_finals(x, env_ids), self.normalized_finals(y, env_ids)) for (x, y), env_ids in common.items()
        }
        improvements = improvement_probabilities(pairs, reps) if pairs else {}
        return aggregates, {pair: (common[pair], estimate) for pair, estimate in improvements.items()}

    # ------------------------------------------------------------------------------------ outputs
    def results(self) -> dict[str, Any]:
        """The content of ``results.json``."""
        points = []
        for spec, curve in self.curves:
            norm = self.norms[spec.env_id]
            for point in curve:
                normalized = None if norm is None else float(norm(point["mean_return"]))
                points.append(
                    {"env": spec.env_id, "algo": spec.algo, "seed": spec.seed, **point, "normalized_return": normalized}
                )
        config = dataclasses.asdict(self.config)
        # A variant's algorithm and settings (its action spaces are classes, which JSON does not hold).
        config["variants"] = {
            name: {"zoo_algo": v.zoo_algo, "hyperparams": v.hyperparams} for name, v in self.config.variants.items()
        }
        return {
            "config": config,
            "normalization": {env_id: norm and dataclasses.asdict(norm) for env_id, norm in self.norms.items()},
            "skipped": [skip._asdict() for skip in self.skipped],
            "missing": [spec.name for spec in self.missing],
            "aggregates": {
                algo: {"envs": self.complete_envs(algo), **{name: est._asdict() for name, est in estimates.items()}}
                for algo, estimates in self.aggregates.items()
            },
            "probability_of_improvement": [
                {"x": x, "y": y, "envs": env_ids, **estimate._asdict()}
                for (x, y), (env_ids, estimate) in self.improvements.items()
            ],
            "points": points,
        }

    def summary(self, command: str) -> str:
        """The content of ``summary.md``."""
        seeds = len(self.config.seeds)
        lines = [
            "# Benchmark summary",
            "",
            f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; `{command}`",
            "",
            f"{len(self.curves)} finished runs; {seeds} seed(s) per environment and algorithm. A run's score is its last "
            "evaluation (at the end of its budget): the mean return of its evaluation episodes.",
            "",
        ]
        notes = [f"{skip.algo} on {skip.env_id} skipped: {skip.reason}" for skip in self.skipped]
        notes += [f"{spec.name} did not finish (not in the statistics)" for spec in self.missing]
        notes += [
            f"{env_id}: random-policy return not measured, no normalised scores" for env_id, n in self.norms.items() if n is None
        ]
        if notes:
            lines += ["Notes:", "", *[f"- {note}" for note in notes], ""]

        header = "| environment | budget | " + " | ".join(self.algos) + " |"
        rule = "|---|---|" + "---|" * len(self.algos)
        lines += [
            "## Final returns",
            "",
            "Mean ± standard deviation over seeds of the final evaluation return; a step in brackets is where a run ended "
            "when not at the budget (on-policy algorithms finish their last rollout).",
            "",
            header,
            rule,
        ]
        lines += [self._row(env_id, self._final_return) for env_id in self.env_ids]
        lines += ["", "## Final normalised scores", "", "Mean over seeds; Atari games are human-normalised.", "", header, rule]
        lines += [
            self._row(env_id, lambda cell, norm: "n/a" if norm is None else f"{norm(cell.final).mean():.2f}")
            for env_id in self.env_ids
        ]

        reps = self.config.bootstrap_reps
        lines += [
            "",
            "## Aggregate normalised scores",
            "",
            f"Point estimate [95% stratified-bootstrap confidence interval, {reps} replications], over the environments "
            "where the algorithm finished every seed. Algorithms that ran on different environments are not directly comparable.",
            "",
            "| algorithm | environments | IQM | mean | median |",
            "|---|---|---|---|---|",
        ]
        for algo, estimates in self.aggregates.items():
            lines.append(
                f"| {algo} | {len(self.complete_envs(algo))} | " + " | ".join(str(estimates[name]) for name in METRICS) + " |"
            )
        lines += [
            "",
            "## Probability of improvement",
            "",
            "P(X > Y): probability that a run of X scores higher than a run of Y on the same environment, averaged over the "
            f"environments both finished [95% bootstrap confidence interval, {reps} replications]. 0.5 means no difference.",
            "",
            "| X | Y | environments | P(X > Y) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {x} | {y} | {len(env_ids)} | {estimate} |" for (x, y), (env_ids, estimate) in self.improvements.items()]
        lines += ["", "## Normalisation", "", "| environment | random | reference | source |", "|---|---|---|---|"]
        for env_id, norm in self.norms.items():
            lines.append(
                f"| {env_id} | n/a | n/a | not measured |"
                if norm is None
                else f"| {env_id} | {norm.random:.1f} | {norm.reference:.1f} | {norm.source} |"
            )
        return "\n".join(lines) + "\n"

    def _final_return(self, cell: Cell, norm: Normalization | None) -> str:
        text = f"{cell.final.mean():.1f} ± {cell.final.std():.1f}"
        return text if cell.steps[-1] == self.config.env(cell.env_id).budget else f"{text} (step {cell.steps[-1]})"

    def _row(self, env_id: str, fmt: Callable[[Cell, Normalization | None], str]) -> str:
        cells = []
        for algo in self.algos:
            skip = next((skip for skip in self.skipped if (skip.env_id, skip.algo) == (env_id, algo)), None)
            cell = self.cells.get((env_id, algo))
            if skip is not None:
                cells.append("skipped")
            elif cell is None:
                cells.append("no run finished")
            else:
                seeds = "" if len(cell.seeds) == len(self.config.seeds) else f" ({len(cell.seeds)} seeds)"
                cells.append(fmt(cell, self.norms[env_id]) + seeds)
        return f"| {env_id} | {self.config.env(env_id).budget} | " + " | ".join(cells) + " |"

    def plot(self, path: Path) -> None:
        """Learning curves, one panel per environment: mean evaluation return over seeds with its 95% bootstrap band."""
        cols = min(3, len(self.env_ids))
        rows = -(-len(self.env_ids) // cols)
        figure = Figure(figsize=(5 * cols, 3.6 * rows), layout="constrained")
        axes = figure.subplots(rows, cols, squeeze=False).ravel()
        colors = {algo: f"C{i}" for i, algo in enumerate(self.algos)}
        for ax, env_id in zip(axes, self.env_ids, strict=False):
            for algo in self.algos:
                if (cell := self.cells.get((env_id, algo))) is None:
                    continue
                mean, low, high = curve_band(cell.returns, self.config.bootstrap_reps)
                ax.plot(cell.steps, mean, color=colors[algo], label=f"{algo} ({len(cell.seeds)})")
                ax.fill_between(cell.steps, low, high, color=colors[algo], alpha=0.2)
            ax.set(title=env_id, xlabel="environment steps", ylabel="evaluation return")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize="small", title="algorithm (seeds)", title_fontsize="small")
        for ax in axes[len(self.env_ids) :]:
            ax.set_visible(False)
        figure.savefig(path, dpi=100)

    def write(self, out: Path, command: str) -> None:
        """Write ``results.json``, ``summary.md`` and ``curves.png`` into ``out``."""
        atomic_write(out / "results.json", "json", lambda tmp: Path(tmp).write_text(json.dumps(self.results(), indent=1)))
        atomic_write(out / "summary.md", "md", lambda tmp: Path(tmp).write_text(self.summary(command)))
        self.plot(out / "curves.png")
