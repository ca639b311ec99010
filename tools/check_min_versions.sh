#!/usr/bin/env bash
# Installs the lowest versions that setup.cfg allows into a throwaway venv and runs the quick start and a few tests there.
#
#   bash tools/check_min_versions.sh            # install_requires: stable-baselines3, gymnasium, numpy, tensorboard
#   bash tools/check_min_versions.sh zoo,atari  # and the "zoo" and "atari" extras (the zoo's tests use ALE ids)
#
# The venv sees this machine's packages (--system-site-packages) and pip installs on top of them what the pins need,
# so nothing installed here changes. torch is the exception: its PyPI wheels for Linux are multi-GB CUDA builds, so the
# script keeps the torch it finds (print below) instead of installing the declared minimum.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m venv --system-site-packages "$work/venv"
py="$work/venv/bin/python"

# name==the lowest release the lower bound allows, for every requirement of install_requires (and the extras asked
# for), torch left out.
pins=$(python - "$extras" <<'PY'
import configparser
import re
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.version import Version

config = configparser.ConfigParser()
config.read("setup.cfg")
lines = config["options"]["install_requires"].splitlines()
for extra in filter(None, sys.argv[1].split(",")):
    lines += config["options.extras_require"][extra].splitlines()
for line in lines:
    line = line.split("#")[0].strip()
    if not line:
        continue
    requirement = Requirement(line)
    if requirement.name == "torch" or not any(spec.operator == ">=" for spec in requirement.specifier):
        continue
    # ">=4.8" allows 4.8.0.74 but no release named 4.8: ask the index for the releases and take the lowest allowed one.
    index = subprocess.run([sys.executable, "-m", "pip", "index", "versions", requirement.name], capture_output=True, text=True)
    releases = re.search(r"Available versions: (.*)", index.stdout).group(1).split(", ")
    lowest = min((Version(release) for release in releases if Version(release) in requirement.specifier), default=None)
    if lowest is None:
        sys.exit(f"no release of {requirement.name} satisfies {requirement.specifier}")
    print(f"{requirement.name}=={lowest}")
PY
)
echo "Installing the minimum versions: $pins"
"$py" -m pip install --quiet $pins
"$py" -m pip install --quiet --no-deps .
"$py" -m pip check || true  # reported, not fatal: conflicts with unrelated packages of this machine can show up here
"$py" - <<'PY'
from importlib.metadata import version
for name in ("stable-baselines3", "gymnasium", "torch", "numpy", "rl_zoo3", "sb3-contrib"):
    try:
        print(f"{name} {version(name)}")
    except Exception:
        pass
PY
# The quick start from a folder where the checkout is not importable: the venv's installed copy runs.
(cd "$work" && "$py" -c '
import sb3_gitstorm
from sb3_gitstorm import GITSTORM
print("sb3_gitstorm from", sb3_gitstorm.__file__)
model = GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="tiny"), learning_starts=32, batch_size=4, batch_length=8,
                 imagine_batch_size=8, imagine_context_length=4, imagine_horizon=4, seed=0)
model.learn(96)
print("quick start: learned", model.num_timesteps, "steps")
')
tests=(tests/test_gitstorm.py tests/test_conformance.py)
if [[ ",$extras," == *",atari,"* ]]; then
    tests+=(tests/test_envs.py::test_atari_protocols tests/test_envs.py::test_atari_monitor_reports_whole_games)
fi
if [[ ",$extras," == *",zoo,"* ]]; then
    tests+=(tests/test_zoo.py)
    # It imports the benchmark harness, whose scipy (this machine's, through rliable) may need a newer numpy than the pin.
    tests+=(--deselect tests/test_zoo.py::test_import_leaves_experiment_manager_as_it_was)
fi
OMP_NUM_THREADS=1 "$py" -m pytest -q -p no:cacheprovider "${tests[@]}"
