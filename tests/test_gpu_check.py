"""benchmarks/gpu_check.py --device cpu --quick: the GPU check's code paths keep working before a GPU is at hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run_writes_every_part(tmp_path: Path) -> None:
    """Every part runs at tiny sizes; the CUDA-only ones say why they were skipped."""
    gpu_check = load_gpu_check()
    report = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report, default=str))
    parts = report["parts"]
    assert list(parts) == ["environment", "tests", "throughput", "atari"]
    assert all(part["status"] in ("done", "partial") and part["seconds"] <= part["budget_s"] + 15 for part in parts.values())

    assert parts["environment"]["torch"] and "gpu" not in parts["environment"]
    assert any("CUDA only" in note for note in parts["environment"]["notes"])
    tests = parts["tests"]
    assert tests["status"] == "done" and tests["skipped"] >= 9 and tests["passed"] == tests["failed"] == tests["errors"] == 0
    assert any("no CUDA device" in note for note in tests["notes"])

    throughput = parts["throughput"]
    first = throughput["configs"][0]
    assert first["name"] == "bf16" and first["ms"]["loop_step"] > 0 and first["relative_to_default"]["loop_step"] == 1.0
    assert {"name": "fp32+tf32", "reason": "TF32 is CUDA only"} in throughput["skipped"]
    assert throughput["projection"]["hours"] > 0 and throughput["projection"]["replay_bytes_100k"] > 0

    atari = parts["atari"]
    if atari["status"] == "done":  # needs ale-py (the "atari" extra)
        assert atari["env_steps"] > atari["learning_starts"] and atari["updates"] > 0 and atari["train_steps_per_s"] > 0
        assert atari["dreams"]["filmstrip"] > 0 and (tmp_path / "dream_filmstrip.png").stat().st_size > 0
        assert atari["dreams"]["video"] == 0 or (tmp_path / "dream_video.gif").exists()

    summary = (tmp_path / "gpu_check.md").read_text()
    for heading in ("# GPU check: no GPU (cpu)", "## CUDA tests", "## The training loop", "### Projected: one Atari 100k run"):
        assert heading in summary
    assert not list(tmp_path.glob("*.xml"))  # the JUnit report is folded into the JSON


def test_rejects_unknown_parts_and_a_missing_gpu(tmp_path: Path) -> None:
    gpu_check = load_gpu_check()
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--parts", "tests,gpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--budget-scale", "0", "--out", str(tmp_path)])
