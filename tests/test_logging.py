"""Training statistics reach SB3's logger (stdout, csv, TensorBoard), and the world model's dreams TensorBoard."""

from __future__ import annotations

import contextlib
import csv
import math

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.dreams import filmstrip, open_loop_dream, rgb, side_by_side, tensorboard_video_supported
from tests.conftest import DotEnv

LOGGED = {
    "world_model/reconstruction_loss",
    "world_model/reconstruction_error",
    "world_model/reward_loss",
    "world_model/termination_loss",
    "world_model/kl_dynamics_loss",
    "world_model/kl_representation_loss",
    "world_model/prior_token_loss",
    "train/actor_loss",
    "train/critic_loss",
    "train/entropy",
    "train/return_scale",
    "time/fps",
}


def test_losses_go_to_stdout_and_csv(tmp_path, capsys, fast_kwargs: dict) -> None:
    env = make_vec_env("CartPole-v1", seed=0, env_kwargs=dict(max_episode_steps=20))
    model = GITSTORM("MlpPolicy", env, seed=0, **fast_kwargs)
    model.set_logger(configure(str(tmp_path), ["stdout", "csv"]))
    model.learn(80, log_interval=1)
    with open(tmp_path / "progress.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert set(last) >= LOGGED
    assert all(math.isfinite(float(last[key])) for key in LOGGED)
    assert float(last["time/total_timesteps"]) <= 80 and float(last["train/n_updates"]) > 0
    out = capsys.readouterr().out
    assert "world_model/" in out and "actor_loss" in out and "fps" in out


@pytest.mark.parametrize("prior", ["maskgit", "mlp"])
def test_tensorboard_gets_losses_and_dreams(tmp_path, prior: str, fast_kwargs: dict) -> None:
    model = GITSTORM(
        "CnnPolicy", DotEnv(), prior=prior, tensorboard_log=str(tmp_path), log_video_interval=8, seed=0, **fast_kwargs
    )
    warns = contextlib.nullcontext() if tensorboard_video_supported() else pytest.warns(UserWarning, match="moviepy<2")
    with warns:
        model.learn(64, log_interval=1)
    events = EventAccumulator(str(tmp_path / "GITSTORM_1"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) >= LOGGED
    strips = events.Images("imagination/filmstrip")
    assert len(strips) >= 1
    frames = fast_kwargs["imagine_horizon"] + 1
    side = model.policy.config.image_size
    assert (strips[-1].height, strips[-1].width) == (2 * side, frames * side)  # real above dreamed, time to the right
    assert ("imagination/video" in events.Tags()["images"]) == tensorboard_video_supported()


@pytest.mark.filterwarnings("ignore:TensorBoard videos need moviepy")
def test_dreams_leave_training_unchanged_and_skip_vectors(tmp_path, fast_kwargs: dict) -> None:
    params = []
    for interval in (0, 4):
        model = GITSTORM(
            "CnnPolicy", DotEnv(True), tensorboard_log=str(tmp_path), log_video_interval=interval, seed=0, **fast_kwargs
        )
        model.learn(48)
        params.append([p.detach().clone() for p in model.policy.parameters()])
    assert all(th.equal(a, b) for a, b in zip(*params, strict=True))  # own random streams: same updates
    vector = GITSTORM("MlpPolicy", "Pendulum-v1", tensorboard_log=str(tmp_path / "mlp"), log_video_interval=1, **fast_kwargs)
    vector.learn(48)  # no frames to show: nothing written, no error
    events = EventAccumulator(str(tmp_path / "mlp" / "GITSTORM_1"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == []


def test_open_loop_dream_frames(fast_kwargs: dict) -> None:
    model = GITSTORM("CnnPolicy", DotEnv(), seed=0, **fast_kwargs)
    model.learn(48)
    windows = model.replay_buffer.sample(2, 6)
    world_model = model.policy.world_model.eval()
    real, dreamed = open_loop_dream(world_model, windows, context_length=4)
    assert real.shape == dreamed.shape == (2, 3, 3, 32, 32)  # tiny: image_size 32
    assert th.equal(real, windows.observations[:, 3:].float() / 255)
    assert float(dreamed.min()) >= 0 and float(dreamed.max()) <= 1
    assert side_by_side(real, dreamed).shape == (2, 3, 3, 32, 64)
    assert filmstrip(real, dreamed).shape == (3, 64, 3 * 32)
    gray = th.rand(2, 5, 1, 8, 8)
    assert th.equal(rgb(gray)[:, :, 2], gray[:, :, 0]) and rgb(th.rand(4, 6, 8, 8)).shape == (4, 3, 8, 8)
    np.testing.assert_array_equal(rgb(th.arange(6.0).view(6, 1, 1))[:, 0, 0].numpy(), [3, 4, 5])  # newest of stacked RGB
