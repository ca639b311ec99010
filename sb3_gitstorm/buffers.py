"""Sequence replay buffer: windows of consecutive steps for the world model and the imagination context."""

from __future__ import annotations

import io
import pathlib
import pickle
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.save_util import load_from_pkl

__all__ = [
    "SequenceReplayBuffer",
    "SequenceSamples",
    "check_finite",
    "check_replay_sizes",
    "library_version",
    "load_sequence_buffer",
]


def check_replay_sizes(buffer_size: int, n_envs: int, learning_starts: int, batch_size: int, batch_length: int) -> None:
    """Raise a ValueError unless a buffer of ``buffer_size`` steps over ``n_envs`` environments fills
    during the ``learning_starts`` warm-up and holds a window of ``batch_length`` steps per environment,
    and ``batch_size`` is at least one window."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if learning_starts > buffer_size:
        raise ValueError(f"learning_starts ({learning_starts}) is larger than buffer_size ({buffer_size})")
    if batch_length > buffer_size // n_envs:
        raise ValueError(
            f"batch_length ({batch_length}) is larger than the {buffer_size // n_envs} steps per "
            f"environment that buffer_size={buffer_size} holds with {n_envs} environment(s)"
        )


def check_finite(values: np.ndarray, what: str, timestep: int) -> None:
    """Reject NaN / inf from the environment before it is acted on or stored: one such value in
    the replay buffer would turn every later world-model update into NaN.

    Parameters
    ----------
    values : np.ndarray
        ``(n_envs, ...)``: observations or rewards of every environment.
    what : str
        What they are, for the message.
    timestep : int
        The timestep, for the message.
    """
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        return  # integer observations (uint8 images) cannot hold NaN or inf
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Environment(s) {np.flatnonzero(bad).tolist()} returned NaN or inf in the {what} at timestep "
            f"{timestep}. GITSTORM does not train on non-finite data; nothing of this step was stored. "
            "Fix the environment (stable_baselines3.common.vec_env.VecCheckNan helps to find the source)."
        )


class SequenceSamples(NamedTuple):
    """A batch of windows of ``L`` consecutive steps of one environment each.

    Attributes
    ----------
    observations : th.Tensor
        ``(B, L, *obs_shape)``, the stored dtype (uint8 for images).
    actions : th.Tensor
        ``(B, L)`` long indices (Discrete) or ``(B, L, A)`` float actions scaled to [-1, 1] (Box).
    rewards : th.Tensor
        ``(B, L)`` float.
    terminated, truncated, episode_starts : th.Tensor
        ``(B, L)`` bool: the step ended the episode by termination / by a time limit; the
        observation is the first of its episode.
    """

    observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    terminated: th.Tensor
    truncated: th.Tensor
    episode_starts: th.Tensor


class SequenceReplayBuffer(BaseBuffer):
    """Ring buffer of steps ``(o_t, a_t, r_t, terminated_t, truncated_t, first_t)`` per environment.

    Each observation is stored once, in its own dtype (images stay uint8); there is no
    ``next_observation`` copy: the next step of the same column is the next observation, and the
    ``episode_starts`` flag says when it belongs to a new episode. Discrete actions take the
    smallest integer type that holds them, so a 64x64 RGB step costs 1.0007x its frame bytes.
    Windows never cross the write position, so every window is a contiguous piece of one
    environment's history (it may contain episode boundaries, which the world model masks).

    Parameters
    ----------
    buffer_size : int
        Total steps stored over all environments (``buffer_size // n_envs`` per environment).
    observation_space, action_space : spaces.Space
        Observation space as stored (the model's, e.g. resized images) and Discrete or Box actions.
    device : th.device or str
        Where sampled tensors go.
    n_envs : int
        Number of parallel environments (one column each).
    on_device : bool
        Keep the arrays as torch tensors on ``device`` (e.g. the GPU) instead of numpy arrays in
        host memory: sampling then gathers the windows on the device, with no host-to-device copy
        of the observations (each ``add`` copies one step). Costs device memory for the whole
        capacity up front.
    """

    observation_space: spaces.Box
    ARRAYS = SequenceSamples._fields  # the per-step arrays, named and ordered as in a batch

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Box,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        on_device: bool = False,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.on_device = on_device
        self.discrete = isinstance(action_space, spaces.Discrete)
        size = (self.buffer_size, n_envs)
        action_shape: tuple[int, ...]
        if isinstance(action_space, spaces.Discrete):
            action_shape, action_dtype = size, np.min_scalar_type(max(int(action_space.n) - 1, 0))
        else:
            action_shape, action_dtype = (*size, self.action_dim), np.dtype(np.float32)
        self.observations = self._zeros((*size, *self.obs_shape), observation_space.dtype)
        self.actions = self._zeros(action_shape, action_dtype)
        self.rewards = self._zeros(size, np.float32)
        self.terminated = self._zeros(size, bool)
        self.truncated = self._zeros(size, bool)
        self.episode_starts = self._zeros(size, bool)
        self.version = library_version()  # for the messages
        self.format_version = REPLAY_FORMAT_VERSION  # a saved buffer is read by any version with its format

    def _zeros(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray | th.Tensor:
        if self.on_device:
            return th.zeros(shape, dtype=th.from_numpy(np.zeros(0, dtype)).dtype, device=self.device)
        return np.zeros(shape, dtype=dtype)

    def _arrays(self) -> tuple[np.ndarray | th.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.ARRAYS)

    def __getstate__(self) -> dict[str, Any]:
        # A buffer that is not full pickles its filled rows only, not the preallocated capacity:
        # 1.5k steps of a 100k-step 64x64 pixel buffer are 18 MB, not 1.2 GB of zeros.
        state = self.__dict__.copy()
        if not self.full:
            for name in self.ARRAYS:
                # A tensor view would pickle its whole storage: clone the rows.
                rows = state[name][: self.pos]
                state[name] = rows.clone() if isinstance(rows, th.Tensor) else rows
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in self.ARRAYS:
            rows = getattr(self, name)
            if len(rows) < self.buffer_size:  # a compact pickle: back to the full capacity, free rows zero
                shape = (self.buffer_size, *rows.shape[1:])
                array = rows.new_zeros(shape) if isinstance(rows, th.Tensor) else np.zeros(shape, rows.dtype)
                array[: self.pos] = rows
                setattr(self, name, array)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        return sum(a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in self._arrays())

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        episode_start: np.ndarray,
    ) -> None:
        """Store one step of every environment.

        Parameters
        ----------
        obs : np.ndarray
            ``(n_envs, *obs_shape)``: the observation the action was taken at.
        action : np.ndarray
            ``(n_envs,)`` / ``(n_envs, 1)`` indices or ``(n_envs, A)`` scaled actions.
        reward, done : np.ndarray
            ``(n_envs,)``: reward and done flag returned by ``VecEnv.step``.
        infos : list of dict
            ``TimeLimit.truncated`` tells truncation from termination.
        episode_start : np.ndarray
            ``(n_envs,)`` bool: ``obs`` is the first observation of its episode.
        """
        truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        step = (
            np.asarray(obs).reshape(self.n_envs, *self.obs_shape),
            np.asarray(action).reshape(self.actions.shape[1:]),
            np.asarray(reward).reshape(self.n_envs),
            done & ~truncated,
            done & truncated,
            np.asarray(episode_start, dtype=bool).reshape(self.n_envs),
        )
        for array, value in zip(self._arrays(), step, strict=True):
            array[self.pos] = th.as_tensor(value, device=self.device) if self.on_device else value
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def can_sample(self, sequence_length: int) -> bool:
        """Whether every column holds at least one window of ``sequence_length`` steps."""
        return self.size() >= sequence_length

    def sample(self, batch_size: int, sequence_length: int) -> SequenceSamples:  # type: ignore[override]
        """Sample ``batch_size`` windows of ``sequence_length`` consecutive steps, uniformly.

        Raises
        ------
        ValueError
            If the buffer holds fewer than ``sequence_length`` steps per environment.
        """
        if not self.can_sample(sequence_length):
            raise ValueError(
                f"cannot sample windows of {sequence_length} steps: the buffer holds {self.size()} steps per environment"
            )
        # Valid starts are the ``size - L + 1`` windows that end before the write position.
        n_starts = self.size() - sequence_length + 1
        first = self.pos if self.full else 0
        starts = (first + np.random.randint(0, n_starts, size=batch_size)) % self.buffer_size
        env_indices = np.random.randint(0, self.n_envs, size=batch_size)
        return self._get_samples(starts, env_indices, sequence_length)

    def _get_samples(self, starts: np.ndarray, env_indices: np.ndarray, sequence_length: int) -> SequenceSamples:  # type: ignore[override]
        rows: np.ndarray | th.Tensor = (starts[:, None] + np.arange(sequence_length)) % self.buffer_size
        cols: np.ndarray | th.Tensor = env_indices[:, None]
        if self.on_device:  # gather on the device; only the indices travel
            rows, cols = th.as_tensor(rows, device=self.device), th.as_tensor(cols, device=self.device)
        samples = [th.as_tensor(a[rows, cols], device=self.device) for a in self._arrays()]
        if self.discrete:
            samples[1] = samples[1].long()
        return SequenceSamples(*samples)


# Version of what a pickled SequenceReplayBuffer holds (its attributes, their meaning and layout): raise it
# with every change of them, not with the library's version, so that replay files survive upgrades.
REPLAY_FORMAT_VERSION = 1
# Files from before the format version was recorded: the library versions that wrote format 1.
FORMAT_OF_UNNUMBERED = {"0.1.0": 1}


def library_version() -> str:
    from sb3_gitstorm import __version__  # here: the package imports this module before defining it

    return __version__


def load_sequence_buffer(
    path: str | pathlib.Path | io.BufferedIOBase,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    n_envs: int,
    verbose: int = 0,
) -> SequenceReplayBuffer:
    """Load a pickled :class:`SequenceReplayBuffer` and check that it fits a model.

    Parameters
    ----------
    path : str, pathlib.Path or file object
        The pickle file (``GITSTORM.save_replay_buffer``).
    observation_space, action_space : spaces.Space
        The model's (stored) observation space and its action space.
    n_envs : int
        The model's number of environments.
    verbose : int
        Passed to SB3's ``load_from_pkl``.

    Raises
    ------
    ValueError
        If the file is truncated or not a pickle, holds something else than a GITSTORM replay buffer,
        or one in another replay format (:data:`REPLAY_FORMAT_VERSION`) or recorded with other spaces or
        another number of environments.
    """
    try:
        buffer = load_from_pkl(path, verbose)
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError) as error:
        raise ValueError(f"{path} is not a pickled replay buffer, or a truncated one: {error}") from error
    if not isinstance(buffer, SequenceReplayBuffer):
        raise ValueError(f"{path} holds a {type(buffer).__name__}, not a GITSTORM SequenceReplayBuffer")
    version = getattr(buffer, "version", None)
    file_format = getattr(buffer, "format_version", FORMAT_OF_UNNUMBERED.get(str(version)))
    if file_format != REPLAY_FORMAT_VERSION:
        writer = f"sb3_gitstorm {version}" if version else "a version of sb3_gitstorm that did not record its version"
        layout = f"replay format {file_format}" if file_format else "an unknown replay format"
        raise ValueError(
            f"the replay buffer in {path} was written by {writer} in {layout}, this is sb3_gitstorm "
            f"{library_version()}, which reads replay format {REPLAY_FORMAT_VERSION}: replay files hold the "
            "buffer's internals and only versions with the same format read them"
        )
    for name, stored, expected in (
        ("observation space", buffer.observation_space, observation_space),
        ("action space", buffer.action_space, action_space),
        ("number of environments", buffer.n_envs, n_envs),
    ):
        if stored != expected:
            raise ValueError(f"the replay buffer in {path} was recorded with {name} {stored}, this model has {expected}")
    return buffer
