"""Bad input gets a clear error and corrupts nothing."""

from __future__ import annotations

import os
import pathlib
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common import base_class
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.vec_env import VecNormalize

import sb3_gitstorm
import sb3_gitstorm.save_util as save_util_module
from sb3_gitstorm import GITSTORM
from sb3_gitstorm.buffers import REPLAY_FORMAT_VERSION
from sb3_gitstorm.save_util import atomic_write
from tests.conftest import DotEnv, FixedLengthEnv


def test_observation_shape_mismatch_at_predict(fast_kwargs: dict) -> None:
    vector = GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs)
    with pytest.raises(ValueError, match=r"shape \(2, 5\); this model takes observations of shape \(4,\)"):
        vector.predict(np.zeros((2, 5), np.float32))
    images = GITSTORM("CnnPolicy", DotEnv(), **fast_kwargs)
    for shape in ((32, 32, 3), (64, 64), (2, 64, 64, 4)):
        with pytest.raises(ValueError, match=r"takes observations of shape \(3, 64, 64\) or, channel-last, \(64, 64, 3\)"):
            images.predict(np.zeros(shape, np.uint8))
    # A flipped frame (negative strides, as MuJoCo renders) is a valid observation, not a shape error.
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    flipped = frame[::-1]
    assert images.predict(flipped, deterministic=True)[0] == images.predict(flipped.copy(), deterministic=True)[0]


def test_load_of_files_that_are_not_gitstorm_models(tmp_path, fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    with pytest.raises(ValueError, match=r"buffer.pkl is not a zip file \(GITSTORM.save writes zip files\)"):
        GITSTORM.load(tmp_path / "buffer.pkl")
    with pytest.raises(FileNotFoundError):
        GITSTORM.load(tmp_path / "missing.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ValueError, match=r"other.zip is a zip file but not a saved SB3 model: it has no 'data' entry"):
        GITSTORM.load(tmp_path / "other")  # SB3 adds the suffix
    PPO("MlpPolicy", "CartPole-v1").save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not a GITSTORM policy"):
        GITSTORM.load(tmp_path / "ppo.zip")


def test_load_of_truncated_or_corrupted_models(tmp_path, fast_kwargs: dict) -> None:
    GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs).save(tmp_path / "agent.zip")
    saved = (tmp_path / "agent.zip").read_bytes()
    for size in (4, len(saved) // 2, len(saved) - 1):
        (tmp_path / "cut.zip").write_bytes(saved[:size])
        with pytest.raises(ValueError, match=r"cut\.zip is a truncated or corrupted zip file, not a loadable model"):
            GITSTORM.load(tmp_path / "cut.zip")
    corrupted = bytearray(saved)
    with zipfile.ZipFile(tmp_path / "agent.zip") as archive:
        entry = archive.getinfo("policy.pth")
    corrupted[entry.header_offset + 30 + len(entry.filename) + 100] ^= 0xFF  # a byte of its compressed data
    (tmp_path / "corrupted.zip").write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match=r"corrupted\.zip is a corrupted zip file, .* its entry 'policy\.pth'"):
        GITSTORM.load(tmp_path / "corrupted.zip")
    GITSTORM.load(tmp_path / "agent.zip")


@pytest.fixture
def cartpole_model(fast_kwargs: dict) -> GITSTORM:
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **fast_kwargs)
    model.learn(8)
    return model


@pytest.mark.parametrize(
    "make_other, match",
    [
        (lambda kw: GITSTORM("MlpPolicy", FixedLengthEnv(), **kw), "observation space"),
        (lambda kw: GITSTORM("MlpPolicy", "Acrobot-v1", **kw), "observation space"),
        (lambda kw: GITSTORM("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), **kw), "number of environments"),
        (lambda kw: ReplayBuffer(100, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)), "holds a ReplayBuffer"),
    ],
)
def test_load_replay_buffer_that_does_not_fit(tmp_path, cartpole_model: GITSTORM, fast_kwargs: dict, make_other, match: str):
    other = make_other(fast_kwargs)
    path = tmp_path / "other.pkl"
    if isinstance(other, GITSTORM):
        other.save_replay_buffer(path)
    else:
        save_to_pkl(path, other)
    buffer = cartpole_model.replay_buffer
    stored = buffer.observations.copy()
    with pytest.raises(ValueError, match=match):
        cartpole_model.load_replay_buffer(path)
    assert cartpole_model.replay_buffer is buffer and np.array_equal(buffer.observations, stored) and buffer.pos == 8


class ContinuousFixedLengthEnv(FixedLengthEnv):
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_load_replay_buffer_with_other_action_space(tmp_path, fast_kwargs: dict) -> None:
    discrete = GITSTORM("MlpPolicy", FixedLengthEnv(), **fast_kwargs)
    continuous = GITSTORM("MlpPolicy", ContinuousFixedLengthEnv(), **fast_kwargs)
    continuous.save_replay_buffer(tmp_path / "continuous.pkl")
    with pytest.raises(ValueError, match="action space"):
        discrete.load_replay_buffer(tmp_path / "continuous.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a pickled replay buffer"):
        discrete.load_replay_buffer(tmp_path / "junk.pkl")
    discrete.save_replay_buffer(tmp_path / "discrete.pkl")
    saved = (tmp_path / "discrete.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(saved[: len(saved) // 2])
    with pytest.raises(ValueError, match=r"cut\.pkl is not a pickled replay buffer, or a truncated one"):
        discrete.load_replay_buffer(tmp_path / "cut.pkl")


def test_load_replay_buffer_of_another_version(tmp_path, fast_kwargs: dict) -> None:
    """Another library version with the same replay format reads the file; another format gets a clear error."""
    model = GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs)
    model.learn(10)
    model.save_replay_buffer(tmp_path / "replay.pkl")
    buffer = load_from_pkl(tmp_path / "replay.pkl")
    assert buffer.version == sb3_gitstorm.__version__ and buffer.format_version == REPLAY_FORMAT_VERSION
    buffer.version = "0.0.9"  # a patch release: same format
    save_to_pkl(tmp_path / "patch.pkl", buffer)
    buffer.format_version = REPLAY_FORMAT_VERSION + 1
    save_to_pkl(tmp_path / "newer.pkl", buffer)
    buffer.version = "0.1.0"  # written before formats were numbered: format 1
    del buffer.format_version
    save_to_pkl(tmp_path / "unnumbered.pkl", buffer)
    del buffer.version
    save_to_pkl(tmp_path / "unversioned.pkl", buffer)
    for name in ("patch", "unnumbered"):
        previous = model.replay_buffer
        model.load_replay_buffer(tmp_path / f"{name}.pkl")
        assert model.replay_buffer is not previous and model.replay_buffer.pos == 10
        assert np.array_equal(model.replay_buffer.observations, buffer.observations)
    with pytest.raises(
        ValueError,
        match=rf"written by sb3_gitstorm 0.0.9 in replay format {REPLAY_FORMAT_VERSION + 1}, this is sb3_gitstorm "
        rf"{sb3_gitstorm.__version__}, which reads replay format {REPLAY_FORMAT_VERSION}",
    ):
        model.load_replay_buffer(tmp_path / "newer.pkl")
    with pytest.raises(ValueError, match="written by a version of sb3_gitstorm that did not record its version in an unknown"):
        model.load_replay_buffer(tmp_path / "unversioned.pkl")


def test_hyperparameters_that_do_not_fit_the_buffer(fast_kwargs: dict) -> None:
    with pytest.raises(ValueError, match=r"learning_starts \(3000\) is larger than buffer_size \(2000\)"):
        GITSTORM("MlpPolicy", "CartPole-v1", **{**fast_kwargs, "learning_starts": 3000})
    with pytest.raises(ValueError, match=r"batch_length \(8\) is larger than the 5 steps per environment"):
        GITSTORM("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), **{**fast_kwargs, "buffer_size": 20, "learning_starts": 8})
    with pytest.raises(ValueError, match=r"batch_length \(65\) exceeds the transformer's max_length \(64\)"):
        GITSTORM("MlpPolicy", "CartPole-v1", **{**fast_kwargs, "batch_length": 65})
    with pytest.raises(ValueError, match="log_video_interval"):
        GITSTORM("MlpPolicy", "CartPole-v1", log_video_interval=-1, **fast_kwargs)
    for name in ("batch_size", "imagine_batch_size"):
        with pytest.raises(ValueError, match=rf"^{name} must be >= 1, got 0$"):
            GITSTORM("MlpPolicy", "CartPole-v1", **{**fast_kwargs, name: 0})


def test_vecnormalize_rejected_on_load(tmp_path, fast_kwargs: dict) -> None:
    GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs).save(tmp_path / "agent.zip")
    with pytest.raises(ValueError, match="VecNormalize"):
        GITSTORM.load(tmp_path / "agent.zip", env=VecNormalize(make_vec_env("CartPole-v1")))


class NonFiniteEnv(gym.Env):
    """Episodes of 7 steps; at step ``at`` of the run (0: the first reset) the observation or the reward is NaN / inf."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, where: str, at: int, value: float) -> None:
        self.where, self.at, self.value = where, at, value
        self.steps = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        if self.where == "observation" and self.steps == self.at:
            obs[1] = self.value
        return obs

    def step(self, action):
        self.t += 1
        self.steps += 1
        reward = self.value if self.where == "reward" and self.steps == self.at else 1.0
        return self._obs(), reward, False, self.t == 7, {}


@pytest.mark.parametrize(
    "where, at, value, what",
    [
        ("observation", 0, np.nan, "reset observation"),
        ("observation", 10, np.inf, "observation"),  # during the random warm-up
        ("observation", 14, np.nan, "observation"),  # the automatic reset after an episode ends
        ("observation", 50, np.nan, "observation"),  # while training: never acted on
        ("reward", 50, -np.inf, "reward"),
    ],
)
def test_non_finite_observations_and_rewards_are_rejected(where: str, at: int, value: float, what: str, fast_kwargs: dict):
    model = GITSTORM("MlpPolicy", NonFiniteEnv(where, at, value), seed=0, **fast_kwargs)
    with pytest.raises(ValueError, match=rf"Environment\(s\) \[0\] returned NaN or inf in the {what} at timestep {at}"):
        model.learn(100)
    buffer = model.replay_buffer
    assert buffer.pos == max(at - 1, 0)  # every step before the bad one, nothing after
    assert np.isfinite(buffer.observations).all() and np.isfinite(buffer.rewards).all()
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_interrupted_saves_keep_the_previous_files(tmp_path, monkeypatch, fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **fast_kwargs)
    model.learn(40)
    model.save(tmp_path / "agent.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fails_midway(path, *args, **kwargs) -> None:
        pathlib.Path(path).write_bytes(b"the first half of the file")
        raise OSError("No space left on device")

    monkeypatch.setattr(base_class, "save_to_zip_file", fails_midway)
    monkeypatch.setattr(save_util_module, "save_to_pkl", fails_midway)
    model.learn(8)
    with pytest.raises(OSError, match="No space"):
        model.save(tmp_path / "agent.zip")
    with pytest.raises(OSError, match="No space"):
        model.save_replay_buffer(tmp_path / "buffer.pkl")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == saved  # no half file, no temporary left behind
    monkeypatch.undo()
    loaded = GITSTORM.load(tmp_path / "agent.zip")
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert loaded.num_timesteps == 40 and loaded.replay_buffer.pos == 40


def test_atomic_writes_get_ordinary_file_permissions(tmp_path) -> None:
    """The temporary file is private (mkstemp); the saved file must not be: umask for a new file, kept on overwrite."""
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new", "zip", lambda target: pathlib.Path(target).write_bytes(b"data"))
        assert (tmp_path / "new.zip").stat().st_mode & 0o777 == 0o644
        (tmp_path / "shared.zip").write_bytes(b"old")
        (tmp_path / "shared.zip").chmod(0o664)
        atomic_write(tmp_path / "shared.zip", "zip", lambda target: pathlib.Path(target).write_bytes(b"new"))
        assert (tmp_path / "shared.zip").stat().st_mode & 0o777 == 0o664
        assert (tmp_path / "shared.zip").read_bytes() == b"new"
    finally:
        os.umask(umask)
