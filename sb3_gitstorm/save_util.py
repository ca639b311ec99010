"""Checkpoints that resume exactly: atomic writes, the random-generator states, checked loads.

:class:`ResumableOffPolicyAlgorithm` gives an SB3 off-policy algorithm ``save`` / ``load`` /
``save_replay_buffer`` / ``load_replay_buffer`` built from the functions of this module.
"""

from __future__ import annotations

import io
import os
import pathlib
import random
import re
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar, overload

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv

from sb3_gitstorm.buffers import SequenceReplayBuffer, load_sequence_buffer

__all__ = [
    "ResumableOffPolicyAlgorithm",
    "atomic_write",
    "check_model_zip",
    "get_rng_states",
    "latest_checkpoint",
    "resume_seed",
    "set_rng_states",
]

SelfResumable = TypeVar("SelfResumable", bound="ResumableOffPolicyAlgorithm")


@overload
def atomic_write(path: str | pathlib.Path, suffix: str, write: Callable[[str], object]) -> None: ...


@overload
def atomic_write(
    path: str | pathlib.Path | io.BufferedIOBase, suffix: str, write: Callable[[str | io.BufferedIOBase], object]
) -> None: ...


def atomic_write(path: str | pathlib.Path | io.BufferedIOBase, suffix: str, write: Callable[[Any], object]) -> None:
    """Write a file so that ``path`` holds either the previous file or the complete new one.

    ``write`` is given a temporary path next to ``path``; once it returns, the data is flushed to
    disk and the temporary file replaces ``path`` in one ``os.replace``. An interrupted write leaves
    the previous file untouched. File objects are passed through unchanged.

    Parameters
    ----------
    path : str, pathlib.Path or file object
        Destination; like SB3, ``.<suffix>`` is appended when the path has no suffix.
    suffix : str
        Default file suffix (``"zip"`` for models, ``"pkl"`` for replay buffers).
    write : callable
        Writes the data to the path it is given (e.g. SB3's ``save_to_zip_file``).
    """
    if not isinstance(path, (str, os.PathLike)):
        write(path)
        return
    path = pathlib.Path(path)
    if path.suffix == "":
        path = path.with_name(f"{path.name}.{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600): give it the permissions a plain open() would.
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode(path: pathlib.Path) -> int:
    """Permission bits for ``path``: those of the file it replaces, else ``0o666`` less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def get_rng_states(action_space: spaces.Space) -> dict[str, Any]:
    """The states of every random generator GITSTORM training draws from.

    Python's and NumPy's global generators (replay sampling), torch's on the CPU and, once used, on
    CUDA (sampling in the networks, dropout) and the action space's (the random warm-up actions).

    Parameters
    ----------
    action_space : spaces.Space
        The training action space.

    Returns
    -------
    dict
        Picklable states, for :func:`set_rng_states`.
    """
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state(),
        "torch_cuda": th.cuda.get_rng_state_all() if th.cuda.is_initialized() else [],
        "action_space": action_space.np_random.bit_generator.state,
    }


def set_rng_states(states: dict[str, Any], action_space: spaces.Space) -> None:
    """Restore the states of :func:`get_rng_states`.

    The CUDA states are restored only on a machine with the same number of CUDA devices (a
    checkpoint from a GPU run loaded on a CPU keeps the rest).
    """
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    th.set_rng_state(states["torch"])
    if states["torch_cuda"] and th.cuda.is_available() and th.cuda.device_count() == len(states["torch_cuda"]):
        th.cuda.set_rng_state_all(states["torch_cuda"])
    action_space.np_random.bit_generator.state = states["action_space"]


def resume_seed(seed: int, num_timesteps: int) -> int:
    """The environment seed of a run of ``seed`` resumed at ``num_timesteps``: another one at every
    resume point, the same one for every resume from that point (a resumed run stays reproducible)."""
    return int(np.random.SeedSequence((seed % 2**32, num_timesteps)).generate_state(1)[0])


def latest_checkpoint(
    folder: str | pathlib.Path, name_prefix: str = "rl_model"
) -> tuple[pathlib.Path, pathlib.Path | None] | None:
    """The newest checkpoint that SB3's ``CheckpointCallback`` finished writing in ``folder``.

    With ``save_replay_buffer=True`` a checkpoint is a model and a replay buffer, written one after
    the other: a run killed in between leaves a model without its replay, and resuming from that
    would start the replay afresh. So when ``folder`` holds replay buffers, only checkpoints with
    both files count. Temporary files of interrupted writes (:func:`atomic_write`) never match.

    Parameters
    ----------
    folder : str or pathlib.Path
        The callback's ``save_path``.
    name_prefix : str
        The callback's ``name_prefix``.

    Returns
    -------
    tuple or None
        ``(model zip, replay buffer pkl or None)`` of the checkpoint with the most steps; None if
        there is none.
    """

    def by_steps(kind: str, suffix: str) -> dict[int, pathlib.Path]:
        pattern = re.compile(rf"{re.escape(name_prefix)}_{kind}(\d+)_steps\.{suffix}")
        matches = ((pattern.fullmatch(path.name), path) for path in pathlib.Path(folder).glob(f"{name_prefix}_*.{suffix}"))
        return {int(match[1]): path for match, path in matches if match}

    models, replays = by_steps("", "zip"), by_steps("replay_buffer_", "pkl")
    complete = models.keys() & replays.keys() if replays else models.keys()
    if not complete:
        return None
    steps = max(complete)
    return models[steps], replays.get(steps)


def check_model_zip(path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """Raise one clear error for a file that is not a complete saved model.

    SB3 reports a truncated zip as "wasn't a zip-file" and a foreign zip with an assertion; this
    tells a truncated or corrupted model (e.g. from a copy of a run that was killed mid-save, or a
    partial download) from another kind of file. File objects and missing files are left to SB3.

    Raises
    ------
    ValueError
        If ``path`` is not a zip file, a truncated or corrupted one, or a zip without a saved model.
    """
    if not isinstance(path, (str, os.PathLike)):
        return
    path = pathlib.Path(path)
    if not path.is_file() and path.with_name(f"{path.name}.zip").is_file():  # SB3 adds the suffix too
        path = path.with_name(f"{path.name}.zip")
    if not path.is_file():
        return
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    try:
        with zipfile.ZipFile(path) as archive:
            broken, names = archive.testzip(), archive.namelist()
    except (zipfile.BadZipFile, EOFError) as error:
        what = "a truncated or corrupted zip file" if is_zip else "not a zip file (GITSTORM.save writes zip files)"
        raise ValueError(f"{path} is {what}, not a loadable model") from error
    if broken is not None:
        raise ValueError(f"{path} is a corrupted zip file, not a loadable model: its entry {broken!r} fails the CRC check")
    if "data" not in names:
        raise ValueError(f"{path} is a zip file but not a saved SB3 model: it has no 'data' entry (entries: {names[:5]})")


class ResumableOffPolicyAlgorithm(OffPolicyAlgorithm):
    """An SB3 off-policy algorithm whose files are written atomically and resume the run exactly.

    The model file holds the states of the random generators too (:func:`get_rng_states`), which
    ``load`` restores, so that a resumed run draws what the uninterrupted one would have. SB3 calls
    callbacks (e.g. ``CheckpointCallback``) after a step's environment step and before its
    transition is stored; saved there, the file holds the state at the start of that step
    (``num_timesteps`` one step lower, the generators before its action), and the resumed run takes
    that step again. A subclass marks that start with :meth:`_begin_step` when it picks the
    step's action and its end with :meth:`_end_step` when it stores the transition, and calls
    :meth:`_resume_random_streams` at the end of ``_setup_model``.
    """

    replay_buffer: SequenceReplayBuffer  # type: ignore[assignment]  # a sequence buffer, not SB3's ReplayBuffer
    # (num_timesteps, random-generator states) at the start of the step in progress, for save().
    _step_start: tuple[int, dict[str, Any]] | None = None
    _rng_states: dict[str, Any] | None = None  # only set in a saved file

    def _begin_step(self) -> None:
        self._step_start = (self.num_timesteps, get_rng_states(self.action_space))

    def _end_step(self) -> None:
        self._step_start = None

    def _resume_random_streams(self) -> None:
        """A loaded checkpoint continues its random streams, not the seed's, and its environments get
        a seed of their own (:func:`resume_seed`).

        ``_setup_model`` seeds everything with the run's seed, as SB3 does on ``load``; the generators
        are then restored from the file, but the environments' own generators are not saved: seeded
        with the run's seed again, every resumed segment would replay the first segment's episodes.
        """
        if self._rng_states is not None:
            set_rng_states(self._rng_states, self.action_space)
            self._rng_states = None
        if self.num_timesteps > 0 and self.seed is not None and self.env is not None:
            self.env.seed(resume_seed(self.seed, self.num_timesteps))

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_step_start"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        """The policy and each optimiser it holds (their states resume the run)."""
        optimizers = [f"policy.{name}" for name, value in vars(self.policy).items() if isinstance(value, th.optim.Optimizer)]
        return ["policy", *optimizers], []

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Any = None,
        include: Any = None,
    ) -> None:
        """Save the model to a zip file, atomically (an interrupted save keeps the previous file)."""
        num_timesteps = self.num_timesteps
        self.num_timesteps, self._rng_states = self._step_start or (num_timesteps, get_rng_states(self.action_space))
        try:
            atomic_write(path, "zip", lambda target: super(ResumableOffPolicyAlgorithm, self).save(target, exclude, include))
        finally:
            self.num_timesteps, self._rng_states = num_timesteps, None

    @classmethod
    def load(
        cls: type[SelfResumable],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfResumable:
        """SB3's ``load``, with a clear error for a truncated, corrupted or foreign file (see :func:`check_model_zip`)."""
        check_model_zip(path)
        return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Save the replay buffer as a pickle file, atomically."""
        atomic_write(path, "pkl", lambda target: save_to_pkl(target, self.replay_buffer, self.verbose))

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """Load a replay buffer saved by :meth:`save_replay_buffer`, after checking that it fits this model.

        Parameters
        ----------
        path : str, pathlib.Path or file object
            The pickle file.
        truncate_last_traj : bool
            The newest step of every environment is marked truncated (its episode does not go on:
            ``learn`` resets the environments). False when the same, un-reset environments continue.

        Raises
        ------
        ValueError
            If the file is truncated, not a GITSTORM replay buffer, or one in another replay format
            (written by a version of sb3_gitstorm with another :data:`~sb3_gitstorm.buffers.REPLAY_FORMAT_VERSION`)
            or recorded with another observation space, action space or number of environments. The
            current buffer is kept.
        """
        space = self.replay_buffer.observation_space  # what the model stores (e.g. resized images)
        buffer = load_sequence_buffer(path, space, self.action_space, self.n_envs, self.verbose)
        if truncate_last_traj and (buffer.full or buffer.pos > 0):
            last = (buffer.pos - 1) % buffer.buffer_size
            buffer.truncated[last] |= ~buffer.terminated[last]
        buffer.device = self.device
        self.replay_buffer = buffer
