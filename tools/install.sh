#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root with the pinned OpenMMLab stack and flora_mm installed.
# Idempotent: a stamp file records the hash of the requirement files; nothing is redone while it matches.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
PY="$VENV/bin/python"
STAMP="$VENV/.flora_mm_stamp"
WANT=$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/install.sh" "$ROOT/tools/build_mmcv.sh" | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
START=$(date +%s)
[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q -r "$ROOT/requirements/torch.txt"
"$PY" -m pip install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
if ! "$PY" -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  bash "$ROOT/tools/build_mmcv.sh" "$PY"
fi
"$PY" -m pip install -q --no-deps --require-hashes -r "$ROOT/requirements/mmrotate.txt"
"$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c "import flora_mm, mmcv.ops, mmdet, mmseg, mmrotate, timm; print('[install] stack OK: mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__, 'mmrotate', mmrotate.__version__)"
echo "$WANT" > "$STAMP"
echo "[install] .venv ready in $(( $(date +%s) - START )) s"
