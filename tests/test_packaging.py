"""The distributions: ``python -m build`` makes an sdist and a wheel, and the wheel (not the checkout) runs the quick start."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import sb3_gitstorm

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = """
import sys
import sb3_gitstorm
from sb3_gitstorm import GITSTORM
from sb3_gitstorm.zoo import default_conf_file

assert sb3_gitstorm.__file__.startswith(sys.prefix), sb3_gitstorm.__file__  # the venv's copy, not the checkout
model = GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="tiny"), learning_starts=32, batch_size=4, batch_length=8,
                 imagine_batch_size=8, imagine_context_length=4, imagine_horizon=4, seed=0)
model.learn(64)
print(model.num_timesteps, default_conf_file("gitstorm", "CartPole-v1"))
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of a copy of the checkout (so the build leaves no egg-info here): the sdist, then a wheel from it."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "results"))
    # --no-isolation: this environment's setuptools, so the test needs no download.
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "dist"


def test_sdist_holds_the_tests_and_the_package_data(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {"tests/conftest.py", "tests/test_zoo.py", ".ci/run", "README.md", "sb3_gitstorm/py.typed"}
    expected |= {"sb3_gitstorm/hyperparams/gitstorm.yml", "benchmarks/soak.py", "benchmarks/configs/cpu-pixels.yml"}
    assert expected <= names, expected - names


def test_wheel_installs_and_runs_the_quick_start(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"sb3_gitstorm/py.typed", "sb3_gitstorm/zoo/record_video.py", "sb3_gitstorm/zoo/push_to_hub.py"} <= names
    assert {f"sb3_gitstorm/hyperparams/{algo}.yml" for algo in ("gitstorm", "ppo", "sac", "dqn")} <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    version = next(name for name in names if name.endswith(".dist-info/METADATA")).split("-")[1].split(".dist")[0]
    assert version == sb3_gitstorm.__version__

    # The dependencies come from this environment (--system-site-packages, --no-deps): nothing is downloaded.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # the checkout stays off sys.path
    result = subprocess.run([python, "-c", QUICK_START], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    steps, conf_file = result.stdout.split()
    assert int(steps) == 64
    assert conf_file.startswith(str(venv)) and conf_file.endswith("sb3_gitstorm/hyperparams/gitstorm.yml")


def test_public_modules_export_what_they_define() -> None:
    """Each ``__all__`` names only what its module has and every public class and function it defines (the API
    pages document ``__all__``), and the top-level one the README's imports."""
    modules = ["", "policies", "save_util", "buffers", "config", "dreams", "world_model_metrics", "envs", "priors"]
    modules += ["zoo", "zoo.train", "comparison.sweep_config", "comparison.report", "comparison.runner", "comparison.sweep"]
    for name in modules:
        module = importlib.import_module(f"sb3_gitstorm.{name}".rstrip("."))
        missing = [attribute for attribute in module.__all__ if not hasattr(module, attribute)]
        assert not missing and len(set(module.__all__)) == len(module.__all__), (name, missing)
        defined = [
            attribute
            for attribute, value in vars(module).items()
            if not attribute.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__
        ]
        assert set(defined) <= set(module.__all__), (name, sorted(set(defined) - set(module.__all__)))
    assert {"GITSTORM", "MlpPolicy", "CnnPolicy", "ModelConfig", "__version__"} <= set(sb3_gitstorm.__all__)


def test_citation_file_has_the_package_version() -> None:
    """CONTRIBUTING.md's release step bumps both: a release that forgets CITATION.cff fails here."""
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == sb3_gitstorm.__version__
    assert citation["preferred-citation"]["identifiers"][0]["value"] == "arXiv:2410.07836"  # GIT-STORM
