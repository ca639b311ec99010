"""The benchmark harness: configuration, plan and skips, resume, rliable statistics, report files, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.comparison.compare import main
from sb3_gitstorm.comparison.report import Report, aggregate_metrics, curve_band, improvement_probabilities, normalization
from sb3_gitstorm.comparison.sweep import RunStore, Sweep
from sb3_gitstorm.comparison.sweep_config import load_config, parse_config, plan
from sb3_gitstorm.envs import ATARI_100K_GAMES, DMC_TASKS

CONFIGS = Path(__file__).resolve().parent.parent / "benchmarks" / "configs"


def quiet() -> Console:
    return Console(quiet=True)


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "preset, n_envs", [("smoke", 2), ("cpu", 3), ("atari100k", len(ATARI_100K_GAMES)), ("dmc", len(DMC_TASKS))]
)
def test_presets_parse(preset: str, n_envs: int) -> None:
    config = load_config(CONFIGS / f"{preset}.yml")
    assert len(config.envs) == n_envs
    assert {"gitstorm", "ppo"} <= set(config.algorithms)
    assert all(env.reference is not None or env.env_id.startswith("gitstorm/atari-") for env in config.envs)


def test_config_defaults_and_overrides() -> None:
    raw = {
        "algorithms": ["gitstorm-mlp", "ppo"],
        "seeds": 2,
        "budget": 1000,
        "eval": {"interval": 100, "episodes": 3},
        "hyperparams": {"gitstorm-mlp": {"gamma": 0.9, "batch_size": 8}},
        "envs": {
            "CartPole-v1": None,
            "Pendulum-v1": {
                "budget": 500,
                "eval": {"episodes": 1},
                "hyperparams": {"gitstorm-mlp": {"gamma": 0.5}},
                "random": -1,
            },
        },
    }
    config = parse_config(raw)
    assert config.seeds == (0, 1) and config.device == "auto" and config.resources == {"num_cpus": 1.0}
    cartpole, pendulum = config.envs
    assert (cartpole.budget, cartpole.eval_interval, cartpole.eval_episodes, cartpole.reference) == (1000, 100, 3, 500.0)
    assert (pendulum.budget, pendulum.eval_interval, pendulum.eval_episodes, pendulum.random) == (500, 100, 1, -1.0)
    assert cartpole.measures_random and not pendulum.measures_random
    # The algorithm's own settings, then the global overrides, then the environment's.
    assert config.run_spec(pendulum, "gitstorm-mlp", 1).hyperparams == {"prior": "mlp", "gamma": 0.5, "batch_size": 8}
    assert config.run_spec(cartpole, "gitstorm-mlp", 0).hyperparams == {"prior": "mlp", "gamma": 0.9, "batch_size": 8}
    assert config.run_spec(cartpole, "ppo", 0).name == "CartPole-v1/ppo/seed0"


def test_variants_are_named_settings_of_an_algorithm(tmp_path: Path) -> None:
    raw = {
        "algorithms": ["gitstorm-mlp", "draft4", "sac-fast"],
        "variants": {
            "draft4": {"algorithm": "gitstorm", "hyperparams": {"draft_steps": 4, "gamma": 0.9}},
            "sac-fast": {"algorithm": "sac"},
        },
        "seeds": 1,
        "budget": 100,
        "eval": {"interval": 50, "episodes": 1},
        "hyperparams": {"draft4": {"batch_size": 8}},
        "envs": {"CartPole-v1": {}, "Pendulum-v1": {"hyperparams": {"draft4": {"gamma": 0.5}}}},
    }
    config = parse_config(raw)
    cartpole, pendulum = config.envs
    spec = config.run_spec(cartpole, "draft4", 0)
    assert (spec.zoo_algo, spec.name) == ("gitstorm", "CartPole-v1/draft4/seed0")
    assert spec.hyperparams == {"draft_steps": 4, "gamma": 0.9, "batch_size": 8}
    assert config.run_spec(pendulum, "draft4", 0).hyperparams == {"draft_steps": 4, "gamma": 0.5, "batch_size": 8}
    assert config.run_spec(cartpole, "gitstorm-mlp", 0).zoo_algo == "gitstorm"
    # A variant keeps its algorithm's action spaces: SAC's is skipped on CartPole.
    runs, skipped = plan(config)
    assert [(skip.env_id, skip.algo) for skip in skipped] == [("CartPole-v1", "sac-fast")]
    expected = {("gitstorm-mlp", "gitstorm"), ("draft4", "gitstorm"), ("sac-fast", "sac")}
    assert {(run.algo, run.zoo_algo) for run in runs} == expected
    # --set reaches a variant by its name.
    config = load_config(write_config(tmp_path / "variants.yml", raw), ["draft4.revise_steps=4"])
    assert config.run_spec(config.envs[0], "draft4", 0).hyperparams["revise_steps"] == 4


@pytest.mark.parametrize(
    "variants, message",
    [
        ({"gitstorm-mlp": {"algorithm": "gitstorm"}}, "already an algorithm"),
        ({"draft4": {"algorithm": "a2c"}}, "must be one of"),
        ({"draft4": {"algorithm": "gitstorm", "hyperparms": {}}}, "Unknown key"),
        ({"draft4": {"algorithm": "gitstorm", "hyperparams": ["draft_steps"]}}, "must be a mapping"),
        (["draft4"], "variants must be a mapping"),
    ],
)
def test_variant_errors(variants: object, message: str) -> None:
    raw = {"algorithms": ["ppo"], "variants": variants, "seeds": 1, "budget": 10, "eval": {"interval": 5, "episodes": 1}}
    with pytest.raises(ValueError, match=message):
        parse_config({**raw, "envs": ["CartPole-v1"]})


def test_variants_are_not_algorithms_elsewhere() -> None:
    raw = {"algorithms": ["draft4"], "seeds": 1, "budget": 10, "eval": {"interval": 5, "episodes": 1}, "envs": ["CartPole-v1"]}
    with pytest.raises(ValueError, match=r"Unknown algorithm.*define a variant"):
        parse_config(raw)


def test_command_line_settings_override_every_environment(tmp_path: Path) -> None:
    raw = {
        "algorithms": ["gitstorm", "ppo"],
        "seeds": 1,
        "budget": 100,
        "eval": {"interval": 50, "episodes": 1},
        "hyperparams": {"gitstorm": {"imagine_starts": "replay"}},
        "envs": {"CartPole-v1": {}, "Pendulum-v1": {"hyperparams": {"gitstorm": {"imagine_starts": "replay", "gamma": 0.9}}}},
    }
    path = write_config(tmp_path / "starts.yml", raw)
    config = load_config(path, ["gitstorm.imagine_starts=batch", "gitstorm.imagine_batch_size=64", "gitstorm.learning_rate=3e-4"])
    cartpole, pendulum = (config.run_spec(env, "gitstorm", 0).hyperparams for env in config.envs)
    # 3e-4 is a float, not YAML 1.1's string (which the zoo would take for a schedule)
    assert cartpole == {"imagine_starts": "batch", "imagine_batch_size": 64, "learning_rate": 3e-4}
    assert pendulum == {"imagine_starts": "batch", "imagine_batch_size": 64, "learning_rate": 3e-4, "gamma": 0.9}
    assert config.run_spec(config.envs[0], "ppo", 0).hyperparams == {}
    # The same reading for the file's own values.
    assert "gamma: 0.9" in path.read_text()
    path.write_text(path.read_text().replace("gamma: 0.9", "gamma: 9e-1"))
    reloaded = load_config(path)
    assert reloaded.run_spec(reloaded.envs[1], "gitstorm", 0).hyperparams == {"imagine_starts": "replay", "gamma": 0.9}
    with pytest.raises(ValueError, match=r"--set takes algo\.key=value"):
        load_config(path, ["gitstorm.imagine_starts"])
    with pytest.raises(ValueError, match="'sac' is not one of this configuration's algorithms"):
        load_config(path, ["sac.tau=0.01"])


def test_command_line_environments_select_a_subset() -> None:
    config = load_config(CONFIGS / "cpu.yml", env_ids=["Pendulum-v1"])
    assert [env.env_id for env in config.envs] == ["Pendulum-v1"]
    with pytest.raises(ValueError, match="--env Acrobot-v1: not in this configuration"):
        load_config(CONFIGS / "cpu.yml", env_ids=["Acrobot-v1"])


def test_command_line_budget_replaces_every_environments_budget() -> None:
    pixels = load_config(CONFIGS / "cpu-pixels.yml")
    assert sorted(env.budget for env in pixels.envs) == [4096, 6144, 8192]  # a global and two environments' own budgets
    config = load_config(CONFIGS / "cpu-pixels.yml", env_ids=["gitstorm/dmc-cartpole-balance-v0"], budget=10240)
    (env,) = config.envs
    assert env.budget == 10240 and config.run_spec(env, "ppo", 0).budget == 10240
    assert env.eval_interval == 1024  # the rest of the environment's settings stay
    with pytest.raises(ValueError, match="--budget must be a positive number"):
        load_config(CONFIGS / "cpu-pixels.yml", budget=0)


def test_command_line_seeds_replace_the_configurations_seeds() -> None:
    config = load_config(CONFIGS / "cpu-pixels.yml", seeds=[3, 4])
    assert config.seeds == (3, 4) and {run.seed for run in plan(config)[0]} == {3, 4}
    assert load_config(CONFIGS / "cpu-pixels.yml").seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="--seeds must be distinct"):
        load_config(CONFIGS / "cpu-pixels.yml", seeds=[3, 3])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"algorithms": ["a2c"]}, "Unknown algorithm"),
        ({"budgte": 5}, "Unknown key"),
        ({"envs": {"NoSuchEnv-v0": {}}}, "not a registered gymnasium id"),
        ({"envs": {"Acrobot-v1": {}}}, "no reference return"),
        ({"envs": {"CartPole-v1": {"eval": {"interval": 0}}}}, "must be positive"),
        ({"hyperparams": {"ppo": ["gamma"]}}, "must be a mapping"),
        ({"seeds": [1, 1]}, "distinct seeds"),
    ],
)
def test_config_errors(change: dict, message: str) -> None:
    raw = {"algorithms": ["ppo"], "seeds": 1, "budget": 10, "eval": {"interval": 5, "episodes": 1}, "envs": ["CartPole-v1"]}
    with pytest.raises(ValueError, match=message):
        parse_config({**raw, **change})


def test_plan_skips_unsupported_action_spaces() -> None:
    runs, skipped = plan(load_config(CONFIGS / "smoke.yml"))
    assert {(skip.env_id, skip.algo) for skip in skipped} == {("CartPole-v1", "sac"), ("Pendulum-v1", "dqn")}
    assert "Discrete" in next(skip.reason for skip in skipped if skip.algo == "sac")
    assert len(runs) == 2 * (2 * 5 - 2)  # seeds x (envs x algorithms - skipped)


SYNTHETIC = {
    "algorithms": ["gitstorm", "ppo"],
    "seeds": 3,
    "budget": 200,
    "eval": {"interval": 100, "episodes": 1},
    "bootstrap_reps": 300,
    "envs": {"CartPole-v1": {"random": 0, "reference": 100}, "Pendulum-v1": {}},
}


def synthetic_sweep(out: Path, finals: dict[tuple[str, str], list[float]]) -> tuple[list, list, RunStore]:
    """Finished runs with curves ``[0, final / 2, final]`` at steps 0, 100, 200, without training anything."""
    config = parse_config(SYNTHETIC)
    runs, skipped = plan(config)
    store = RunStore(out)
    for spec in runs:
        final = finals[spec.env_id, spec.algo][spec.seed]
        points = [{"step": step, "mean_return": final * step / 200, "std_return": 1.0} for step in (0, 100, 200)]
        store.start(spec)
        store.finish(spec, {"hyperparams": {}, "points": points, "torch_threads": 1})
    store.save_random_score("Pendulum-v1", {"mean_return": -1150.0, "std_return": 10.0, "episodes": 1})
    return runs, skipped, store


def test_statistics_match_hand_computed_values() -> None:
    # One environment, runs 0, 1, 2, 10: IQM = mean of the middle two = 1.5; mean = 3.25; median (of task means) = 3.25.
    estimates = aggregate_metrics({"x": np.array([[0.0], [1.0], [2.0], [10.0]])}, reps=500)["x"]
    assert (estimates["IQM"].value, estimates["mean"].value, estimates["median"].value) == pytest.approx((1.5, 3.25, 3.25))
    for estimate in estimates.values():
        assert 0.0 <= estimate.low <= estimate.value <= estimate.high <= 10.0
    # Two environments: IQM over all 8 scores (trimmed 2 each side), median of the two task means.
    two = np.array([[0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [3.0, 100.0]])
    estimates = aggregate_metrics({"y": two}, reps=200)["y"]
    assert estimates["IQM"].value == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))
    assert estimates["median"].value == pytest.approx(np.median([1.5, 28.75]))
    # Identical runs: no uncertainty.
    assert tuple(aggregate_metrics({"z": np.full((3, 2), 0.7)}, reps=100)["z"]["mean"]) == pytest.approx((0.7, 0.7, 0.7))

    # P(X > Y): X = [2, 4, 6], Y = [1, 3] on one environment wins 5 of 6 pairs; on a second where X always wins, 1.
    x, y = np.array([[2.0, 9.0], [4.0, 9.0], [6.0, 9.0]]), np.array([[1.0, 0.0], [3.0, 0.0]])
    improvements = improvement_probabilities({("x", "y"): (x[:, :1], y[:, :1]), ("x2", "y2"): (x, y)}, reps=300)
    assert improvements["x", "y"].value == pytest.approx(5 / 6)
    assert improvements["x2", "y2"].value == pytest.approx((5 / 6 + 1) / 2)
    assert 0.0 <= improvements["x", "y"].low <= 5 / 6 <= improvements["x", "y"].high <= 1.0
    same = improvement_probabilities({("a", "b"): (np.ones((2, 1)), np.ones((2, 1)))}, reps=50)["a", "b"]
    assert tuple(same) == (0.5, 0.5, 0.5)

    mean, low, high = curve_band(np.array([[0.0, 1.0, 5.0], [0.0, 3.0, 5.0]]), reps=200)
    np.testing.assert_allclose(mean, [0.0, 2.0, 5.0])
    np.testing.assert_allclose(low[[0, 2]], [0.0, 5.0])
    assert low[1] >= 1.0 and high[1] <= 3.0


def test_report_files(tmp_path: Path) -> None:
    finals = {
        ("CartPole-v1", "gitstorm"): [80.0, 90.0, 100.0],
        ("CartPole-v1", "ppo"): [10.0, 20.0, 30.0],
        ("Pendulum-v1", "gitstorm"): [-1150.0, -1150.0, -1150.0],
        ("Pendulum-v1", "ppo"): [-150.0, -150.0, -150.0],
    }
    runs, skipped, store = synthetic_sweep(tmp_path, finals)
    report = Report(parse_config(SYNTHETIC), runs, skipped, store)
    report.write(tmp_path, "python benchmarks/compare.py --config synthetic.yml --out here")

    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["points"]) == len(runs) * 3
    point = results["points"][2]
    assert set(point) == {"env", "algo", "seed", "step", "mean_return", "std_return", "normalized_return"}
    assert (point["env"], point["algo"], point["seed"], point["step"], point["mean_return"]) == (
        "CartPole-v1",
        "gitstorm",
        0,
        200,
        80.0,
    )
    assert point["normalized_return"] == pytest.approx(0.8)  # (80 - 0) / (100 - 0), the configured random and reference
    assert results["normalization"]["Pendulum-v1"]["random"] == -1150.0  # measured (here: planted)
    # Normalised finals: gitstorm [0.8, 0.9, 1.0] and [0, 0, 0]; ppo [0.1, 0.2, 0.3] and [1, 1, 1].
    assert results["aggregates"]["gitstorm"]["mean"]["value"] == pytest.approx(0.45)
    assert results["aggregates"]["ppo"]["median"]["value"] == pytest.approx(0.6)
    (improvement,) = results["probability_of_improvement"]
    assert (improvement["x"], improvement["y"], improvement["value"]) == ("gitstorm", "ppo", pytest.approx(0.5))

    summary = (tmp_path / "summary.md").read_text()
    assert "| CartPole-v1 | 200 | 90.0 ± 8.2 | 20.0 ± 8.2 |" in summary
    assert "| gitstorm | ppo | 2 | 0.50 [" in summary
    assert "| Pendulum-v1 | -1150.0 | -150.0 | random policy measured over 1 episodes |" in summary
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atari_scores_are_human_normalised(tmp_path: Path) -> None:
    raw = {"algorithms": ["ppo"], "seeds": 1, "budget": 10, "eval": {"interval": 5, "episodes": 1}}
    (pong,) = parse_config({**raw, "envs": ["gitstorm/atari-Pong-v0"]}).envs
    assert not pong.measures_random and pong.reference is None
    norm = normalization(pong, RunStore(tmp_path))
    np.testing.assert_allclose(norm(np.array([-20.7, 14.6])), [0.0, 1.0])  # the published random and human scores


def test_resume_skips_finished_runs_and_restarts_unfinished_ones(tmp_path: Path) -> None:
    finals = {(env, algo): [1.0, 2.0, 3.0] for env in ("CartPole-v1", "Pendulum-v1") for algo in ("gitstorm", "ppo")}
    runs, _, store = synthetic_sweep(tmp_path, finals)
    config = parse_config(SYNTHETIC)
    assert Sweep(config, runs, tmp_path, quiet()).todo == []

    unfinished, failed = runs[0], runs[1]
    store.path(unfinished, "jsonl").unlink()
    store.start(unfinished)  # a .part file, as left by an interrupted sweep
    store.path(failed, "jsonl").unlink()
    store.fail(failed, RuntimeError("boom"))
    sweep = Sweep(config, runs, tmp_path, quiet())
    assert sweep.todo == [unfinished, failed]
    assert "RuntimeError: boom" in store.path(failed, "error").read_text()
    # CartPole's random return is configured; Pendulum's is measured once.
    assert sweep.random_todo == []
    store.random_path("Pendulum-v1").unlink()
    assert Sweep(config, runs, tmp_path, quiet()).random_todo == [config.env("Pendulum-v1")]

    # A run recorded before RunSpec named its zoo algorithm (a built-in algorithm's own) counts as finished.
    path = store.path(runs[2], "jsonl")
    header, *points = path.read_text().splitlines(keepends=True)
    record = json.loads(header)
    del record["run"]["zoo_algo"]
    path.write_text(json.dumps(record) + "\n" + "".join(points))
    assert store.is_finished(runs[2])

    # A finished run made with other settings is an error, not silently reused or redone.
    changed = parse_config({**SYNTHETIC, "budget": 300})
    with pytest.raises(ValueError, match="budget"):
        Sweep(changed, plan(changed)[0], tmp_path, quiet())


def test_smoke_preset_end_to_end(tmp_path: Path) -> None:
    """smoke.yml with one seed and shorter runs, in two worker processes; then the same command does nothing."""
    raw = yaml.safe_load((CONFIGS / "smoke.yml").read_text())
    raw.update(seeds=1, budget=200, eval={"interval": 100, "episodes": 1}, bootstrap_reps=50)
    config = write_config(tmp_path / "smoke.yml", raw)
    out = tmp_path / "out"
    assert main(["--config", str(config), "--out", str(out), "--workers", "2", "--save-models"]) == 0

    results = json.loads((out / "results.json").read_text())
    runs = {(p["env"], p["algo"]) for p in results["points"]}
    assert runs == {(env, algo) for env in ("CartPole-v1", "Pendulum-v1") for algo in raw["algorithms"]} - {
        ("CartPole-v1", "sac"),
        ("Pendulum-v1", "dqn"),
    }
    assert {p["step"] for p in results["points"] if p["algo"] == "gitstorm"} == {0, 100, 200}
    assert all(np.isfinite(p["normalized_return"]) for p in results["points"])
    assert set(results["aggregates"]) == set(raw["algorithms"])
    summary = (out / "summary.md").read_text()
    assert "sac on CartPole-v1 skipped: sac does not support Discrete action spaces" in summary
    assert (out / "curves.png").stat().st_size > 10_000

    finished = {path: path.stat().st_mtime_ns for path in (out / "runs").rglob("*.jsonl")}
    assert len(finished) == 8 and not list((out / "runs").rglob("*.part"))
    # --save-models: each run's trained model, which its algorithm loads.
    model = GITSTORM.load(out / "runs" / "Pendulum-v1" / "gitstorm" / "seed0.zip")
    assert model.num_timesteps == 200 and len(list((out / "runs").rglob("*.zip"))) == 8
    # Each of the two workers ran with its share of the cores as torch threads, recorded in the header.
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert {json.loads(path.read_text().splitlines()[0])["torch_threads"] for path in finished} == {threads}
    assert main(["--config", str(config), "--out", str(out)]) == 0
    assert {path: path.stat().st_mtime_ns for path in (out / "runs").rglob("*.jsonl")} == finished
    raw["budget"] = 300  # finished runs made with another budget: refused
    assert main(["--config", str(write_config(tmp_path / "smoke.yml", raw)), "--out", str(out)]) == 2


def test_ray_tasks_and_failed_runs(tmp_path: Path) -> None:
    """The same sweep as Ray tasks on a local Ray instance; a run that raises is reported, not fatal."""
    pytest.importorskip("ray")
    raw = {
        "algorithms": ["ppo", "gitstorm"],
        "seeds": 1,
        "budget": 64,
        "eval": {"interval": 64, "episodes": 1},
        "bootstrap_reps": 20,
        "hyperparams": {"ppo": {"n_envs": 2, "n_steps": 32}, "gitstorm": {"prior": "no-such-prior"}},
        "envs": {"CartPole-v1": {"random": 20}},
    }
    out = tmp_path / "out"
    assert main(["--config", str(write_config(tmp_path / "ray.yml", raw)), "--out", str(out), "--ray-address", "local"]) == 1
    assert (out / "runs/CartPole-v1/ppo/seed0.jsonl").is_file()
    assert "Unknown prior" in (out / "runs/CartPole-v1/gitstorm/seed0.error").read_text()
    assert "CartPole-v1/gitstorm/seed0 did not finish" in (out / "summary.md").read_text()


def _process_state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process from /proc, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    states = {int(path.name): _process_state(int(path.name)) for path in Path("/proc").iterdir() if path.name.isdigit()}
    return [child for child, state in states.items() if state is not None and state[1] == pid]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker processes in /proc (Linux)")
def test_sigterm_ends_the_sweep_and_its_workers(tmp_path: Path) -> None:
    """``kill <sweep>`` ends it as Ctrl-C does: status 130, the report written, and no worker left training."""
    raw = {
        "algorithms": ["ppo"],
        "seeds": 2,
        "budget": 10_000_000,  # far more than the test waits for
        "eval": {"interval": 1024, "episodes": 1},
        "envs": {"CartPole-v1": {"random": 20}},
    }
    out = tmp_path / "out"
    config = write_config(tmp_path / "long.yml", raw)
    command = ["-m", "sb3_gitstorm.comparison.compare", "--config", str(config), "--out", str(out), "--workers", "2"]
    sweep = subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(list(out.glob("runs/*/ppo/*.part"))) < 2:  # both runs are training
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep did not start its two runs"
            time.sleep(0.2)
        workers = _children(sweep.pid)
        assert len(workers) >= 2
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=120) == 130
    finally:
        sweep.kill()
    deadline = time.monotonic() + 30
    while any(state is not None and state[0] != "Z" for state in map(_process_state, workers)):
        assert time.monotonic() < deadline, "worker processes outlived the sweep"
        time.sleep(0.2)
    assert "did not finish" in (out / "summary.md").read_text()
