"""Sweep configuration: which environments, algorithms, seeds, budgets and evaluations to run.

A configuration is a YAML file (see ``benchmarks/configs/``)::

    algorithms: [gitstorm, gitstorm-mlp, ppo, sac]   # names of ALGORITHMS or of variants
    variants:                                         # optional: named settings of an algorithm, e.g.
      gitstorm-draft4-revise4: {algorithm: gitstorm, hyperparams: {draft_steps: 4, revise_steps: 4}}
    seeds: [0, 1, 2]                                  # or a count: 3 means [0, 1, 2]
    budget: 10000                                     # environment steps per run (all parallel envs together)
    eval: {interval: 1000, episodes: 10}              # evaluated at step 0, every interval and at the end
    device: auto                                      # torch device of the models
    bootstrap_reps: 2000                              # bootstrap replications of the confidence intervals
    resources: {num_cpus: 1}                          # Ray resources of one run (--ray-address only)
    hyperparams:                                      # overrides of the zoo files, per algorithm
      gitstorm: {imagine_batch_size: 256}
    envs:
      CartPole-v1: {}
      gitstorm/dmc-cartpole-balance-v0:               # every key optional
        budget: 5000                                  # budget and eval override the global ones
        eval: {episodes: 5}
        env_kwargs: {fast_render: true}
        hyperparams: {sac: {buffer_size: 5000}}       # overrides for this environment only
        reference: 1000                               # normalisation (see report.py)
        random: 0.0                                   # random-policy return; measured when omitted

Hyperparameters start from the file ``python -m sb3_gitstorm.zoo.train`` would use
(:func:`sb3_gitstorm.zoo.default_conf_file`, else rl_zoo3's own), then the algorithm's own
settings (``gitstorm-mlp`` is ``gitstorm`` with ``prior: mlp``), then ``hyperparams``, then the
environment's ``hyperparams``, then the command line's ``--set algo.key=value``; each level replaces
whole keys. A variant is its ``algorithm`` with its ``hyperparams`` as the algorithm's own settings: it
compares one algorithm under several settings in one sweep, each a curve of its own. The zoo file's
``n_timesteps`` is replaced by the budget.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import yaml
from gymnasium import spaces

from sb3_gitstorm.envs import ATARI_100K_GAMES, DMC_TASKS, atari_id, dmc_id

__all__ = [
    "ALGORITHMS",
    "REFERENCE_RETURNS",
    "Algorithm",
    "BenchmarkConfig",
    "EnvSettings",
    "RunSpec",
    "Skip",
    "action_space",
    "atari_game",
    "env_slug",
    "load_config",
    "parse_config",
    "plan",
]


class Algorithm(NamedTuple):
    """A benchmarked algorithm: an ``rl_zoo3.ALGOS`` entry, fixed settings and the action spaces it supports."""

    zoo_algo: str
    hyperparams: dict[str, Any]
    action_spaces: tuple[type[spaces.Space], ...]


ALGORITHMS: dict[str, Algorithm] = {
    "gitstorm": Algorithm("gitstorm", {}, (spaces.Discrete, spaces.Box)),
    "gitstorm-mlp": Algorithm("gitstorm", {"prior": "mlp"}, (spaces.Discrete, spaces.Box)),  # STORM
    "ppo": Algorithm("ppo", {}, (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)),
    "sac": Algorithm("sac", {}, (spaces.Box,)),
    "dqn": Algorithm("dqn", {}, (spaces.Discrete,)),
}

# Returns of a well-trained agent, the 1 of the normalised scores of environments that are not Atari 100k
# games (see report.py). CartPole-v1: the maximum; Pendulum-v1: about the best agents of the
# rl-baselines3-zoo benchmark; DMC: the maximum of every task.
REFERENCE_RETURNS: dict[str, float] = {
    "CartPole-v1": 500.0,
    "Pendulum-v1": -150.0,
    **{dmc_id(task, pixels): 1000.0 for task in DMC_TASKS for pixels in (True, False)},
}
_ATARI_GAMES = {atari_id(game): game for game in ATARI_100K_GAMES}

_TOP_KEYS = {"algorithms", "variants", "seeds", "budget", "eval", "device", "bootstrap_reps", "resources", "hyperparams", "envs"}
_VARIANT_KEYS = {"algorithm", "hyperparams"}
_ENV_KEYS = {"budget", "eval", "env_kwargs", "hyperparams", "reference", "random"}
_EVAL_KEYS = {"interval", "episodes"}


@dataclass(frozen=True)
class EnvSettings:
    """The settings of one environment, with the global defaults filled in."""

    env_id: str
    budget: int
    eval_interval: int
    eval_episodes: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: float | None = None
    random: float | None = None

    @property
    def measures_random(self) -> bool:
        """Whether the sweep measures the random-policy return (no ``random`` given, not an Atari 100k game)."""
        return self.random is None and atari_game(self.env_id) is None


@dataclass(frozen=True)
class RunSpec:
    """One training run: everything that determines its learning curve.

    ``algo`` names the curve (an entry of :data:`ALGORITHMS` or a variant), ``zoo_algo`` the ``rl_zoo3.ALGOS``
    entry that trains it; ``hyperparams`` are the overrides applied on top of the zoo file (see the module docstring).
    """

    env_id: str
    algo: str
    zoo_algo: str
    seed: int
    budget: int
    eval_interval: int
    eval_episodes: int
    hyperparams: dict[str, Any]
    env_kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        """``<env>/<algo>/seed<seed>``, with the environment id made a single path component."""
        return f"{env_slug(self.env_id)}/{self.algo}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Skip(NamedTuple):
    """An (environment, algorithm) pair left out, and why."""

    env_id: str
    algo: str
    reason: str


@dataclass(frozen=True)
class BenchmarkConfig:
    """A parsed configuration file."""

    algorithms: tuple[str, ...]
    seeds: tuple[int, ...]
    envs: tuple[EnvSettings, ...]
    hyperparams: dict[str, dict[str, Any]]
    device: str = "auto"
    bootstrap_reps: int = 2000
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1})
    variants: dict[str, Algorithm] = field(default_factory=dict)

    def env(self, env_id: str) -> EnvSettings:
        return next(env for env in self.envs if env.env_id == env_id)

    def algorithm(self, algo: str) -> Algorithm:
        """A variant of this configuration or an entry of :data:`ALGORITHMS`."""
        return self.variants.get(algo) or ALGORITHMS[algo]

    def run_spec(self, env: EnvSettings, algo: str, seed: int) -> RunSpec:
        algorithm = self.algorithm(algo)
        overrides = {**algorithm.hyperparams, **self.hyperparams.get(algo, {}), **env.hyperparams.get(algo, {})}
        return RunSpec(
            env.env_id, algo, algorithm.zoo_algo, seed, env.budget, env.eval_interval, env.eval_episodes, overrides,
            dict(env.env_kwargs),
        )  # fmt: skip


def atari_game(env_id: str) -> str | None:
    """The Atari 100k game of a ``gitstorm/atari-<Game>-v0`` id (human-normalised scores), else None."""
    return _ATARI_GAMES.get(env_id)


def env_slug(env_id: str) -> str:
    """A file-name-safe form of a gymnasium id: ``gitstorm/atari-Pong-v0`` -> ``gitstorm_atari-Pong-v0``."""
    return env_id.replace("/", "_")


def _check_keys(where: str, mapping: Any, allowed: set[str]) -> dict[str, Any]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a mapping, got {mapping!r}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")
    return mapping


def _check_variants(raw: Any) -> dict[str, Algorithm]:
    """The ``variants`` of a configuration: names that are not :data:`ALGORITHMS` entries, each an algorithm's settings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"variants must be a mapping of names to {{algorithm, hyperparams}}, got {raw!r}")
    variants = {}
    for name, settings in raw.items():
        if name in ALGORITHMS:
            raise ValueError(f"variants.{name}: {name!r} is already an algorithm; give the variant another name")
        settings = _check_keys(f"variants.{name}", settings, _VARIANT_KEYS)
        base = ALGORITHMS.get(str(settings.get("algorithm")))
        if base is None:
            raise ValueError(f"variants.{name}.algorithm must be one of {sorted(ALGORITHMS)}, got {settings.get('algorithm')!r}")
        overrides = settings.get("hyperparams") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"variants.{name}.hyperparams must be a mapping, got {overrides!r}")
        variants[name] = Algorithm(base.zoo_algo, {**base.hyperparams, **overrides}, base.action_spaces)
    return variants


def _check_algorithms(where: str, hyperparams: Any, names: set[str]) -> dict[str, dict[str, Any]]:
    """Per-algorithm hyperparameter overrides: a mapping of algorithm ``names`` to mappings."""
    hyperparams = _check_keys(where, hyperparams, names)
    for algo, overrides in hyperparams.items():
        if not isinstance(overrides, dict):
            raise ValueError(f"{where}.{algo} must be a mapping of hyperparameters, got {overrides!r}")
    return {algo: dict(overrides) for algo, overrides in hyperparams.items()}


def parse_config(raw: dict[str, Any]) -> BenchmarkConfig:
    """Validate a configuration mapping (the content of a YAML file) and fill in the defaults.

    Raises
    ------
    ValueError
        For unknown keys or algorithms, unregistered environment ids, missing or invalid values.
    """
    raw = _check_keys("the configuration", raw, _TOP_KEYS)
    for key in ("algorithms", "seeds", "budget", "eval", "envs"):
        if key not in raw:
            raise ValueError(f"The configuration needs {key!r}")
    variants = _check_variants(raw.get("variants"))
    names = set(ALGORITHMS) | set(variants)
    algorithms = tuple(raw["algorithms"])
    unknown = sorted(set(algorithms) - names)
    if unknown or not algorithms:
        raise ValueError(f"Unknown algorithm(s) {unknown}; choose from {sorted(names)} (or define a variant)")
    seeds = tuple(range(raw["seeds"])) if isinstance(raw["seeds"], int) else tuple(int(seed) for seed in raw["seeds"])
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a positive count or a list of distinct seeds, got {raw['seeds']!r}")
    default_eval = _check_keys("eval", raw["eval"], _EVAL_KEYS)
    env_ids = raw["envs"] if isinstance(raw["envs"], dict) else dict.fromkeys(raw["envs"] or [])
    if not env_ids:
        raise ValueError("envs must list at least one environment")
    envs = []
    for env_id, settings in env_ids.items():
        settings = _check_keys(f"envs.{env_id}", settings, _ENV_KEYS)
        if env_id not in gym.registry:
            raise ValueError(f"envs.{env_id}: not a registered gymnasium id")
        evaluation = {**default_eval, **_check_keys(f"envs.{env_id}.eval", settings.get("eval"), _EVAL_KEYS)}
        env = EnvSettings(
            env_id,
            budget=int(settings.get("budget", raw["budget"])),
            eval_interval=int(evaluation.get("interval", 0)),
            eval_episodes=int(evaluation.get("episodes", 0)),
            env_kwargs=dict(settings.get("env_kwargs") or {}),
            hyperparams=_check_algorithms(f"envs.{env_id}.hyperparams", settings.get("hyperparams"), names),
            reference=None if settings.get("reference") is None else float(settings["reference"]),
            random=None if settings.get("random") is None else float(settings["random"]),
        )
        if min(env.budget, env.eval_interval, env.eval_episodes) < 1:
            raise ValueError(f"envs.{env_id}: budget, eval.interval and eval.episodes must be positive integers")
        if atari_game(env_id) is None and env.reference is None:
            if env_id not in REFERENCE_RETURNS:
                raise ValueError(
                    f"envs.{env_id}: no reference return for the normalised scores; give `reference` "
                    "(the return of a well-trained agent)"
                )
            env = dataclasses.replace(env, reference=REFERENCE_RETURNS[env_id])
        envs.append(env)
    config = BenchmarkConfig(
        algorithms,
        seeds,
        tuple(envs),
        _check_algorithms("hyperparams", raw.get("hyperparams"), names),
        device=str(raw.get("device", "auto")),
        bootstrap_reps=int(raw.get("bootstrap_reps", 2000)),
        resources={str(k): float(v) for k, v in (raw.get("resources") or {"num_cpus": 1}).items()},
        variants=variants,
    )
    if config.bootstrap_reps < 1:
        raise ValueError(f"bootstrap_reps must be positive, got {config.bootstrap_reps}")
    return config


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading exponent numbers without a dot (``3e-4``) as floats as YAML 1.2 does:
    YAML 1.1 makes them strings, which rl_zoo3 then takes for a learning-rate schedule."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_config(
    path: str | Path,
    settings: Sequence[str] = (),
    env_ids: Sequence[str] = (),
    budget: int | None = None,
    seeds: Sequence[int] = (),
) -> BenchmarkConfig:
    """Read and validate a YAML configuration file (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The YAML file.
    settings : sequence of str
        ``"algo.key=value"`` overrides of every environment's hyperparameters (``value`` is read as YAML,
        e.g. ``"gitstorm.imagine_starts=batch"``, ``"gitstorm.learning_rate=3e-4"``):
        the same preset, one setting changed.
    env_ids : sequence of str
        Keep only these environments of the configuration (all when empty).
    budget : int, optional
        Environment steps per run on every (kept) environment, instead of the file's budgets.
    seeds : sequence of int
        The seeds to run instead of the file's (all of the file's when empty), e.g. more seeds in another folder.
    """
    config = parse_config(yaml.load(Path(path).read_text(), _Loader))
    known = [env.env_id for env in config.envs]
    if unknown := [env_id for env_id in env_ids if env_id not in known]:
        raise ValueError(f"--env {', '.join(unknown)}: not in this configuration, whose environments are {known}")
    if env_ids:
        config = dataclasses.replace(config, envs=tuple(env for env in config.envs if env.env_id in env_ids))
    if seeds:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds must be distinct, got {list(seeds)}")
        config = dataclasses.replace(config, seeds=tuple(seeds))
    if budget is not None:
        if budget < 1:
            raise ValueError(f"--budget must be a positive number of environment steps, got {budget}")
        config = dataclasses.replace(config, envs=tuple(dataclasses.replace(env, budget=budget) for env in config.envs))
    for setting in settings:
        name, equals, value = setting.partition("=")
        algo, dot, key = name.partition(".")
        if not (equals and dot and key):
            raise ValueError(f"--set takes algo.key=value (e.g. gitstorm.imagine_starts=batch), got {setting!r}")
        if algo not in config.algorithms:
            raise ValueError(f"--set {setting}: {algo!r} is not one of this configuration's algorithms {list(config.algorithms)}")
        override = {key: yaml.load(value, _Loader)}
        config = dataclasses.replace(
            config,
            envs=tuple(
                dataclasses.replace(env, hyperparams={**env.hyperparams, algo: {**env.hyperparams.get(algo, {}), **override}})
                for env in config.envs
            ),
        )
    return config


def action_space(env: EnvSettings) -> spaces.Space:
    """The action space of an environment (made once and closed)."""
    instance = gym.make(env.env_id, **env.env_kwargs)
    try:
        return instance.action_space
    finally:
        instance.close()


def plan(config: BenchmarkConfig) -> tuple[list[RunSpec], list[Skip]]:
    """Every run of the sweep, and the (environment, algorithm) pairs skipped for their action space."""
    runs: list[RunSpec] = []
    skipped: list[Skip] = []
    for env in config.envs:
        space = action_space(env)
        for algo in config.algorithms:
            if not isinstance(space, config.algorithm(algo).action_spaces):
                skipped.append(Skip(env.env_id, algo, f"{algo} does not support {type(space).__name__} action spaces"))
                continue
            runs.extend(config.run_spec(env, algo, seed) for seed in config.seeds)
    return runs, skipped
