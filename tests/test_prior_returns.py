"""benchmarks/prior_returns.py: the task's exact values, and the analysis of a tiny sweep with saved models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sb3_gitstorm.comparison.compare import main as compare
from sb3_gitstorm.envs.toy import JumpingDotEnv
from tests.conftest import load_benchmark

TASK = dict(size=16, cells=4, jump=1, outcomes=4)


@pytest.mark.parametrize(
    "reward_columns, optimal, constant, myopic",
    [([1, 2], 75.0, 50.0, True), (None, 74.833, 64.286, False), ([0], 39.99, 35.679, False), ("late", 74.75, 50.0, False)],
)
def test_task_values(reward_columns: list[int] | str | None, optimal: float, constant: float, myopic: bool) -> None:
    """Value iteration's figures, and its optimal actions scoring its optimum when played (Monte Carlo, fixed seeds)."""
    script = load_benchmark("prior_returns")
    late = reward_columns == "late"  # the middle columns, paid one step late: no action changes the immediate reward
    columns = [1, 2] if late else reward_columns
    env = JumpingDotEnv(**TASK, reward_columns=columns, max_steps=100, late_reward=late)  # type: ignore[arg-type]
    task = script.task_values(env)
    assert task["optimal"] == pytest.approx(optimal, abs=1e-3) and task["best_constant"] == pytest.approx(constant, abs=1e-3)
    assert task["myopic_is_optimal"] is myopic
    returns = []
    for seed in range(200):
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action = int(np.flatnonzero(task["optimal_actions"][env.t, env.cell[0], env.cell[1]])[0])
            _, reward, _, done, _ = env.step(action)
            total += reward
        returns.append(total)
    assert np.mean(returns) == pytest.approx(optimal, abs=3 * np.std(returns) / np.sqrt(len(returns)))


def test_prior_returns_analyses_a_sweep(tmp_path: Path) -> None:
    """A two-variant GITSTORM sweep with --save-models, then the analysis: one row per variant, every figure a rate."""
    small = {"learning_starts": 40, "batch_length": 8, "imagine_context_length": 2, "imagine_horizon": 3, "imagine_batch_size": 8}
    small["policy_kwargs"] = "dict(size='tiny', image_size=16, latent_tokens=4, latent_classes=4, cnn_channels=(4, 8))"
    raw = {
        "algorithms": ["gitstorm-mlp", "draft2"],
        "variants": {"draft2": {"algorithm": "gitstorm", "hyperparams": {"draft_steps": 2, "revise_steps": 2}}},
        "seeds": 1,
        "budget": 48,
        "eval": {"interval": 24, "episodes": 1},
        "bootstrap_reps": 20,
        "device": "cpu",
        "hyperparams": {"gitstorm-mlp": small, "draft2": small},
        "envs": {"gitstorm/JumpingDot-v0": {"env_kwargs": {**TASK, "max_steps": 20, "reward_columns": [1, 2]}, "reference": 15}},
    }
    config = tmp_path / "returns.yml"
    config.write_text(yaml.safe_dump(raw))
    sweep = tmp_path / "sweep"
    assert compare(["--config", str(config), "--out", str(sweep), "--workers", "1", "--save-models"]) == 0
    result = load_benchmark("prior_returns").main(["--sweep", str(sweep), "--episodes", "1", "--held-out", "2"])
    assert result["task"] == {"optimal": pytest.approx(15.0), "best_constant": pytest.approx(10.0), "myopic_is_optimal": True}
    assert [run["algo"] for run in result["runs"]] == ["draft2", "gitstorm-mlp"]
    for run in result["runs"]:
        for key in ("optimal_action_rate", "feasible", "feasible_rollout", "reconstruction_feasible"):
            assert 0.0 <= run[key] <= 1.0, (run["algo"], key)
    assert [step for step, *_ in result["curves"]["draft2"]] == [0, 24, 48]
    text = (sweep / "analysis.md").read_text()
    assert "| draft2 | 1 |" in text and "| gitstorm-mlp | 1 |" in text
    assert json.loads((sweep / "analysis.json").read_text())["env_kwargs"]["reward_columns"] == [1, 2]
    # The sweep's results.json records each variant's zoo algorithm and settings.
    variants = json.loads((sweep / "results.json").read_text())["config"]["variants"]
    assert variants == {"draft2": {"zoo_algo": "gitstorm", "hyperparams": {"draft_steps": 2, "revise_steps": 2}}}
