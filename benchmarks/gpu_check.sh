#!/usr/bin/env bash
# benchmarks/gpu_check.py on a GPU machine that cannot reach a package registry.
#
#   bash benchmarks/gpu_check.sh --download   here, with the internet: the wheels the GPU image lacks, into .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh ARGS...      there: installs .whl/ (into $GPU_CHECK_SITE), then python3 benchmarks/gpu_check.py ARGS...
#
# The lent machine's image has torch, tensorboard, opencv, pytest, pandas and matplotlib, but not stable-baselines3,
# gymnasium, ale-py (Atari, ROMs included) or moviepy<2 (TensorBoard videos). The device tool carries .whl/:
#   run(command="set -o pipefail; bash benchmarks/gpu_check.sh --out $OUT 2>&1 | tee $OUT/gpu_check.log", carry=[".whl"], timeout_s=450)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}  # the GPU image's python3
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}  # where the wheels are installed

if [[ "${1:-}" == "--download" ]]; then
    mkdir -p "$WHEELS"
    platforms=()
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        platforms+=(--platform "$tag")
    done
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
        "${platforms[@]}" -d "$WHEELS" stable-baselines3==2.9.2 gymnasium==1.4.0 farama-notifications==0.0.6 \
        ale-py==0.12.1 decorator==4.4.2 proglog==0.1.12
    # moviepy 1.0.3 (the last with moviepy.editor, which torch's add_video imports) is an sdist: a pure-Python wheel
    python3 -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" moviepy==1.0.3
    ls -l "$WHEELS"
    exit 0
fi

export PYTHONUNBUFFERED=1 FFMPEG_BINARY=auto-detect  # moviepy 1.0.3 asks imageio for ffmpeg at import otherwise (GIFs need none)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    # ale-py alone: a wheel for another python3 leaves the rest installed (the Atari part then says it is missing)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        $(ls "$WHEELS"/*.whl | grep -v /ale_py-)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/ale_py-*.whl || echo "gpu_check.sh: the carried ale-py did not install (another python3?): the Atari part needs one" >&2
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'
exec python3 benchmarks/gpu_check.py "$@"
