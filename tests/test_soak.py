"""benchmarks/soak.py: the figures it derives, and a short run end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_summarize_measures_growth_after_the_replay_fills() -> None:
    rows = [dict(event="start", t=0.0, steps=0, rss_mib=300.0, sps=None, buffer_full=False)]
    for i in range(1, 21):  # 500 steps per sample; the replay fills at step 2000
        steps = 500 * i
        rss = 300 + steps / 100 if steps < 2000 else 320 + 0.5 * (steps - 2000) / 1000
        rows.append(dict(event="sample", t=10.0 * i, steps=steps, rss_mib=rss, sps=float(i), buffer_full=steps >= 2000))
    reload = dict(event="reload", t=75.0, steps=3499, rss_mib=320.75, sps=None, buffer_full=True, eval_return=9.0, seconds=2.0)
    rows.insert(8, reload)
    summary = load_soak().summarize(rows)
    assert summary["buffer_full_at_steps"] == 2000 and summary["rss_at_full_mib"] == 320
    assert summary["growth_after_full_mib_per_1k_steps"] == pytest.approx(0.5, rel=1e-3)
    assert summary["growth_after_full_percent_per_10k_steps"] == pytest.approx(100 * 5 / 320, rel=1e-3)
    assert summary["rss_max_after_full_halves_mib"] == [322, 324]  # steps 2000-6000, 6500-10000
    assert summary["high_water_growth_percent_per_10k_steps"] == pytest.approx(100 * 2 / 322 * 10 / 4)
    assert (summary["rss_start_mib"], summary["rss_max_mib"], summary["rss_end_mib"]) == (300, 324, 324)
    assert (summary["reloads"], summary["eval_returns"], summary["error"]) == (1, [9.0], None)
    assert (summary["sps_first_tenth"], summary["sps_last_tenth"]) == (1.5, 19.5)


def test_short_soak_end_to_end(tmp_path: Path) -> None:
    command = [sys.executable, "benchmarks/soak.py", "--minutes", "0.1", "--policies", "mlp", "--out", str(tmp_path)]
    command += ["--reload-every", "60", "--sample-seconds", "1", "--no-progress"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    summary = report["policies"]["mlp"]
    assert summary["error"] is None and summary["reloads"] >= 1
    assert summary["rss_start_mib"] <= summary["rss_max_mib"] and (tmp_path / "soak.png").stat().st_size > 0
