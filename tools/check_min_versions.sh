#!/usr/bin/env bash
# Installs the lowest versions that setup.cfg allows into a throwaway venv and runs the quick start and a few tests there.
#
#   bash tools/check_min_versions.sh            # install_requires: stable-baselines3, gymnasium, numpy, tensorboard
#   bash tools/check_min_versions.sh zoo        # and the "zoo" extra: rl_zoo3, sb3-contrib, pyyaml, optuna
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

# name==lower bound for every requirement of install_requires (and the extras asked for), torch left out.
pins=$(python - "$extras" <<'PY'
import configparser, sys
from packaging.requirements import Requirement

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
    lowest = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if requirement.name != "torch" and lowest:
        print(f"{requirement.name}=={lowest[0]}")
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
if [[ ",$extras," == *",zoo,"* ]]; then
    tests+=(tests/test_zoo.py)
fi
OMP_NUM_THREADS=1 "$py" -m pytest -x -q -p no:cacheprovider "${tests[@]}"
