"""DeepMind Control Suite tasks as gymnasium environments: 64x64 pixels or proprioceptive vectors.

``make_dmc("walker-walk")`` loads the dm_control suite task, wraps it with shimmy's compatibility
env, repeats every action twice (summing rewards; ``action_repeat`` changes it), rescales actions to [-1, 1] and observes either
the 64x64 RGB image of the task camera (CnnPolicy) or the flattened float32 proprioceptive
observations (``pixels=False``, MlpPolicy). Episodes last 1000 simulator steps, i.e. 500 agent
steps with the default repeat, and end with ``truncated=True``.

Rendering is headless: unless ``MUJOCO_GL`` is set, EGL is used when it can render, else OSMesa.
The choice must be made before MuJoCo is imported, so import dm_control / mujoco only after
creating a first environment (or set ``MUJOCO_GL`` yourself).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import AddRenderObservation, FlattenObservation, TransformAction, TransformObservation
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

# The tasks of DreamerV3's DMC benchmark, which the GIT-STORM paper's DMC experiments follow.
DMC_TASKS: tuple[str, ...] = (
    "acrobot-swingup",
    "ball_in_cup-catch",
    "cartpole-balance",
    "cartpole-balance_sparse",
    "cartpole-swingup",
    "cartpole-swingup_sparse",
    "cheetah-run",
    "finger-spin",
    "finger-turn_easy",
    "finger-turn_hard",
    "hopper-hop",
    "hopper-stand",
    "pendulum-swingup",
    "quadruped-run",
    "quadruped-walk",
    "reacher-easy",
    "reacher-hard",
    "walker-run",
    "walker-stand",
    "walker-walk",
)
ACTION_REPEAT = 2
IMAGE_SIZE = 64
# Quadrupeds are seen from a following camera, as in DreamerV3; every other domain uses camera 0.
DEFAULT_CAMERAS = {"quadruped": 2}

_PROBE = (
    "import mujoco\n"
    "model = mujoco.MjModel.from_xml_string('<mujoco/>')\n"
    "with mujoco.Renderer(model, 8, 8) as renderer:\n"
    "    renderer.update_scene(mujoco.MjData(model))\n"
    "    renderer.render()\n"
)


def _can_render(backend: str) -> bool:
    """Whether MuJoCo renders with ``backend``, tried in a fresh interpreter (the choice is final once imported)."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def setup_headless_rendering() -> str:
    """Choose MuJoCo's OpenGL backend: ``MUJOCO_GL`` if set, else ``"egl"``, else ``"osmesa"``.

    Sets ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) so that child processes inherit the choice.

    Returns
    -------
    str
        The backend.

    Raises
    ------
    RuntimeError
        If neither EGL nor OSMesa can render, or MuJoCo was imported before a backend was chosen.
    """
    backend = os.environ.get("MUJOCO_GL")
    if backend:
        return backend
    if "mujoco" in sys.modules:
        raise RuntimeError(
            "mujoco was imported before MUJOCO_GL was set, so it may have picked a backend that needs a display. "
            "Set MUJOCO_GL=egl (or osmesa) in the environment, or create DMC environments before importing mujoco."
        )
    for backend in ("egl", "osmesa"):
        if _can_render(backend):
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
    raise RuntimeError(
        "MuJoCo cannot render headless: neither EGL nor OSMesa works here. Install an EGL driver "
        "(e.g. apt-get install libegl1 libgl1-mesa-dri for Mesa's software EGL, or the NVIDIA driver) or "
        "OSMesa (apt-get install libosmesa6), or set MUJOCO_GL to a backend that works."
    )


def make_dmc(
    task: str,
    pixels: bool = True,
    camera_id: int | None = None,
    fast_render: bool = False,
    render_mode: str | None = None,
    action_repeat: int = ACTION_REPEAT,
) -> gym.Env:
    """One DMC task (no ``Monitor``): the gymnasium entry point.

    Parameters
    ----------
    task : str
        ``"<domain>-<task>"`` as in dm_control's suite, e.g. ``"cartpole-balance"``, ``"ball_in_cup-catch"``.
    pixels : bool
        Observe ``(64, 64, 3)`` uint8 images (True) or the flattened float32 proprioceptive state.
    camera_id : int, optional
        Camera of the images (default: 2 for quadruped, else 0).
    fast_render : bool
        Render without shadows and anti-aliasing (5-10x faster on a CPU, but different images,
        so off by default).
    render_mode : str, optional
        None or ``"rgb_array"``; ``render()`` always returns the 64x64 camera image.
    action_repeat : int
        Simulator steps per agent step, rewards summed: 2 in DreamerV3 and the GIT-STORM paper; PlaNet's
        benchmark (and DrQ, CURL) use 8 for cartpole, 4 for most other tasks.

    Returns
    -------
    gym.Env
        Actions ``Box(-1, 1)``; each agent step is ``action_repeat`` simulator steps.
    """
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"DMC environments render off-screen only (render_mode None or 'rgb_array'), got {render_mode!r}")
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be a positive number of simulator steps, got {action_repeat}")
    domain, _, task_name = task.partition("-")
    setup_headless_rendering()
    from dm_control import suite  # after the backend choice
    from gymnasium.wrappers import RepeatAction  # gymnasium >= 1.3 (extra "dmc")
    from shimmy.dm_control_compatibility import DmControlCompatibilityV0

    if (domain, task_name) not in suite.ALL_TASKS:
        known = ", ".join(f"{d}-{t}" for d, t in suite.ALL_TASKS)
        raise ValueError(f"Unknown DMC task {task!r}; use '<domain>-<task>', one of: {known}")
    dm_env = suite.load(domain, task_name)
    render_kwargs: dict[str, Any] = dict(
        height=IMAGE_SIZE, width=IMAGE_SIZE, camera_id=DEFAULT_CAMERAS.get(domain, 0) if camera_id is None else camera_id
    )
    if fast_render:
        dm_env.physics.model.vis.quality.offsamples = 0  # no multisampling; read when the GL context is made
        render_kwargs["render_flag_overrides"] = {"shadow": False}
    env: gym.Env = DmControlCompatibilityV0(dm_env, render_mode="rgb_array", render_kwargs=render_kwargs)
    env = RepeatAction(env, action_repeat)
    assert isinstance(env.action_space, spaces.Box)  # DMC actions are bounded Boxes
    low, high = env.action_space.low, env.action_space.high
    # Float32 actions in [-1, 1], as SB3 expects, mapped onto the task's float64 bounds.
    env = TransformAction(
        env, lambda action: low + (action + 1.0) * (high - low) / 2, spaces.Box(-1.0, 1.0, env.action_space.shape, np.float32)
    )
    if pixels:
        # MuJoCo's frames are flipped views (negative strides), which torch cannot wrap: hand out copies.
        env = AddRenderObservation(env, render_only=True)
        return TransformObservation(env, np.ascontiguousarray, env.observation_space)
    env = FlattenObservation(env)
    # DMC states are unbounded float64 arrays; build the float32 space directly (no lossy bound casts).
    return TransformObservation(
        env, lambda obs: obs.astype(np.float32), spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
    )


def make_dmc_env(
    task: str,
    n_envs: int = 1,
    seed: int | None = None,
    pixels: bool = True,
    camera_id: int | None = None,
    fast_render: bool = False,
    action_repeat: int = ACTION_REPEAT,
    monitor_dir: str | None = None,
    vec_env_cls: type[DummyVecEnv | SubprocVecEnv] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """Vectorised DMC environments: pixels for ``CnnPolicy`` or vectors for ``MlpPolicy``.

    Parameters
    ----------
    task : str
        ``"<domain>-<task>"``, e.g. ``"cartpole-balance"``; the paper's set is
        :data:`~sb3_gitstorm.envs.DMC_TASKS`.
    n_envs : int
        Number of environments (the paper's DMC runs use 16).
    seed : int, optional
        Seed of the first environment (the others get ``seed + rank``).
    pixels, camera_id, fast_render, action_repeat
        See :func:`make_dmc`.
    monitor_dir : str, optional
        Where ``Monitor`` writes its CSV files.
    vec_env_cls : type, optional
        ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
    vec_env_kwargs : dict, optional
        Keyword arguments of ``vec_env_cls``.

    Returns
    -------
    VecEnv
        ``n_envs`` environments with ``Monitor`` episode statistics.
    """
    return make_vec_env(
        make_dmc,
        n_envs=n_envs,
        seed=seed,
        monitor_dir=monitor_dir,
        env_kwargs=dict(task=task, pixels=pixels, camera_id=camera_id, fast_render=fast_render, action_repeat=action_repeat),
        vec_env_cls=vec_env_cls,
        vec_env_kwargs=vec_env_kwargs,
    )
