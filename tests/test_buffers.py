"""The sequence replay buffer: storage, flags and window sampling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_gitstorm.buffers import SequenceReplayBuffer

IMAGE = spaces.Box(0, 255, (3, 64, 64), np.uint8)


def fill(buffer: SequenceReplayBuffer, steps: int, done_every: int = 0, truncate: bool = False) -> None:
    """Store ``steps`` steps whose observation / action / reward encode the step counter."""
    n = buffer.n_envs
    start = np.ones(n, dtype=bool)
    for t in range(steps):
        obs = np.full((n, *buffer.obs_shape), t % 251, dtype=buffer.observation_space.dtype)
        if obs.ndim == 2:
            obs[:, 0] = np.arange(n)  # vector observations also record their env column
        action = np.full(n, t % 3) if buffer.discrete else np.full((n, buffer.action_dim), t % 3, np.float32)
        done = np.full(n, done_every > 0 and (t + 1) % done_every == 0)
        infos = [{"TimeLimit.truncated": truncate} for _ in range(n)]
        buffer.add(obs, action, np.full(n, float(t)), done, infos, episode_start=start)
        start = done


def test_images_stored_once_as_uint8() -> None:
    buffer = SequenceReplayBuffer(1000, IMAGE, spaces.Discrete(3), "cpu")
    assert buffer.observations.dtype == np.uint8
    frame = int(np.prod(IMAGE.shape))
    assert buffer.nbytes / buffer.buffer_size <= 1.05 * frame
    assert not hasattr(buffer, "next_observations")


def test_windows_are_consecutive_and_never_cross_the_write_position() -> None:
    vector = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    buffer = SequenceReplayBuffer(50, vector, spaces.Discrete(3), "cpu", n_envs=2)
    assert buffer.buffer_size == 25
    with pytest.raises(ValueError, match="cannot sample"):
        buffer.sample(4, 8)
    fill(buffer, 60)  # wraps around: the oldest 35 steps per column are overwritten
    batch = buffer.sample(2000, 8)
    t = batch.rewards.numpy()
    assert batch.observations.shape == (2000, 8, 2) and batch.actions.shape == (2000, 8)
    assert np.all(np.diff(t, axis=1) == 1)  # consecutive steps, never wrapping into older data
    assert t.min() == 35 and t.max() == 59  # every window lies in the 25 most recent steps
    assert set(batch.observations[:, 0, 0].numpy().tolist()) == {0.0, 1.0}  # both env columns sampled
    assert np.array_equal(batch.actions.numpy(), t.astype(int) % 3)


def test_episode_flags() -> None:
    vector = spaces.Box(-1, 1, (1,), np.float32)
    for truncate in (False, True):
        buffer = SequenceReplayBuffer(100, vector, spaces.Box(-1, 1, (2,), np.float32), "cpu")
        fill(buffer, 20, done_every=5, truncate=truncate)
        done = np.arange(20) % 5 == 4
        assert np.array_equal(buffer.terminated[:20, 0], done & (not truncate))
        assert np.array_equal(buffer.truncated[:20, 0], done & truncate)
        assert np.array_equal(buffer.episode_starts[:20, 0], np.arange(20) % 5 == 0)
        assert buffer.actions.shape == (100, 1, 2) and buffer.actions.dtype == np.float32


def test_samples_go_to_the_buffer_device() -> None:
    buffer = SequenceReplayBuffer(100, IMAGE, spaces.Discrete(3), "cpu")
    fill(buffer, 10)
    batch = buffer.sample(3, 4)
    assert batch.observations.dtype == th.uint8 and batch.episode_starts.dtype == th.bool
    assert all(x.device.type == "cpu" for x in batch)


@pytest.mark.parametrize("on_device", [False, True])
def test_pickle_holds_the_filled_steps_only(on_device: bool) -> None:
    buffer = SequenceReplayBuffer(1000, IMAGE, spaces.Discrete(3), "cpu", on_device=on_device)
    fill(buffer, 10, done_every=4)
    frame = int(np.prod(IMAGE.shape))
    assert len(pickle.dumps(buffer)) < 20 * frame  # 10 stored frames, not 1000
    loaded = pickle.loads(pickle.dumps(buffer))
    assert (loaded.pos, loaded.full, loaded.buffer_size) == (10, False, 1000)
    for name in SequenceReplayBuffer.ARRAYS:
        old, new = getattr(buffer, name), getattr(loaded, name)
        assert type(new) is type(old) and new.shape == old.shape and new.dtype == old.dtype, name
        assert th.equal(th.as_tensor(new), th.as_tensor(old)), name
    fill(loaded, 1000)  # the capacity is back: it wraps around like the original
    assert loaded.full and loaded.pos == 10


def test_a_full_buffer_pickles_whole() -> None:
    vector = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    buffer = SequenceReplayBuffer(50, vector, spaces.Discrete(3), "cpu", n_envs=2)
    fill(buffer, 60)
    loaded = pickle.loads(pickle.dumps(buffer))
    assert (loaded.pos, loaded.full) == (buffer.pos, True)
    for name in SequenceReplayBuffer.ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(buffer, name), err_msg=name)


def test_a_file_of_the_whole_capacity_still_loads() -> None:
    """Replay files written before the compact format hold every preallocated row; they load unchanged."""
    buffer = SequenceReplayBuffer(100, IMAGE, spaces.Discrete(3), "cpu")
    fill(buffer, 10)
    old_format = SequenceReplayBuffer.__new__(SequenceReplayBuffer)
    old_format.__setstate__(dict(buffer.__dict__))  # what unpickling such a file does
    assert old_format.observations.shape[0] == 100 and old_format.pos == 10
    np.testing.assert_array_equal(old_format.observations, buffer.observations)
