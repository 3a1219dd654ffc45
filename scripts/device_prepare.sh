#!/usr/bin/env bash
# Run HERE (a machine with pip access) before lending a GPU machine that reaches no registry:
# gathers what scripts/device_check.sh needs there and the device's image lacks.
#
#   scripts/device_prepare.sh [CLIP]
#
# .whl/       wheels for Python 3.12 (the device's python3) of the project's dependencies that the
#             device image does not ship (its list: jax 0.11.2 CUDA 13, flax, optax, orbax, numpy,
#             scipy, opencv-headless, ...): grain, array_record, ml_collections, av, librosa and
#             its audio readers. ~41 MB of the 64 MiB a device call may carry. dlib and the 100 MB
#             face-recognition-models are NOT carried: the clip's landmark track is, instead.
# .devcache/  the landmark track of CLIP (default: the demo's embedded Obama clip) under the
#             grid config's tracker settings, so the whole-pipeline figure on the device hits the
#             cache and needs no face detector there; and a copy of CLIP.
# Both folders are git-ignored (.git/info/exclude) and travel with `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIP=${1:-jaxtalk/assets/obama_20s.mp4}
PY=${PYTHON:-python}
for p in /.whl/ /.devcache/; do grep -qx "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done

# one version of each: exactly what this checkout is tested with
pins=()
for name in grain array_record ml_collections av librosa soundfile cffi pycparser soxr audioread \
            pooch decorator portpicker platformdirs; do
  v=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v" ] || { echo "device_prepare: $name is not installed here" >&2; exit 1; }
  pins+=("$name==$v")
done
plat=()
for m in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 \
         manylinux_2_34 manylinux_2_35; do plat+=(--platform "${m}_x86_64"); done
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d .whl "${pins[@]}"
du -sh .whl

mkdir -p .devcache/clip
cp "$CLIP" .devcache/clip/
JAXTALK_CACHE=$PWD/.devcache "$PY" - "$CLIP" <<'EOF'
import sys
from jaxtalk.config import load_config
from jaxtalk.face.cache import video_track
cfg = load_config("grid")
t = video_track(sys.argv[1], cfg.data.landmark_backend, cfg.track, fps=cfg.data.fps)
print(f"track of {sys.argv[1]}: {t.num_frames} frames cached in .devcache/landmarks")
EOF
du -sh .devcache
