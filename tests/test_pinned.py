"""Behaviour pins: a short seeded run gives the losses and actions recorded before a refactor.

The floats below were recorded on this project's CPU machine (torch 2.13.0+cpu, one thread, as in
``conftest.py``). A refactor that keeps the algorithm keeps them; a change that is meant to alter
the numbers (another random stream, another operation order) must re-record them and say why.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.logger import Logger

from sb3_gitstorm import GITSTORM
from tests.conftest import FAST, DotEnv

LOSSES = (
    "world_model/loss",
    "world_model/reconstruction_loss",
    "world_model/kl",
    "world_model/imagination_kl",
    "train/actor_loss",
    "train/critic_loss",
    "train/entropy",
)


class RecordingLogger(Logger):
    """An SB3 logger without outputs that keeps every recorded value."""

    def __init__(self) -> None:
        super().__init__(folder=None, output_formats=[])
        self.history: dict[str, list[float]] = defaultdict(list)

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        if key in LOSSES:
            self.history[key].append(float(value))
        super().record(key, value, exclude)


CASES: dict[str, tuple[str, Any, str, dict]] = {
    "mlp-cartpole-maskgit": ("MlpPolicy", lambda: gym.make("CartPole-v1"), "maskgit", {}),
    "mlp-cartpole-mlp": ("MlpPolicy", lambda: gym.make("CartPole-v1"), "mlp", {}),
    # 16 latent classes: the one-hot first layers take their embedding_bag path
    "mlp-pendulum-maskgit-16": ("MlpPolicy", lambda: gym.make("Pendulum-v1"), "maskgit", dict(latent_classes=16)),
    "cnn-dot-maskgit": ("CnnPolicy", lambda: DotEnv(continuous=False), "maskgit", {}),
    "cnn-dot-box-mlp": ("CnnPolicy", lambda: DotEnv(continuous=True), "mlp", {}),
}


def pinned_run(case: str) -> tuple[dict[str, float], np.ndarray]:
    """Train 16 updates, then act deterministically on 5 observations of a fresh episode.

    Returns the sum over updates of each logged loss, and the actions.
    """
    policy, make_env, prior, overrides = CASES[case]
    kwargs = {**FAST, "policy_kwargs": {**FAST["policy_kwargs"], **overrides}}
    model = GITSTORM(policy, make_env(), prior=prior, seed=0, **kwargs)
    logger = RecordingLogger()
    model.set_logger(logger)
    model.learn(48)
    env = make_env()
    obs, _ = env.reset(seed=1)
    state, actions = None, []
    for step in range(5):
        action, state = model.predict(obs[None], state=state, episode_start=np.array([step == 0]), deterministic=True)
        actions.append(action[0])
        obs, *_ = env.step(action[0])
    return {key: sum(values) for key, values in sorted(logger.history.items())}, np.asarray(actions)


PINNED: dict[str, tuple[dict[str, float], list]] = {
    "mlp-cartpole-maskgit": (
        {
            "train/actor_loss": 0.005177803513106483,
            "train/critic_loss": 65.72511410713196,
            "train/entropy": 10.55105435848236,
            "world_model/imagination_kl": 9.87924188375473,
            "world_model/kl": 9.879241943359375,
            "world_model/loss": 98.56894731521606,
            "world_model/reconstruction_loss": 12.159161150455475,
        },
        [1, 0, 0, 1, 1],
    ),
    "mlp-cartpole-mlp": (
        {
            "train/actor_loss": 0.005302939176090149,
            "train/critic_loss": 65.52437591552734,
            "train/entropy": 10.895210921764374,
            "world_model/imagination_kl": 26.024430513381958,
            "world_model/kl": 26.024430990219116,
            "world_model/loss": 102.66996335983276,
            "world_model/reconstruction_loss": 10.081907749176025,
        },
        [1, 0, 1, 1, 1],
    ),
    "mlp-pendulum-maskgit-16": (
        {
            "train/actor_loss": -0.03669173826347105,
            "train/critic_loss": 54.56953763961792,
            "train/entropy": 19.959224224090576,
            "world_model/imagination_kl": 10.34986013174057,
            "world_model/kl": 10.349859833717346,
            "world_model/loss": 146.9782075881958,
            "world_model/reconstruction_loss": 57.74535775184631,
        },
        [[-0.817642092704773], [-0.6351912021636963], [-0.21924448013305664], [-0.2789052724838257], [-0.4594912528991699]],
    ),
    # Re-recorded when the tiny size went from 64x64 to 32x32 images (a 3-convolution encoder).
    "cnn-dot-maskgit": (
        {
            "train/actor_loss": 0.009260511575575947,
            "train/critic_loss": 68.47762441635132,
            "train/entropy": 17.062958121299744,
            "world_model/imagination_kl": 8.275328546762466,
            "world_model/kl": 8.275328606367111,
            "world_model/loss": 3151.990463256836,
            "world_model/reconstruction_loss": 3066.4822998046875,
        },
        [1, 1, 1, 1, 1],
    ),
    "cnn-dot-box-mlp": (
        {
            "train/actor_loss": 0.010131055747478968,
            "train/critic_loss": 69.22113752365112,
            "train/entropy": 40.82865381240845,
            "world_model/imagination_kl": 29.839900135993958,
            "world_model/kl": 29.83989918231964,
            "world_model/loss": 3154.808563232422,
            "world_model/reconstruction_loss": 3060.2982482910156,
        },
        [
            [-0.05551934242248535, 0.3642122745513916],
            [0.29141366481781006, 0.3350563049316406],
            [-0.04248613119125366, 0.3759913444519043],
            [0.3027608394622803, 0.2507370710372925],
            [0.36071085929870605, 0.19533956050872803],
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_short_run_gives_the_recorded_losses_and_actions(case: str) -> None:
    losses, actions = pinned_run(case)
    expected_losses, expected_actions = PINNED[case]
    assert losses.keys() == expected_losses.keys()
    for key, value in expected_losses.items():
        assert losses[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    np.testing.assert_allclose(actions, np.asarray(expected_actions), rtol=1e-5, atol=1e-6)
