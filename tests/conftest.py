"""Shared fixtures: tiny model settings and small image / vector test environments."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest
import torch as th

# One thread per test process: the suite runs with pytest-xdist across the cores.
th.set_num_threads(1)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import the script ``benchmarks/<name>.py`` as a module (to call its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU, skipped without one (benchmarks/gpu_check.py runs them)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if th.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


class DotEnv(gym.Env):
    """A dot moving on an image: uint8 HxWxC observations, Discrete(3) or Box(2,) actions.

    The reward is 1 when the dot is in the right half; episodes terminate at a border or are
    truncated after ``max_steps``, so both episode-end flags occur.
    """

    def __init__(self, continuous: bool = False, size: tuple[int, int] = (64, 64), max_steps: int = 20) -> None:
        self.size, self.max_steps, self.continuous = size, max_steps, continuous
        self.observation_space = gym.spaces.Box(0, 255, (*size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous else gym.spaces.Discrete(3)

    def _obs(self) -> np.ndarray:
        img = np.zeros((*self.size, 3), np.uint8)
        y, x = (self.pos * (np.array(self.size) - 1)).astype(int)
        img[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = 255
        return img

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(0.3, 0.7, size=2)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        move = np.asarray(action, np.float64) * 0.1 if self.continuous else np.array([0.0, (int(action) - 1) * 0.1])
        self.pos = self.pos + move + self.np_random.normal(0, 0.02, size=2)
        self.t += 1
        terminated = bool(np.any(self.pos < 0) or np.any(self.pos > 1))
        self.pos = np.clip(self.pos, 0, 1)
        return self._obs(), float(self.pos[1] > 0.5), terminated, self.t >= self.max_steps, {}


class FixedLengthEnv(gym.Env):
    """Vector observations, Discrete(2) actions and episodes of exactly ``length`` steps (reward 1 each)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 5) -> None:
        self.length = length

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.length, self.length / 10, self.np_random.uniform(-1, 1)], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, self.t >= self.length, False, {}


FAST = dict(
    learning_starts=32,
    batch_size=4,
    batch_length=8,
    imagine_batch_size=16,
    imagine_context_length=4,
    imagine_horizon=4,
    buffer_size=2000,
    policy_kwargs=dict(size="tiny"),
)


@pytest.fixture
def fast_kwargs() -> dict:
    """Hyperparameters that make a GITSTORM update take milliseconds (tiny networks, tiny batches)."""
    return {**FAST, "policy_kwargs": dict(FAST["policy_kwargs"])}
