"""Atari with the preprocessing of STORM / GIT-STORM (``protocol="storm"``) or of IRIS, DIAMOND and
DreamerV3's Atari 100k runs (``protocol="atari100k"``).

Both protocols: ``ALE/<Game>-v5`` created with ``frameskip=1``, then gymnasium's ``AtariPreprocessing``
repeats each action 4 frames, max-pools the last two, resizes to 64x64 RGB (area filter); rewards
stay raw and ALE v5 caps an episode at 108k frames (27k agent steps).

======================  ===========================  ==========================
                        ``"storm"`` (paper)          ``"atari100k"``
======================  ===========================  ==========================
sticky actions          p = 0.25 (ALE v5 default)    off
no-op starts            none                         1 to 30
action set              full (18 actions)            the game's minimal set
======================  ===========================  ==========================

``full_action_space`` overrides a protocol's action set (STORM's own code used the minimal set).
Life loss ends the *training* episode (SB3's ``EpisodicLifeEnv``, the game goes on), and the
``Monitor`` sits below that wrapper, so ``info["episode"]`` always reports whole games with raw
scores; evaluation environments (``training=False``) play whole games.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

PROTOCOLS: dict[str, dict[str, Any]] = {
    "storm": dict(repeat_action_probability=0.25, noop_max=0, full_action_space=True),
    "atari100k": dict(repeat_action_probability=0.0, noop_max=30, full_action_space=False),
}
FRAME_SKIP = 4
SCREEN_SIZE = 64


def make_atari(
    game: str, protocol: str = "storm", full_action_space: bool | None = None, render_mode: str | None = None
) -> gym.Env:
    """One preprocessed Atari game (no ``Monitor``, no life-loss termination): the gymnasium entry point.

    Parameters
    ----------
    game : str
        ALE v5 game name, e.g. ``"Pong"`` (``ALE/Pong-v5``).
    protocol : str
        ``"storm"`` or ``"atari100k"`` (see the module docstring).
    full_action_space : bool, optional
        All 18 joystick actions (True) or the game's minimal set (False); None: the protocol's.
    render_mode : str, optional
        Passed to ALE (``"rgb_array"`` renders the full 210x160 frame).

    Returns
    -------
    gym.Env
        Observations ``(64, 64, 3)`` uint8, ``Discrete`` actions, raw rewards.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown Atari protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    import ale_py  # optional dependency (extra "atari")

    gym.register_envs(ale_py)
    settings = PROTOCOLS[protocol]
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,  # AtariPreprocessing skips frames itself, so that it can max-pool the last two
        repeat_action_probability=settings["repeat_action_probability"],
        full_action_space=settings["full_action_space"] if full_action_space is None else full_action_space,
        render_mode=render_mode,
    )
    return AtariPreprocessing(
        env, noop_max=settings["noop_max"], frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE, grayscale_obs=False
    )


def make_atari_env(
    game: str,
    n_envs: int = 1,
    seed: int | None = None,
    protocol: str = "storm",
    training: bool = True,
    full_action_space: bool | None = None,
    monitor_dir: str | None = None,
    vec_env_cls: type[DummyVecEnv | SubprocVecEnv] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """Vectorised Atari environments for ``CnnPolicy`` (SB3 transposes the HxWxC images itself).

    Parameters
    ----------
    game : str
        ALE v5 game name, e.g. ``"Pong"``; any ALE game works, the Atari 100k set is in
        :data:`~sb3_gitstorm.envs.ATARI_100K_GAMES`.
    n_envs : int
        Number of environments.
    seed : int, optional
        Seed of the first environment (the others get ``seed + rank``).
    protocol : str
        ``"storm"`` (paper) or ``"atari100k"``.
    training : bool
        Life loss ends the episode (training); False plays whole games (evaluation).
    full_action_space : bool, optional
        All 18 actions (True) or the minimal set (False); None: the protocol's.
    monitor_dir : str, optional
        Where ``Monitor`` writes its CSV files.
    vec_env_cls : type, optional
        ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
    vec_env_kwargs : dict, optional
        Keyword arguments of ``vec_env_cls``.

    Returns
    -------
    VecEnv
        ``n_envs`` environments whose ``info["episode"]`` holds raw whole-game scores.
    """
    return make_vec_env(
        make_atari,
        n_envs=n_envs,
        seed=seed,
        monitor_dir=monitor_dir,
        wrapper_class=EpisodicLifeEnv if training else None,
        env_kwargs=dict(game=game, protocol=protocol, full_action_space=full_action_space),
        vec_env_cls=vec_env_cls,
        vec_env_kwargs=vec_env_kwargs,
    )
