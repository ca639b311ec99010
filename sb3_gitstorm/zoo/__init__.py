"""rl_zoo3 integration: ``gitstorm`` next to the zoo's algorithms, and this package's hyperparameter files.

``python -m sb3_gitstorm.zoo.train`` and ``python -m sb3_gitstorm.zoo.enjoy`` are rl_zoo3's own
``train`` / ``enjoy`` (same arguments, same log folders) after this module has

- added ``GITSTORM`` to ``rl_zoo3.ALGOS`` (and an Optuna search space for ``-optimize``),
- registered the gymnasium ids of :mod:`sb3_gitstorm.envs`, and made rl_zoo3 treat the Atari ones as
  Atari (stochastic evaluation, ``enjoy`` prints the game scores of ``Monitor``).

Without ``--conf-file``, ``train`` reads ``sb3_gitstorm/hyperparams/<algo>.yml`` when that file lists
the environment or rl_zoo3 has no file for the algorithm (so ``--algo gitstorm`` always finds its
file, ``--algo ppo --env gitstorm/atari-Pong-v0`` gets the matching PPO settings, and
``--algo ppo --env LunarLander-v3`` uses the zoo's tuned ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import rl_zoo3
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs import ATARI_100K_GAMES, atari_id

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"
ZOO_HYPERPARAMS_DIR = Path(rl_zoo3.__file__).resolve().parent / "hyperparams"


def sample_gitstorm_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of ``train -optimize``: learning rates, discount, entropy bonus, imagination horizon."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "actor_learning_rate": trial.suggest_float("actor_learning_rate", 1e-5, 1e-3, log=True),
        "critic_learning_rate": trial.suggest_float("critic_learning_rate", 1e-5, 1e-3, log=True),
        "gamma": trial.suggest_categorical("gamma", [0.97, 0.985, 0.99, 0.997]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-5, 1e-2, log=True),
        "imagine_horizon": trial.suggest_categorical("imagine_horizon", [8, 16, 24]),
    }


def default_conf_file(algo: str, env_id: str) -> str | None:
    """The hyperparameter file ``train`` reads when no ``--conf-file`` is given.

    Parameters
    ----------
    algo : str
        Algorithm name as in ``rl_zoo3.ALGOS``.
    env_id : str
        Gymnasium id.

    Returns
    -------
    str or None
        This package's ``<algo>.yml`` if it lists ``env_id`` or rl_zoo3 has no file for ``algo``;
        None to let rl_zoo3 use its own file.
    """
    ours = HYPERPARAMS_DIR / f"{algo}.yml"
    if not ours.is_file():
        return None
    if not (ZOO_HYPERPARAMS_DIR / f"{algo}.yml").is_file() or env_id in yaml.safe_load(ours.read_text()):
        return str(ours)
    return None


rl_zoo3.ALGOS.setdefault("gitstorm", GITSTORM)
HYPERPARAMS_SAMPLER.setdefault("gitstorm", sample_gitstorm_params)
# The sampled names are GITSTORM's own arguments: nothing to convert when loading a trial.
HYPERPARAMS_CONVERTER.setdefault("gitstorm", lambda sampled_params: dict(sampled_params))

# rl_zoo3 recognises Atari by ALE's entry point; ours wraps ALE with the paper's preprocessing.
_ATARI_IDS = frozenset(atari_id(game) for game in ATARI_100K_GAMES)
_is_ale = ExperimentManager.is_atari
ExperimentManager.is_atari = staticmethod(lambda env_id: env_id in _ATARI_IDS or _is_ale(env_id))  # type: ignore[method-assign]
