#!/usr/bin/env bash
# Build (once) and install mmcv with compiled ops into the given virtual environment.
#
# mmcv publishes no wheels for torch 2.14, so it is built from its PyPI source distribution.
# Two upstream obstacles are worked around in a temporary copy of the sdist (mmcv's source is never committed):
#   * torch >= 2.10 headers need C++20, but mmcv 2.1.0's setup.py forces -std=c++14 / -std=c++17;
#   * mmcv's setup.py imports pkg_resources, so the build uses setuptools < 70 (requirements/build.txt).
# The wheel is cached outside the repository, keyed by mmcv, torch, Python and CPU/CUDA flavour, and reused.
# CUDA ops are built when torch sees a GPU and nvcc is available (set FORCE_CUDA=1 to force them).
#
# Usage: tools/build_mmcv.sh VENV_PYTHON
set -euo pipefail
PY=${1:?usage: build_mmcv.sh VENV_PYTHON}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
CACHE=${FLORA_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flora_mm}

read -r TORCH_VER PY_TAG CUDA_OK < <("$PY" - <<'PYEOF'
import sys, torch
print(torch.__version__.replace('+', '_'), f'cp{sys.version_info[0]}{sys.version_info[1]}',
      int(torch.cuda.is_available()))
PYEOF
)
FLAVOUR=cpu
if [ "${FORCE_CUDA:-0}" = 1 ] || { [ "$CUDA_OK" = 1 ] && command -v nvcc >/dev/null; }; then
  FLAVOUR=cuda; export FORCE_CUDA=1
fi
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_VER}_${PY_TAG}_${FLAVOUR}"
WHEEL_DIR="$CACHE/wheels/$KEY"

if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
  echo "[build_mmcv] no cached wheel for $KEY: building mmcv $MMCV_VERSION with ops (~25 min on 2 cores)"
  "$PY" -m pip install -q -r "$ROOT/requirements/build.txt"
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$TMP"
  tar -xzf "$TMP"/mmcv-"$MMCV_VERSION".tar.gz -C "$TMP"
  SRC="$TMP/mmcv-$MMCV_VERSION"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "[build_mmcv] could not set -std=c++20 in setup.py" >&2; exit 1; }
  mkdir -p "$TMP/out"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" -m pip wheel --no-deps --no-build-isolation -w "$TMP/out" "$SRC"
  mkdir -p "$WHEEL_DIR"
  mv "$TMP"/out/mmcv-*.whl "$WHEEL_DIR"/
fi
echo "[build_mmcv] installing $(ls "$WHEEL_DIR"/mmcv-*.whl)"
"$PY" -m pip install -q --no-deps "$WHEEL_DIR"/mmcv-*.whl
