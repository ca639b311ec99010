"""The 26 games of the Atari 100k benchmark and their published random and human scores.

Scores are the per-game reference values used by SimPLe, IRIS, DreamerV3, STORM and GIT-STORM
(random and human from Mnih et al. 2015 / Badia et al. 2020). A human-normalised score is
``(score - random) / (human - random)``: 0 plays like a random agent, 1 like the human tester.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ReferenceScores(NamedTuple):
    """Published scores of one game: a uniformly random agent and the human tester."""

    random: float
    human: float


# ALE v5 game names (``ALE/<name>-v5``).
ATARI_100K_SCORES: dict[str, ReferenceScores] = {
    "Alien": ReferenceScores(227.8, 7127.7),
    "Amidar": ReferenceScores(5.8, 1719.5),
    "Assault": ReferenceScores(222.4, 742.0),
    "Asterix": ReferenceScores(210.0, 8503.3),
    "BankHeist": ReferenceScores(14.2, 753.1),
    "BattleZone": ReferenceScores(2360.0, 37187.5),
    "Boxing": ReferenceScores(0.1, 12.1),
    "Breakout": ReferenceScores(1.7, 30.5),
    "ChopperCommand": ReferenceScores(811.0, 7387.8),
    "CrazyClimber": ReferenceScores(10780.5, 35829.4),
    "DemonAttack": ReferenceScores(152.1, 1971.0),
    "Freeway": ReferenceScores(0.0, 29.6),
    "Frostbite": ReferenceScores(65.2, 4334.7),
    "Gopher": ReferenceScores(257.6, 2412.5),
    "Hero": ReferenceScores(1027.0, 30826.4),
    "Jamesbond": ReferenceScores(29.0, 302.8),
    "Kangaroo": ReferenceScores(52.0, 3035.0),
    "Krull": ReferenceScores(1598.0, 2665.5),
    "KungFuMaster": ReferenceScores(258.5, 22736.3),
    "MsPacman": ReferenceScores(307.3, 6951.6),
    "Pong": ReferenceScores(-20.7, 14.6),
    "PrivateEye": ReferenceScores(24.9, 69571.3),
    "Qbert": ReferenceScores(163.9, 13455.0),
    "RoadRunner": ReferenceScores(11.5, 7845.0),
    "Seaquest": ReferenceScores(68.4, 42054.7),
    "UpNDown": ReferenceScores(533.4, 11693.2),
}

ATARI_100K_GAMES: tuple[str, ...] = tuple(ATARI_100K_SCORES)


def human_normalized_score(game: str, score: float | np.ndarray) -> float | np.ndarray:
    """Human-normalised score(s) of an Atari 100k game.

    Parameters
    ----------
    game : str
        ALE v5 game name, e.g. ``"Pong"`` or ``"MsPacman"``.
    score : float or np.ndarray
        Raw game score(s), any shape.

    Returns
    -------
    float or np.ndarray
        ``(score - random) / (human - random)``, same shape as ``score``.
    """
    if game not in ATARI_100K_SCORES:
        raise KeyError(f"{game!r} is not an Atari 100k game; known games: {', '.join(ATARI_100K_GAMES)}")
    random, human = ATARI_100K_SCORES[game]
    normalized = (np.asarray(score, dtype=np.float64) - random) / (human - random)
    return float(normalized) if normalized.ndim == 0 else normalized
