"""The documentation builds with warnings as errors, offline, and its parameter tables come from the code."""

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("sphinx_rtd_theme")

from sb3_gitstorm import GITSTORM, ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def build_html(out: Path) -> None:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-j", "1", "-b", "html", "docs", str(out)]
    # No network: the SB3 inventory is local (docs/conf.py); a dead proxy makes any fetch attempt fail at once.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"the docs build failed (warnings are errors):\n{result.stdout}\n{result.stderr}"


def test_docs_build_with_generated_parameters(tmp_path: Path):
    """One build (the slow part, ~10 s of CPU): no warning, every constructor argument and ModelConfig field documented."""
    build_html(tmp_path)
    source = (tmp_path / "gitstorm.html").read_text()
    page = re.sub(r"<[^>]+>", "", source)
    for name in inspect.signature(GITSTORM.__init__).parameters:
        if name != "self":
            assert f"{name} (" in page, f"GITSTORM's parameter {name} is missing from its generated documentation"
    table = re.search(r'<table class="[^"]*gitstorm-sizes.*?</table>', source, re.S)
    assert table, "the algorithm page has no generated sizes table"
    cells = re.sub(r"<[^>]+>", " ", table.group(0))
    for field in dataclasses.fields(ModelConfig):
        assert field.name in cells, f"ModelConfig.{field.name} is missing from the sizes table"
        assert f"{field.name} (" in page, f"ModelConfig.{field.name} has no entry in ModelConfig's docstring"


def test_no_hand_kept_parameter_tables():
    """One source: the README and the pages do not copy the constructor's or ModelConfig's table."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        rows = re.findall(r"^\| `(learning_rate|imagine_batch_size|latent_tokens|maskgit_dim)`", path.read_text(), re.M)
        assert not rows, f"{path.name} keeps a hand-written parameter table (rows {rows})"
