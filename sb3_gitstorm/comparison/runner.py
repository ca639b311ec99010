"""What one worker process or Ray task runs: a training run with its learning curve, or a random-policy score.

Both report to the sweep through a queue (``put((name, kind, payload))``): ``"progress"`` with the
environment steps done, ``"point"`` with each evaluation, so the sweep writes curves as they grow.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from sb3_gitstorm.comparison.sweep_config import RunSpec
from sb3_gitstorm.zoo import GitstormExperimentManager, default_conf_file

__all__ = ["PROGRESS_PERIOD", "LearningCurve", "Queue", "RandomPolicy", "random_policy_score", "train_and_evaluate"]

# Seconds between two progress messages of a run (each is a queue round trip, an actor call with Ray).
PROGRESS_PERIOD = 1.0


class Queue(Protocol):
    def put(self, item: Any) -> None: ...


class LearningCurve(BaseCallback):
    """Evaluate with ``evaluate_policy`` on a separate environment at step 0, every ``interval`` steps and at the end.

    Parameters
    ----------
    eval_env : VecEnv
        The evaluation environment (``Monitor``-wrapped, so returns are whole episodes of raw rewards).
    interval, episodes : int
        Environment steps between evaluations, and episodes per evaluation.
    deterministic : bool
        Greedy actions (rl_zoo3 evaluates Atari stochastically).
    name : str
        The run's name in the messages.
    queue : Queue
        Where ``"point"`` and ``"progress"`` messages go.
    """

    def __init__(self, eval_env: VecEnv, interval: int, episodes: int, deterministic: bool, name: str, queue: Queue) -> None:
        super().__init__()
        self.eval_env, self.interval, self.episodes, self.deterministic = eval_env, interval, episodes, deterministic
        self.name, self.queue = name, queue
        self.points: list[dict[str, float]] = []
        self._next_eval = 0
        self._last_progress = 0.0

    def _evaluate(self) -> None:
        sync_envs_normalization(self.training_env, self.eval_env)  # VecNormalize statistics, as SB3's EvalCallback
        mean, std = evaluate_policy(self.model, self.eval_env, self.episodes, deterministic=self.deterministic, warn=False)
        point = {"step": self.num_timesteps, "mean_return": float(mean), "std_return": float(std)}  # type: ignore[arg-type]
        self.points.append(point)
        self.queue.put((self.name, "point", point))
        self._next_eval = (self.num_timesteps // self.interval + 1) * self.interval

    def _on_training_start(self) -> None:
        self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self._evaluate()
        if time.monotonic() - self._last_progress > PROGRESS_PERIOD:
            self._last_progress = time.monotonic()
            self.queue.put((self.name, "progress", self.num_timesteps))
        return True

    def _on_training_end(self) -> None:
        if self.points[-1]["step"] < self.num_timesteps:
            self._evaluate()


def train_and_evaluate(spec: RunSpec, device: str, threads: int, queue: Queue, save_model: bool = False) -> dict[str, Any]:
    """Train one agent with :class:`~sb3_gitstorm.zoo.GitstormExperimentManager` and evaluate it along the way.

    Parameters
    ----------
    spec : RunSpec
        The run.
    device : str
        Torch device of the model.
    threads : int
        Torch intra-op threads of this process.
    queue : Queue
        Where the progress and curve messages go.
    save_model : bool
        Return the trained model too (as the bytes of ``model.save``: they travel back from a Ray task).

    Returns
    -------
    dict
        ``hyperparams``: the zoo file's entry with the overrides, as given to rl_zoo3; ``points``:
        the learning curve (``step``, ``mean_return``, ``std_return``); ``torch_threads``: ``threads``;
        with ``save_model``, ``model``: the saved model's bytes.
    """
    th.set_num_threads(threads)
    # rl_zoo3 prints its settings; the zoo's log folder (monitor files, config) is not kept.
    with tempfile.TemporaryDirectory() as log_folder, contextlib.redirect_stdout(io.StringIO()):
        manager = GitstormExperimentManager(
            argparse.Namespace(),
            spec.zoo_algo,
            spec.env_id,
            log_folder,
            eval_freq=0,  # evaluation is LearningCurve's
            hyperparams={**spec.hyperparams, "n_timesteps": spec.budget},
            env_kwargs=dict(spec.env_kwargs),
            seed=spec.seed,
            verbose=0,
            device=device,
            config=default_conf_file(spec.zoo_algo, spec.env_id),
        )
        model, hyperparams = manager.setup_experiment()  # type: ignore[misc]
        curve = LearningCurve(
            manager.create_envs(1, eval_env=True),
            spec.eval_interval,
            spec.eval_episodes,
            manager.deterministic_eval,
            spec.name,
            queue,
        )
        try:
            model.learn(spec.budget, callback=[*manager.callbacks, curve], log_interval=None)  # type: ignore[arg-type]
        finally:
            model.env.close()  # type: ignore[union-attr]
            curve.eval_env.close()
    result = {"hyperparams": dict(hyperparams), "points": curve.points, "torch_threads": threads}
    if save_model:
        saved = io.BytesIO()
        model.save(saved)
        result["model"] = saved.getvalue()
    return result


class RandomPolicy:
    """Uniformly random actions, with the ``predict`` signature ``evaluate_policy`` expects."""

    def __init__(self, action_space: spaces.Space, seed: int) -> None:
        self.action_space = action_space
        self.action_space.seed(seed)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        return np.stack([self.action_space.sample() for _ in range(len(observation))]), None


def random_policy_score(env_id: str, env_kwargs: dict[str, Any], episodes: int, seed: int = 0) -> dict[str, float]:
    """Mean and standard deviation of the return of uniformly random actions over ``episodes`` episodes."""
    env = make_vec_env(env_id, n_envs=1, seed=seed, env_kwargs=env_kwargs)
    try:
        mean, std = evaluate_policy(RandomPolicy(env.action_space, seed), env, episodes, warn=False)
    finally:
        env.close()
    return {"mean_return": float(mean), "std_return": float(std), "episodes": episodes}  # type: ignore[arg-type]
