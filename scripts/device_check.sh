#!/usr/bin/env bash
# Issue 10, item 4: every accelerator figure in one call on a lent GPU machine that reaches no
# package registry (its python3 already has CUDA JAX, flax, optax, orbax, numpy, scipy, opencv):
#   1. what is there (GPU, driver, package versions);
#   2. renderer frames/s at 256² bf16 for batch 1, 8, 32 (renderer alone), the paper-config
#      train step time and its MFU at B = 16, peak device memory, and a profile of the largest
#      train batch: device time by kernel kind, the top kernels, the trace in $OUT
#      (scripts/device_check.py; --timing-args "--train-batches 16,32" for more batches,
#      "--conv-frames 64" for the conv study (the convs the H200's profiles found slow for their
#      FLOPs: the 3- and 6-channel ones and the UpConv 2x2s' weight gradients, cuDNN's against
#      the library's study forms), "--step-variants default,concat+upstack,blocks4" for the
#      train step once per form: reflect pads by jnp.pad's concatenates (concat) or as sums of
#      zero pads (padsum, the GPU's default: models/layers.reflect_pad_form), the UpConv's
#      phases stacked (upstack) or interleaved by such sums (uppadsum, the GPU's default:
#      models/layers.interleave_form), the narrow convs on 4 x 4 pixel blocks (blocks4: models/conv.
#      block_factor), the UpConv weight gradients by cuDNN (xla) or by matrix products
#      (taps, the GPU's default: models/conv.gpu_weight_grad), reflect pads folded into the
#      convs (fold: models/layers.reflect_mode), channels padded to 8 (ch8: models/conv.
#      channel_multiple); tokens joined by '+');
#   3. the whole inference pipeline, audio -> mp4 (jaxtalk bench infer, grid config, bf16), and
#      its host-side work alone (--host-only: the renderer stubbed), each with x264's default
#      preset and with veryfast;
#   4. the bf16 tests on the GPU, and the sharded-step tests (8 fake CPU devices, on half of
#      that machine's 16 cores under its JAX, in the background while stage 2 runs).
# Each stage has its own time limit and a failure does not stop the next; the log is tee'd to
# $OUT/device_check.log when $OUT is set. Prepare once here: scripts/device_prepare.sh (wheels
# in .whl/, the clip and its landmark track in .devcache/), then call the device with
# carry [".whl", ".devcache"] and the command `bash scripts/device_check.sh`.
#
#   scripts/device_check.sh [--cpu] [--clip VIDEO] [--only STAGES] [--timing-args "ARGS"]
#                           [--timing-limit SECONDS] [--cold]
#
# --cpu   a small smoke run of every stage on this machine's CPU with its own environment
#         (tiny config, 64², batch 1 and 2): checks the script is not dead on arrival.
# --only STAGES  these stages, in this order (comma-separated; default
#         timing,pipeline,host,tests): for a second call within a short device budget.
# --timing-args "ARGS"  passed on to scripts/device_check.py, split on spaces (e.g.
#         "--batches= --train-batches 32": no renderer timings, the train step at B = 32).
# --timing-limit SECONDS  the timing stage's limit (default 420; 600 with --cpu). Each step
#         variant compiled in 60-110 s without carried autotuning (fourth session); each
#         variant's figures are printed as it ends, so a stage cut short keeps the ones before.
# --cold  leave out the carried autotuning results (below): compile times from scratch.
#
# XLA's GPU autotuning (the cuDNN algorithm and Triton tiling of every conv and fusion, tried on
# the device) is much of a compile: the paper-config train step at B = 32 compiled in 102 s with
# three convs fewer for cuDNN, over 200 s with all (98 s at B = 16), out of ~15 device minutes
# a session (docs/benchmarks.md, third GPU session). Its results are kept in JAX's
# compilation cache on the device (/tmp, lost with the machine), and come back in
# $OUT/autotune.tar.gz; copied to .devcache/autotune.tar.gz here, they travel with the next
# call and seed that cache. A result is keyed by the fusion's HLO and the device, so a changed
# program or another card is simply autotuned again. Executables are cached on the device only
# (too large to carry).
set -uo pipefail
cd "$(dirname "$0")/.."
CPU=0
CLIP=""
ONLY=timing,pipeline,host,tests
TIMING_ARGS=""
TIMING_LIMIT=""
COLD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --clip) CLIP="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --timing-args) TIMING_ARGS="$2"; shift ;;
    --timing-limit) TIMING_LIMIT="$2"; shift ;;
    --cold) COLD=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
LOG=${OUT:-/tmp}/device_check.log
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START )) s] $*"; }
FAILED=()
stage() {  # stage NAME SECONDS CMD...: run with a time limit, record a failure, go on
  local name=$1 limit=$2; shift 2
  stamp "== $name (limit ${limit} s)"
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || { FAILED+=("$name (rc $rc)"); stamp "!! $name failed, rc $rc"; }
  save_autotune  # after every stage: a call cut short still returns what was tuned
}
export PYTHONUNBUFFERED=1
export JAXTALK_CACHE=$PWD/.devcache
if [ "$CPU" = 1 ]; then
  PY=${PYTHON:-python}
  export JAX_PLATFORMS=cpu
else
  PY=python3
  if [ -d .whl ]; then
    stamp "installing the carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  fi
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv || true
fi
AUTOTUNE=""
if [ "$CPU" = 0 ]; then
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxtalk-xla
  export JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES=xla_gpu_per_fusion_autotune_cache_dir
  AUTOTUNE=$JAX_COMPILATION_CACHE_DIR/xla_gpu_per_fusion_autotune_cache_dir
  mkdir -p "$AUTOTUNE"
  if [ "$COLD" = 0 ] && [ -f .devcache/autotune.tar.gz ]; then
    tar -xzf .devcache/autotune.tar.gz -C "$AUTOTUNE"
    stamp "seeded XLA's autotuning cache with $(find "$AUTOTUNE" -type f | wc -l) carried results"
  fi
fi
save_autotune() {  # the autotuning results back in $OUT, for .devcache/autotune.tar.gz next time
  [ -n "$AUTOTUNE" ] && [ -n "${OUT:-}" ] && [ -d "$AUTOTUNE" ] || return 0
  # one archive: the device tool returns at most 8 files from $OUT, and a train step leaves
  # ~1000 results (one per fusion), so a folder of them came back 8 files short of useful
  tar -czf "$OUT/autotune.tar.gz" -C "$AUTOTUNE" .
  stamp "autotuning results in \$OUT/autotune.tar.gz: $(find "$AUTOTUNE" -type f | wc -l) files, $(du -h "$OUT/autotune.tar.gz" | cut -f1)"
}
[ -n "$CLIP" ] || CLIP=$(ls .devcache/clip/* 2>/dev/null | head -1)
[ -n "$CLIP" ] || CLIP=jaxtalk/assets/obama_20s.mp4

stage "environment" 60 "$PY" -c "
import jax, flax, optax, orbax.checkpoint as oc, numpy, grain, av, librosa, ml_collections
print('python', __import__('sys').version.split()[0], '| jax', jax.__version__, '| flax',
      flax.__version__, '| optax', optax.__version__, '| numpy', numpy.__version__)
print(jax.devices())"

# the sharded-step tests need no GPU (8 fake CPU devices under this machine's JAX): they run in
# the background, on the upper half of the cores where taskset exists, while the GPU is timed,
# and are joined before the host's work is timed
BG_PID=""
BG_LIMIT=240
[ "$CPU" = 0 ] || BG_LIMIT=420
BG_LOG=${OUT:-/tmp}/sharded_tests.log
start_background() {
  local pin=()
  if [ "$CPU" = 0 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 8 ]; then
    pin=(taskset -c "$(( $(nproc) / 2 ))-$(( $(nproc) - 1 ))")
  fi
  (
    echo "[background, started at $(( $(date +%s) - START )) s] == sharded-step tests (8 fake CPU devices)"
    # BG_LIMIT: 80 s on the GPU machine's 8 pinned cores; --cpu shares 2 cores with the
    # timing stage (208 s there, 2026-11-27)
    timeout "$BG_LIMIT" env JAX_PLATFORMS=cpu "${pin[@]}" "$PY" -m pytest -q -x -n 2 -p no:cacheprovider \
      tests/test_train_parallel.py tests/test_models_sharding.py
    echo $? > "$BG_LOG.rc"
    echo "[background, ended at $(( $(date +%s) - START )) s]"
  ) > "$BG_LOG" 2>&1 &
  BG_PID=$!
}
join_background() {  # the CPU tests' log, once they are done
  [ -n "$BG_PID" ] || return 0
  wait "$BG_PID"
  BG_PID=""
  cat "$BG_LOG"
  local rc
  rc=$(cat "$BG_LOG.rc" 2>/dev/null || echo 1)
  [ "$rc" = 0 ] || { FAILED+=("sharded-step tests (rc $rc)"); stamp "!! sharded-step tests failed"; }
}

if [ "$CPU" = 1 ]; then CONFIG=tiny; SECONDS_=1; else CONFIG=grid; SECONDS_=12; fi
BF16=()
[ "$CPU" = 1 ] || BF16=(--set model.dtype=bfloat16)
case ",$ONLY," in *,tests,*) start_background ;; esac
IFS=, read -r -a STAGES <<< "$ONLY"
for s in "${STAGES[@]}"; do
  case "$s" in
    timing)
      if [ "$CPU" = 1 ]; then
        # shellcheck disable=SC2086
        stage "renderer, train step, memory" "${TIMING_LIMIT:-600}" "$PY" scripts/device_check.py --cpu --steps 2 $TIMING_ARGS
      else
        # shellcheck disable=SC2086
        stage "renderer, train step, memory" "${TIMING_LIMIT:-420}" "$PY" scripts/device_check.py $TIMING_ARGS
      fi ;;
    pipeline)
      join_background
      stage "whole pipeline on $CLIP" 150 "$PY" -m jaxtalk.cli bench infer "$CLIP" \
        --configs "$CONFIG" --seconds --speed-seconds "$SECONDS_" "${BF16[@]}"
      # the same with x264's veryfast preset (the host bounds it: see the host stages); its
      # executables come from the compilation cache the run above filled
      stage "whole pipeline, x264 veryfast" 120 "$PY" -m jaxtalk.cli bench infer "$CLIP" \
        --configs "$CONFIG" --seconds --speed-seconds "$SECONDS_" "${BF16[@]}" \
        --set infer.x264_preset=veryfast ;;
    host)
      join_background
      stage "the host's share of it (renderer stubbed)" 90 "$PY" -m jaxtalk.cli bench infer "$CLIP" \
        --configs "$CONFIG" --seconds --speed-seconds "$SECONDS_" --host-only
      # the same with x264's veryfast preset: how much of it the encoder bounds (on the 2-core
      # VM: 43 -> 60-64 frames/s, docs/benchmarks.md)
      stage "the host's share, x264 veryfast" 90 "$PY" -m jaxtalk.cli bench infer "$CLIP" \
        --configs "$CONFIG" --seconds --speed-seconds "$SECONDS_" --host-only \
        --set infer.x264_preset=veryfast ;;
    tests)
      # f32 references in these tests are exact: no TF32 for f32 matmuls and convolutions on the GPU.
      # 240 s: 43 tests took 146 s in the fourth session; the reflect-pad-by-sums and
      # pixel-block tests (18) add small compiles.
      # On the GPU, XLA's own backend level (3): tests/conftest.py lowers it to 0 unless set.
      LEVEL=()
      [ "$CPU" = 1 ] || LEVEL=("XLA_FLAGS=${XLA_FLAGS:-} --xla_backend_optimization_level=3")
      stage "bf16 tests on the default device" 240 env JAX_DEFAULT_MATMUL_PRECISION=highest \
        "${LEVEL[@]}" "$PY" -m pytest -q -x -p no:cacheprovider \
        "tests/test_models.py::test_bf16_close_to_f32_with_f32_params" tests/test_fast_layers.py \
        tests/test_attention.py tests/test_conv.py::test_weight_grad_by_taps_off_the_cpu \
        tests/test_conv.py::test_channels_padded_to_a_multiple_are_the_same_conv \
        tests/test_conv.py::test_narrow_convs_by_pixel_blocks_are_the_same_conv
      join_background ;;
    *) echo "unknown stage $s (timing, pipeline, host, tests)" >&2; exit 2 ;;
  esac
done

if [ ${#FAILED[@]} -eq 0 ]; then stamp "done: every stage passed"; exit 0; fi
stamp "done; failed: ${FAILED[*]}"
exit 1
