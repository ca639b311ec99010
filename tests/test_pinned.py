"""Behaviour pins: a short seeded run gives the losses and actions recorded before a refactor.

The floats below were recorded on this project's CPU machine (torch 2.13.0+cpu, one thread, as in
``conftest.py``). A refactor that keeps the algorithm keeps them; a change that is meant to alter
the numbers (another random stream, another operation order) must re-record them and say why:
``python -m tests.test_pinned CASE ...`` prints each case's entry of ``PINNED`` to paste over the old one.
"""

from __future__ import annotations

import pprint
import sys
from collections import defaultdict
from collections.abc import Callable
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


CASES: dict[str, tuple[str, Callable[[], gym.Env], dict[str, Any]]] = {
    # name: (policy, environment, GITSTORM settings on top of conftest.FAST; policy_kwargs merge with FAST's)
    "mlp-cartpole-maskgit": ("MlpPolicy", lambda: gym.make("CartPole-v1"), dict(prior="maskgit")),
    "mlp-cartpole-mlp": ("MlpPolicy", lambda: gym.make("CartPole-v1"), dict(prior="mlp")),
    # 16 latent classes: the one-hot first layers take their embedding_bag path
    "mlp-pendulum-maskgit-16": (
        "MlpPolicy",
        lambda: gym.make("Pendulum-v1"),
        dict(prior="maskgit", policy_kwargs=dict(latent_classes=16)),
    ),
    "cnn-dot-maskgit": ("CnnPolicy", lambda: DotEnv(continuous=False), dict(prior="maskgit")),
    "cnn-dot-box-mlp": ("CnnPolicy", lambda: DotEnv(continuous=True), dict(prior="mlp")),
    # The settings beside the defaults: a change to one of them must not pass unnoticed either.
    "mlp-cartpole-batch-starts": ("MlpPolicy", lambda: gym.make("CartPole-v1"), dict(imagine_starts="batch")),
    "mlp-pendulum-dynamics": ("MlpPolicy", lambda: gym.make("Pendulum-v1"), dict(actor_gradient="dynamics")),
    "mlp-cartpole-draft-4-revise-2": ("MlpPolicy", lambda: gym.make("CartPole-v1"), dict(draft_steps=4, revise_steps=2)),
    "cnn-dot-motion-weight": ("CnnPolicy", lambda: DotEnv(continuous=False), dict(policy_kwargs=dict(motion_weight=10.0))),
}


def pinned_run(case: str) -> tuple[dict[str, float], np.ndarray]:
    """Train 16 updates, then act deterministically on 5 observations of a fresh episode.

    Returns the sum over updates of each logged loss, and the actions.
    """
    policy, make_env, settings = CASES[case]
    kwargs = {**FAST, **settings, "policy_kwargs": {**FAST["policy_kwargs"], **settings.get("policy_kwargs", {})}}
    model = GITSTORM(policy, make_env(), seed=0, **kwargs)
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
    # Re-recorded when the actor became DreamerV3's: a bounded Normal for Box actions and an output
    # layer initialised at 1% scale (the CNN cases first when the tiny size went to 32x32 images).
    # imagination_kl alone re-recorded when it took h_t from the sequence model in eval mode (no dropout),
    # as imagination does; the training itself (every other value, the actions) is unchanged.
    "mlp-cartpole-maskgit": (
        {
            "train/actor_loss": 0.005408407050254027,
            "train/critic_loss": 65.77636003494263,
            "train/entropy": 11.090272903442383,
            "world_model/imagination_kl": 9.897336184978485,
            "world_model/kl": 9.879241943359375,
            "world_model/loss": 98.56894731521606,
            "world_model/reconstruction_loss": 12.159161150455475,
        },
        [1, 1, 0, 1, 1],
    ),
    "mlp-cartpole-mlp": (
        {
            "train/actor_loss": 0.0053564696600005846,
            "train/critic_loss": 65.44180130958557,
            "train/entropy": 11.090335547924042,
            "world_model/imagination_kl": 25.81303906440735,
            "world_model/kl": 26.024430990219116,
            "world_model/loss": 102.66996335983276,
            "world_model/reconstruction_loss": 10.081907749176025,
        },
        [1, 0, 1, 1, 0],
    ),
    "mlp-pendulum-maskgit-16": (
        {
            "train/actor_loss": -0.03883349121315405,
            "train/critic_loss": 54.680310010910034,
            "train/entropy": 20.88164746761322,
            "world_model/imagination_kl": 10.339045822620392,
            "world_model/kl": 10.350834131240845,
            "world_model/loss": 146.51255321502686,
            "world_model/reconstruction_loss": 57.29352283477783,
        },
        [
            [-0.0032198429107666016],
            [-0.00211942195892334],
            [0.002346515655517578],
            [0.0007450580596923828],
            [-6.794929504394531e-06],
        ],
    ),
    "cnn-dot-maskgit": (
        {
            "train/actor_loss": 0.009399197257152991,
            "train/critic_loss": 68.38720226287842,
            "train/entropy": 17.577757835388184,
            "world_model/imagination_kl": 8.218371629714966,
            "world_model/kl": 8.218062043190002,
            "world_model/loss": 3149.189697265625,
            "world_model/reconstruction_loss": 3063.6830139160156,
        },
        [1, 1, 1, 1, 1],
    ),
    "cnn-dot-box-mlp": (
        {
            "train/actor_loss": 0.008539541624486446,
            "train/critic_loss": 69.17723083496094,
            "train/entropy": 41.77362608909607,
            "world_model/imagination_kl": 29.750365495681763,
            "world_model/kl": 29.601516246795654,
            "world_model/loss": 3155.153854370117,
            "world_model/reconstruction_loss": 3060.8444213867188,
        },
        [
            [-0.0006722807884216309, 0.003365635871887207],
            [0.0026531219482421875, 0.0026941299438476562],
            [-0.00029456615447998047, 0.0027120113372802734],
            [0.004011869430541992, 0.00204312801361084],
            [0.003901958465576172, 0.002105236053466797],
        ],
    ),
    # Recorded with the straight-through latents of actor_gradient="dynamics", batch starts that observe
    # imagine_context_length steps each, the eval-mode imagination_kl (none for revise schedules) and the
    # per-episode-segment motion_weights. Re-record: python -m tests.test_pinned CASE [CASE ...]
    "mlp-cartpole-batch-starts": (
        {
            "train/actor_loss": 0.005427935785064619,
            "train/critic_loss": 65.93085432052612,
            "train/entropy": 11.09027373790741,
            "world_model/imagination_kl": 9.716815531253815,
            "world_model/kl": 9.730611026287079,
            "world_model/loss": 98.57033061981201,
            "world_model/reconstruction_loss": 12.05376261472702,
        },
        [1, 0, 0, 1, 1],
    ),
    "mlp-pendulum-dynamics": (
        {
            "train/actor_loss": 0.03158290406281594,
            "train/critic_loss": 60.5077965259552,
            "train/entropy": 20.885268092155457,
            "world_model/imagination_kl": 10.181890606880188,
            "world_model/kl": 10.184653222560883,
            "world_model/loss": 136.12340831756592,
            "world_model/reconstruction_loss": 49.30261766910553,
        },
        [
            [0.006027698516845703],
            [0.008910894393920898],
            [0.008130311965942383],
            [0.00032258033752441406],
            [0.00029587745666503906],
        ],
    ),
    "mlp-cartpole-draft-4-revise-2": (
        {
            "train/actor_loss": 0.005381270006637351,
            "train/critic_loss": 65.87963819503784,
            "train/entropy": 11.0902578830719,
            "world_model/kl": 5.55782975256443,
            "world_model/loss": 97.49419021606445,
            "world_model/reconstruction_loss": 10.911547124385834,
        },
        [1, 1, 0, 1, 1],
    ),
    "cnn-dot-motion-weight": (
        {
            "train/actor_loss": 0.009331932697023149,
            "train/critic_loss": 68.39554810523987,
            "train/entropy": 17.577757835388184,
            "world_model/imagination_kl": 8.183540105819702,
            "world_model/kl": 8.183213651180267,
            "world_model/loss": 14537.01318359375,
            "world_model/reconstruction_loss": 14451.537780761719,
        },
        [1, 1, 1, 1, 1],
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


if __name__ == "__main__":
    for name in sys.argv[1:] or list(CASES):
        losses, actions = pinned_run(name)
        print(f"{name!r}: {pprint.pformat((losses, actions.tolist()), width=120)},")
