"""Divergence guard: non-finite losses or gradients skip the update, are counted, and stop a run that does not recover."""

from __future__ import annotations

import math

import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.world_model import WorldModel, WorldModelLoss
from tests.conftest import DotEnv
from tests.test_resume import adam_steps


class Logged(BaseCallback):
    """The logger's values of the last update, read before each rollout and at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, float] = {}

    def _read(self) -> None:
        self.values.update(self.logger.name_to_value)

    def _on_rollout_start(self) -> None:
        self._read()

    def _on_training_end(self) -> None:
        self._read()

    def _on_step(self) -> bool:
        return True


def nan_world_model_loss(monkeypatch, component: str, updates: range) -> None:
    """Make ``component`` of the world-model loss NaN in the world-model updates numbered ``updates`` (0-based)."""
    loss = WorldModel.loss
    calls = iter(range(10**6))

    def patched(self, *args, **kwargs) -> WorldModelLoss:
        out = loss(self, *args, **kwargs)
        if next(calls) in updates:
            nan = out._asdict()[component] * float("nan")
            out = out._replace(**{component: nan, "total": out.total + nan})
        return out

    monkeypatch.setattr(WorldModel, "loss", patched)


def test_a_few_non_finite_updates_are_skipped_and_counted(monkeypatch, fast_kwargs: dict) -> None:
    nan_world_model_loss(monkeypatch, "reward", range(2, 5))
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **fast_kwargs)
    logged = Logged()
    model.learn(48, callback=logged)  # 16 updates after the 32 warm-up steps
    assert model._n_updates == 16
    assert logged.values["train/skipped_world_model_updates"] == 3
    assert logged.values["train/skipped_actor_critic_updates"] == 0
    assert adam_steps(model.policy.world_model_optimizer) == 13 and adam_steps(model.policy.actor_optimizer) == 16
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_skipped_updates_are_left_out_of_the_logged_losses(monkeypatch, fast_kwargs: dict) -> None:
    """The losses logged after each update are finite: a skipped update's NaN losses are not averaged in."""
    nan_world_model_loss(monkeypatch, "reward", range(2, 5))

    class EveryUpdate(Logged):
        def __init__(self) -> None:
            super().__init__()
            self.history: list[dict[str, float]] = []

        def _read(self) -> None:
            self.history.append(dict(self.logger.name_to_value))

    logged = EveryUpdate()
    GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **fast_kwargs).learn(48, callback=logged)
    losses = [
        (key, value) for values in logged.history for key, value in values.items() if key.startswith(("world_model/", "train/"))
    ]
    assert any(key == "world_model/reward_loss" for key, _ in losses)
    assert all(math.isfinite(value) for _, value in losses), [key for key, value in losses if not math.isfinite(value)]


def test_skipped_updates_leave_the_weights_alone_and_stop_the_run(monkeypatch, fast_kwargs: dict) -> None:
    nan_world_model_loss(monkeypatch, "reward", range(4, 10**6))
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, max_nonfinite_skips=3, **fast_kwargs)
    weights: list[dict[str, th.Tensor]] = []
    train = GITSTORM.train

    def recorded(self, *args, **kwargs) -> None:
        train(self, *args, **kwargs)
        weights.append({k: v.clone() for k, v in self.policy.world_model.state_dict().items()})

    monkeypatch.setattr(GITSTORM, "train", recorded)
    with pytest.raises(
        RuntimeError,
        match=r"3 world-model updates in a row were skipped, the last one \(update 6\) because the loss "
        r"was not finite in loss, reward_loss",
    ):
        model.learn(100)
    assert len(weights) == 6  # the third skip raised inside train
    assert all(th.equal(weights[3][k], v) for k, v in weights[4].items())  # the first skip changed nothing
    assert not all(th.equal(weights[2][k], v) for k, v in weights[3].items())  # a normal update does
    assert all(th.equal(v, model.policy.world_model.state_dict()[k]) for k, v in weights[3].items())


def test_a_skipped_update_leaves_batchnorm_statistics_and_the_actor_critic_alone(monkeypatch, fast_kwargs: dict) -> None:
    # The CNN's BatchNorm statistics move in the forward pass; "batch" starts would imagine from its tokens.
    nan_world_model_loss(monkeypatch, "reconstruction", range(3, 4))
    model = GITSTORM("CnnPolicy", DotEnv(), imagine_starts="batch", seed=0, **fast_kwargs)
    states: list[dict[str, th.Tensor]] = []
    train = GITSTORM.train

    def recorded(self, *args, **kwargs) -> None:
        states.append({k: v.clone() for k, v in self.policy.state_dict().items()})
        train(self, *args, **kwargs)

    monkeypatch.setattr(GITSTORM, "train", recorded)
    model.learn(37)  # updates 0-4 after the 32 warm-up steps; update 3 is skipped
    assert len(states) == 5 and model._divergence_guard.skipped == {"world_model": 1, "actor_critic": 0}
    assert "encoder.0.net.1.num_batches_tracked" in {k.removeprefix("world_model.") for k in states[3]}
    # Every parameter and buffer of the world model and the actor-critic is as before the skipped update ...
    assert all(th.equal(states[3][k], v) for k, v in states[4].items())
    # ... which a normal update changes, the BatchNorm statistics and the actor among them.
    assert [k for k, v in states[3].items() if not th.equal(states[2][k], v) and "num_batches_tracked" in k]
    assert [k for k, v in states[3].items() if not th.equal(states[2][k], v) and k.startswith("actor_critic.actor.")]
    assert adam_steps(model.policy.world_model_optimizer) == 4 and adam_steps(model.policy.actor_optimizer) == 4


def test_non_finite_actor_gradient_names_the_parameter(fast_kwargs: dict) -> None:
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, max_nonfinite_skips=2, **fast_kwargs)
    name, parameter = next(iter(model.policy.actor_critic.actor.named_parameters()))
    parameter.register_hook(lambda grad: grad * float("inf"))
    actor = {k: v.clone() for k, v in model.policy.actor_critic.state_dict().items()}
    with pytest.raises(RuntimeError, match=rf"2 actor-critic updates in a row .* gradient was not finite in Actor\.{name}\. The"):
        model.learn(100)
    assert model._n_updates == 1  # the raise comes in the second update, before the counter moves
    # Neither the actor nor the critic, the slow critic or the return normaliser moved.
    assert all(th.equal(v, model.policy.actor_critic.state_dict()[k]) for k, v in actor.items())
    assert adam_steps(model.policy.world_model_optimizer) == 2


def test_max_nonfinite_skips_is_checked(fast_kwargs: dict) -> None:
    with pytest.raises(ValueError, match="max_nonfinite_skips must be >= 1"):
        GITSTORM("MlpPolicy", "CartPole-v1", max_nonfinite_skips=0, **fast_kwargs)
