"""The mouth sharpness a *perfect* renderer could reach at a crop size (issue 13): real frames
cut to the face crop at S x S, pasted back into themselves, and scored as `jaxtalk eval` scores
a generated video (mouth-box Laplacian variance and CPBD, pasted / original).

    python scripts/sharpness_ceiling.py VIDEO [--config cpu] [--holdout 0.2] [--every 5]
                                        [--sizes 64 128 192 256]
                                        [--set data.crop_scale=1.4]

The face box (data.crop_scale x the median face box) and the mouth box come from the video's
own landmarks, as in `jaxtalk eval`; frames are the last `--holdout` of the clip (every
`--every`-th). The crop is cut with `jaxtalk.face.crop.crop_frame` and warped back with
`jaxtalk.synthesis.paste.crop_to_frame`, bilinearly (what paste did before 2026-11-26) and
bicubically (what it does now), over the whole crop. A generated video at crop size S cannot be
expected to beat these ratios: they are the resampling's loss alone, before any renderer blur.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from jaxtalk.config import load_config
from jaxtalk.face.cache import video_track
from jaxtalk.face.crop import config_crop_box, crop_frame
from jaxtalk.io.video import read_frames
from jaxtalk.metrics.cpbd import cpbd
from jaxtalk.metrics.sharpness import box_pixels, laplacian_variance, mouth_box
from jaxtalk.synthesis.paste import crop_to_frame

INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("video")
  ap.add_argument("--config", default="cpu")
  ap.add_argument("--holdout", type=float, default=0.2)
  ap.add_argument("--every", type=int, default=5)
  ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 192, 256])
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override, e.g. --set data.crop_scale=1.4")  # fmt: skip
  args = ap.parse_args()
  cfg = load_config(args.config, args.set)
  track = video_track(args.video, cfg.data.landmark_backend, cfg.track)
  n = track.num_frames
  first = n - int(np.ceil(args.holdout * n)) if args.holdout > 0 else 0
  face = config_crop_box(track.boxes_t4, track.found_t, cfg.data)
  mouth = mouth_box(track.landmarks_tn2[first:])
  frames = [
    f for t, f in enumerate(read_frames(args.video)) if t >= first and (t - first) % args.every == 0
  ]
  h, w = frames[0].shape[:2]
  print(
    f"{args.video}: {len(frames)} frames of {first}-{n - 1}, {w}x{h}; face box {face.side} px"
    f" (crop_scale {cfg.data.crop_scale}), mouth box {mouth.side} px"
  )
  ref_lap = np.mean([laplacian_variance(box_pixels(f, mouth)) for f in frames])
  ref_cpbd = np.mean([cpbd(box_pixels(f, mouth)) for f in frames])
  print("| crop S | upsampling | mouth Laplacian-variance ratio | mouth CPBD ratio |")
  print("|---|---|---|---|")
  for size in args.sizes:
    m = crop_to_frame(np.array([face.x0, face.y0, face.side], np.float64), size)
    for name, flag in INTERPOLATIONS.items():
      lap, cp = [], []
      for f in frames:
        back = cv2.warpAffine(crop_frame(f, face, size), m, (w, h), flags=flag,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        lap.append(laplacian_variance(box_pixels(back, mouth)))
        cp.append(cpbd(box_pixels(back, mouth)))
      print(f"| {size} | {name} | {np.mean(lap) / ref_lap:.3f} | {np.mean(cp) / ref_cpbd:.3f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
