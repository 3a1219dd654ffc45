#!/usr/bin/env bash
# Issue 11, item 4: does whole-clip context help stability? Re-synthesises the held-out part of a
# `jaxtalk bench quality` run twice with the same trained models and the same audio2expression
# output: in W-frame windows overlapping by O (the renderer sees W frames at a time), and as one
# sequence (every frame sees the whole held-out part). Scores both against the real held-out
# part, with the frame-to-frame jumps at the W,O window seams (jaxtalk eval --seams).
#
#   scripts/context_vs_windows.sh RUN_DIR [W] [O]     # RUN_DIR: a bench quality -o folder
set -euo pipefail
run=${1:?usage: scripts/context_vs_windows.sh RUN_DIR [W] [O]}
w=${2:-12}
o=${3:-4}
cfg=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['config'])" "$run/quality.json")
size=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['image_size'])" "$run/quality.json")
n=$(python -c "import json,sys; s=json.load(open(sys.argv[1]))['split']['heldout_frames']; print(s[1]-s[0])" "$run/quality.json")
out="$run/context"
mkdir -p "$out"
common=(--audio "$run/real.mp4" --video "$run/real.mp4" --checkpoints "$run/model"
        --config "$cfg" --set "data.image_size=$size" --set data.holdout=0.2)
/usr/bin/time -f "windows of $w: %e s, %M KB" \
  jaxtalk infer "${common[@]}" -o "$out/windows_$w.mp4" \
  --set "infer.window=$w" --set "infer.overlap=$o"
/usr/bin/time -f "one sequence of $n: %e s, %M KB" \
  jaxtalk infer "${common[@]}" -o "$out/whole.mp4" \
  --set "infer.window=$n" --set infer.overlap=0 --set infer.batch_windows=1
jaxtalk eval --pred "$out/windows_$w.mp4" "$out/whole.mp4" --ref "$run/real.mp4" --align trim \
  --config "$cfg" --seams "$w,$o" --json "$out/eval.json" --markdown "$out/eval.md"
python - "$out/eval.json" <<'PY'
import json, sys
keys = ["msi_lip_ratio", "msi_jaw_ratio", "aperture_ratio", "aperture_corr", "sync_offset_frames",
        "lip_lmd", "mouth_seam_jump_max", "mouth_other_jump_max", "lip_seam_jump_max",
        "lip_other_jump_max", "ref_mouth_seam_jump_max", "ref_lip_seam_jump_max"]
rows = json.load(open(sys.argv[1]))["videos"]
print("| video | " + " | ".join(keys) + " |")
for r in rows:
  r["lip_lmd"] = r.get("lmd")
  cells = [f"{r.get(k):.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys]
  print(f"| {r['pred'].split('/')[-1]} | " + " | ".join(cells) + " |")
PY
