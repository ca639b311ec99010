"""The README's two commands are the project's contract: CI must run the test command exactly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_two_commands():
    run, test = readme_commands()
    assert run.startswith("pip install torch==2.13.0 && ") and "sb3_gitstorm" in run
    assert test.endswith("python -m pytest -n 2 tests")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
