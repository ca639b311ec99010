"""The README's two commands are the project's contract: CI must run them exactly, and its file links must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUN = 'pip install torch==2.13.0 && pip install -e ".[all]"'
TEST = "python -m pytest -n 2 tests"


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "README.md has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_two_commands():
    assert readme_commands() == [RUN, TEST]


def test_ci_runs_the_readme_commands():
    """Each command is in .ci/run as a run of whole ``&&``-separated steps (possibly inside a longer chain)."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_commands():
        steps = command.split(" && ")
        chains = [line.strip().split(" && ") for line in ci]
        assert any(chain[i : i + len(steps)] == steps for chain in chains for i in range(len(chain))), command


def test_readme_file_links_exist():
    links = [target for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README) if "://" not in target]
    assert links, "README.md links to no file"
    missing = [target for target in links if not (ROOT / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
