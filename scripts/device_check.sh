#!/usr/bin/env bash
# Issue 10, item 4: every accelerator figure in one call, from a bare machine (< 8 min on one
# H100): installs the CUDA JAX it needs, then prints
#   renderer frames/s at 256² bf16 for batch 1, 8, 32 (renderer alone),
#   the whole inference pipeline from audio to mp4 (jaxtalk bench infer, bf16, paper config),
#   the paper-config train step time and its MFU, peak device memory,
# and runs the sharded-step and bf16 tests on the device.
#
#   scripts/device_check.sh [--cpu] [--wheels DIR] [--clip VIDEO]
#
# --cpu      small smoke run on CPU of every Python step (tiny config, 64², batch 1 and 2),
#            with the current environment (no install): checks the script is not dead on arrival.
# --wheels   folder of wheels (jax, jaxlib, the CUDA plugin, the project's dependencies) for a
#            machine without a package index: installs with --no-index --find-links DIR.
# --clip     a background clip with a face for the whole-pipeline figure (default: a GRID clip
#            from ../shared or shared/ if present; skipped with a message if there is none).
set -euo pipefail
cd "$(dirname "$0")/.."
CPU=0; WHEELS=""; CLIP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    --clip) CLIP="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START )) s] $*"; }

if [ "$CPU" = 1 ]; then
  PY=${PYTHON:-python}
  export JAX_PLATFORMS=cpu
else
  stamp "installing the CUDA build of JAX and the project into .venv-device"
  python3 -m venv .venv-device
  PY=.venv-device/bin/python
  # the JAX this project is developed and tested with; JAX_CUDA=cuda12 for older drivers
  JAXV=${JAXV:-0.10.2}
  PIP=("$PY" -m pip install -q)
  [ -n "$WHEELS" ] && PIP+=(--no-index --find-links "$WHEELS")
  "${PIP[@]}" -e ".[dev]" || "${PIP[@]}" -e .
  "${PIP[@]}" "jax[${JAX_CUDA:-cuda13}]==$JAXV" pytest
  "$PY" -c "import jax; d = jax.devices(); print(d); assert d[0].platform == 'gpu', d"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
fi

stamp "renderer frames/s, train step and MFU, peak memory"
if [ "$CPU" = 1 ]; then
  "$PY" scripts/device_check.py --cpu --steps 1
else
  "$PY" scripts/device_check.py
fi

if [ -z "$CLIP" ]; then
  for c in shared/data/real/grid/bbaf2n.mpg ../shared/data/real/grid/bbaf2n.mpg; do
    [ -f "$c" ] && CLIP="$c" && break
  done
fi
if [ -n "$CLIP" ]; then
  stamp "whole pipeline (audio -> mp4) on $CLIP"
  if [ "$CPU" = 1 ]; then
    "$PY" -m jaxtalk.cli bench infer "$CLIP" --configs tiny --seconds --speed-seconds 1
  else
    "$PY" -m jaxtalk.cli bench infer "$CLIP" --configs grid --seconds --speed-seconds 8 \
      --set model.dtype=bfloat16
  fi
else
  stamp "whole pipeline skipped: no clip (pass --clip VIDEO)"
fi

stamp "sharded-step and bf16 tests"
"$PY" -m pytest -q -x tests/test_train_parallel.py tests/test_models_sharding.py \
  "tests/test_models.py::test_bf16_close_to_f32_with_f32_params" tests/test_fast_layers.py
stamp "done"
