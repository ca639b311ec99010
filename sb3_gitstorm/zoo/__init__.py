"""rl_zoo3 integration: ``gitstorm`` next to the zoo's algorithms, and this package's hyperparameter files.

``python -m sb3_gitstorm.zoo.<script>`` runs rl_zoo3's ``python -m rl_zoo3.<script>`` (same arguments,
same log folders) for ``train``, ``enjoy``, ``record_video``, ``record_training``, ``push_to_hub`` and
``load_from_hub``. Importing this module

- adds ``GITSTORM`` to ``rl_zoo3.ALGOS`` (and an Optuna search space for ``-optimize``),
- registers the gymnasium ids of :mod:`sb3_gitstorm.envs`,

and changes nothing else in rl_zoo3. The scripts run with :class:`GitstormExperimentManager` in place of
rl_zoo3's ``ExperimentManager`` (:func:`run_zoo_script`), which

- treats the Atari ids of :mod:`sb3_gitstorm.envs` as Atari (stochastic evaluation, ``enjoy`` prints the
  game scores of ``Monitor``),
- makes ``--save-freq`` checkpoints resumable: with ``--save-replay-buffer`` each checkpoint holds its
  replay buffer, and ``-i`` given a checkpoint (``rl_model_<steps>_steps.zip``, or the run folder:
  see :mod:`sb3_gitstorm.zoo.train`) loads the replay buffer of that checkpoint and continues the
  run's timesteps up to ``-n`` instead of starting a new count.

Without ``--conf-file``, ``train`` reads ``sb3_gitstorm/hyperparams/<algo>.yml`` when that file lists
the environment or rl_zoo3 has no file for the algorithm (so ``--algo gitstorm`` always finds its
file, ``--algo ppo --env gitstorm/atari-Pong-v0`` gets the matching PPO settings, and
``--algo ppo --env LunarLander-v3`` uses the zoo's tuned ones).
"""

from __future__ import annotations

import contextlib
import functools
import re
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import rl_zoo3
import rl_zoo3.exp_manager
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs import ATARI_100K_GAMES, atari_id

__all__ = [
    "CHECKPOINT",
    "HYPERPARAMS_DIR",
    "ZOO_HYPERPARAMS_DIR",
    "GitstormExperimentManager",
    "checkpoint_replay_buffer",
    "default_conf_file",
    "gitstorm_experiment_manager",
    "run_zoo_script",
    "sample_gitstorm_params",
]

CHECKPOINT = re.compile(r"(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip")  # CheckpointCallback's model files
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


def checkpoint_replay_buffer(model_path: str) -> Path | None:
    """The replay buffer ``CheckpointCallback`` wrote with the checkpoint ``model_path``, if it is one and there is one."""
    match = CHECKPOINT.fullmatch(Path(model_path).name)
    if match is None:
        return None
    path = Path(model_path).with_name(f"{match['prefix']}_replay_buffer_{match['steps']}_steps.pkl")
    return path if path.is_file() else None


_ATARI_IDS = frozenset(atari_id(game) for game in ATARI_100K_GAMES)


class GitstormExperimentManager(ExperimentManager):
    """rl_zoo3's ``ExperimentManager`` that knows this package's Atari ids and resumes ``--save-freq`` checkpoints."""

    @staticmethod
    def is_atari(env_id: str) -> bool:
        # rl_zoo3 recognises Atari by ALE's entry point; ours wraps ALE with the paper's preprocessing.
        return env_id in _ATARI_IDS or ExperimentManager.is_atari(env_id)

    def create_callbacks(self) -> None:
        super().create_callbacks()
        for callback in self.callbacks:
            if isinstance(callback, CheckpointCallback):  # --save-replay-buffer: at every checkpoint, not only at the end
                callback.save_replay_buffer = self.save_replay_buffer

    def _load_pretrained_agent(self, hyperparams: dict[str, Any], env: VecEnv) -> BaseAlgorithm:
        model = super()._load_pretrained_agent(hyperparams, env)  # the zoo's: the run folder's replay_buffer.pkl, if any
        replay_buffer = checkpoint_replay_buffer(self.trained_agent)
        if replay_buffer is not None and hasattr(model, "load_replay_buffer"):
            print(f"Loading the checkpoint's replay buffer {replay_buffer}")
            model.load_replay_buffer(replay_buffer, truncate_last_traj=self.truncate_last_trajectory)
        return model

    def learn(self, model: BaseAlgorithm) -> None:
        if CHECKPOINT.fullmatch(Path(self.trained_agent).name) is None:
            super().learn(model)
            return
        # A checkpoint continues its run: same timestep counter, up to the run's budget.
        self.n_timesteps = max(self.n_timesteps - model.num_timesteps, 0)
        learn = functools.partialmethod(type(model).learn, reset_num_timesteps=False)
        with mock.patch.object(type(model), "learn", learn):  # on the class: an instance attribute would be saved
            super().learn(model)


@contextlib.contextmanager
def gitstorm_experiment_manager() -> Iterator[None]:
    """Within the block, rl_zoo3's code that looks up ``ExperimentManager`` gets :class:`GitstormExperimentManager`."""
    with mock.patch.object(rl_zoo3.exp_manager, "ExperimentManager", GitstormExperimentManager):
        yield


def run_zoo_script(script: str, argv: list[str]) -> None:
    """Run ``python -m rl_zoo3.<script> <argv>`` in this process, with GITSTORM and :class:`GitstormExperimentManager`.

    Parameters
    ----------
    script : str
        Module name under ``rl_zoo3``: ``train``, ``enjoy``, ``record_video``, ...
    argv : list of str
        The command line arguments.
    """
    with mock.patch.object(sys, "argv", [f"rl_zoo3.{script}", *argv]), gitstorm_experiment_manager():
        runpy.run_module(f"rl_zoo3.{script}", run_name="__main__", alter_sys=True)
