"""benchmarks/prior_feasibility.py at a tiny scale: trains, evaluates, resumes and re-evaluates saved models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_benchmark


def test_prior_feasibility_smoke(tmp_path: Path) -> None:
    script = load_benchmark("prior_feasibility")
    script.TIMING_BATCH, script.TIMING_REPEATS = 8, 1  # seconds, not a measurement
    variants = ["mlp", "maskgit-cosine-draft8", "maskgit-cosine-draft8-revise"]
    argv = ["--out", str(tmp_path), "--outcomes", "4", "--seeds", "0", "1", "--variants", *variants]
    argv += ["--updates", "3", "--episodes", "2", "--held-out", "1", "--workers", "1"]
    summary = script.main(argv)
    assert list(summary["o4"]) == variants
    for name, entry in summary["o4"].items():
        assert entry["seeds"] == [0, 1] and entry["updates"] == [3]
        revise = name.endswith("-revise")  # no tractable likelihood of its samples: no KL, no perplexity
        assert entry["prior_kl_kind"] == ("not_available" if revise else "exact" if name == "mlp" else "upper_bound")
        for column in ("feasible_step1", "reconstruction_feasible", "prior_kl", "mse", "prior_perplexity"):
            if revise and column in ("prior_kl", "prior_perplexity"):
                assert entry[column] is None, (name, column)
                continue
            mean, ci = entry[column]
            assert mean == mean and ci >= 0.0, (name, column)  # finite
        assert 0.0 <= entry["feasible_step1"][0] <= 1.0 and len(entry["feasible_rollout_per_step"]) == script.HORIZON
        assert entry["time_ratio"] > 0.0
    assert summary["o4"]["mlp"]["time_ratio"] == pytest.approx(1.0)
    # The two cosine variants evaluate one trained model under two decodings.
    assert not list((tmp_path / "runs" / "o4" / "maskgit-cosine-draft8").glob("*.zip"))
    assert (tmp_path / "runs" / "o4" / "maskgit-cosine" / "seed1.zip").exists()
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "summary.md", "imagined.png", "feasibility.png", "runs"}
    text = (tmp_path / "summary.md").read_text()
    assert (
        "| maskgit-cosine-draft8-revise | 8/8/1 | 2 |" in text and "| n/a | n/a |" not in text.split("| mlp |")[1].split("\n")[0]
    )

    # Resuming evaluates nothing again; --eval-only re-evaluates the saved models and trains none.
    record = tmp_path / "runs" / "o4" / "mlp" / "seed0.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "prior_kl": 123.0}) + "\n")
    assert script.main(argv)["o4"]["mlp"]["prior_kl"][0] != pytest.approx(summary["o4"]["mlp"]["prior_kl"][0])
    model = tmp_path / "runs" / "o4" / "mlp" / "seed0.zip"
    stamp = model.stat().st_mtime_ns
    again = script.main([*argv, "--eval-only"])
    assert again["o4"]["mlp"]["prior_kl"][0] == pytest.approx(summary["o4"]["mlp"]["prior_kl"][0])
    assert model.stat().st_mtime_ns == stamp
    (tmp_path / "runs" / "o4" / "mlp" / "seed1.zip").unlink()
    with pytest.raises(FileNotFoundError, match="--eval-only: no saved model"):
        script.main([*argv, "--eval-only"])
