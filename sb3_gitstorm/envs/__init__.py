"""Environments of the GIT-STORM paper: Atari 100k (two protocols) and the DeepMind Control Suite.

Importing this package (``import sb3_gitstorm`` does) registers gymnasium ids, so that rl_zoo3 and ``gym.make`` build the
environments by name (the heavy dependencies load when an environment is made):

- ``gitstorm/atari-<Game>-v0`` for the 26 Atari 100k games (``protocol="storm"`` by default; pass
  ``protocol="atari100k"`` for the other one); life-loss termination is a wrapper on top of
  ``Monitor`` (:func:`make_atari_env`, or ``env_wrapper`` in the zoo files), not part of the id;
- ``gitstorm/dmc-<domain>-<task>-v0`` (64x64 pixels) and ``gitstorm/dmc-<domain>-<task>-proprio-v0``
  (state vectors) for the DMC tasks of :data:`DMC_TASKS`;
- ``gitstorm/JumpingDot-v0``: a small stochastic image task (:class:`~sb3_gitstorm.envs.toy.JumpingDotEnv`);
- ``gitstorm/WhichHalf-v0``: a reactive image task (:class:`~sb3_gitstorm.envs.toy.WhichHalfEnv`).
"""

from __future__ import annotations

import gymnasium as gym

from sb3_gitstorm.envs.atari import make_atari, make_atari_env
from sb3_gitstorm.envs.atari100k import ATARI_100K_GAMES, ATARI_100K_SCORES, ReferenceScores, human_normalized_score
from sb3_gitstorm.envs.dmc import DMC_TASKS, make_dmc, make_dmc_env, setup_headless_rendering
from sb3_gitstorm.envs.toy import JumpingDotEnv


def atari_id(game: str) -> str:
    """Gymnasium id of an Atari 100k game, e.g. ``"gitstorm/atari-Pong-v0"``."""
    return f"gitstorm/atari-{game}-v0"


def dmc_id(task: str, pixels: bool = True) -> str:
    """Gymnasium id of a DMC task, e.g. ``"gitstorm/dmc-walker-walk-v0"`` (``-proprio-v0`` for vectors)."""
    return f"gitstorm/dmc-{task}-v0" if pixels else f"gitstorm/dmc-{task}-proprio-v0"


def _register_envs() -> None:
    for game in ATARI_100K_GAMES:
        gym.register(atari_id(game), entry_point="sb3_gitstorm.envs.atari:make_atari", kwargs=dict(game=game))
    for task in DMC_TASKS:
        for pixels in (True, False):
            kwargs = dict(task=task, pixels=pixels)
            gym.register(dmc_id(task, pixels), entry_point="sb3_gitstorm.envs.dmc:make_dmc", kwargs=kwargs)
    gym.register("gitstorm/JumpingDot-v0", entry_point="sb3_gitstorm.envs.toy:JumpingDotEnv")
    gym.register("gitstorm/WhichHalf-v0", entry_point="sb3_gitstorm.envs.toy:WhichHalfEnv")


_register_envs()

__all__ = [
    "ATARI_100K_GAMES",
    "ATARI_100K_SCORES",
    "DMC_TASKS",
    "JumpingDotEnv",
    "ReferenceScores",
    "atari_id",
    "dmc_id",
    "human_normalized_score",
    "make_atari",
    "make_atari_env",
    "make_dmc",
    "make_dmc_env",
    "setup_headless_rendering",
]
