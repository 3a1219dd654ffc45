"""Measures the background track filter (jaxtalk/face/track_filter.py) on real clips.

For each clip: dlib landmarks (the landmark cache), one stable crop box, the person's landmark3d
model learned from the clip, the per-frame fit (expression from raw landmarks). Then, for each
filter strength sigma (frames):

  pose_msi_lip / pose_msi_jaw  MSI (StableFace Eq. 2-4) of the landmarks the shape render is
      drawn with, project(expression_raw, pose_filtered): the jitter the pose adds to the
      renderer's input. Higher is more stable.
  aperture_corr / aperture_ratio  inner-lip opening (|p62 - p66| / mouth width) of those
      projected landmarks against the raw detected landmarks' over time: Pearson correlation
      and std ratio. ~1 means the mouth articulation is untouched.
  mask_px  mean number of mask pixels that change from one frame to the next (mask from the
      filtered landmarks, crop of 256 px): the mask's own jitter plus real jaw motion.
  chin_out_px  mean of how far the raw chin (point 8) lies below the filtered mask polygon's
      lowest point (0 when inside): how much real jaw motion the smoothed mask fails to cover.

Run:  python scripts/track_filter_measure.py [--frames 500] CLIP...
(e.g. ../shared/data/real/grid/*.mpg ../shared/data/real/long/*.mp4)
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from jaxtalk.config import load_config
from jaxtalk.face import landmark3d
from jaxtalk.face.cache import video_track
from jaxtalk.face.crop import config_crop_box, to_crop_coords
from jaxtalk.face.track_filter import TrackFilter, filter_pose, track_masks
from jaxtalk.metrics.msi import msi

SIZE = 256
SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def aperture(lms_tn2: np.ndarray) -> np.ndarray:
  width = np.linalg.norm(lms_tn2[:, 54] - lms_tn2[:, 48], axis=1)
  return np.linalg.norm(lms_tn2[:, 66] - lms_tn2[:, 62], axis=1) / width


def measure(path: pathlib.Path, frames: int) -> list[dict]:
  cfg = load_config("grid", [])
  track = video_track(path, "dlib", cfg.track, fps=25.0)
  n = min(frames, track.num_frames)
  found = track.found_t[:n]
  box = config_crop_box(track.boxes_t4[:n], found, cfg.data)
  lms = to_crop_coords(track.landmarks_tn2[:n], box, SIZE)
  idx = np.flatnonzero(found)
  lms = lms[idx[np.abs(np.arange(n)[:, None] - idx[None]).argmin(1)]]  # fill gaps (few)
  model = landmark3d.learn_face_model([lms], SIZE, 16)
  fit = landmark3d.fit_frames(model, lms, SIZE)
  raw_ap = aperture(lms)
  rows = []
  for sigma in SIGMAS:
    flt = TrackFilter("gaussian" if sigma else "none", sigma, sigma)
    pose = filter_pose(fit.pose_t6, flt)
    proj = np.stack([model.project(e, p, SIZE) for e, p in zip(fit.expression_te, pose)])
    m = msi(proj)
    ap = aperture(proj)
    polys, masks = track_masks(lms, SIZE, flt)
    mask_px = float(np.mean(np.sum(masks[1:] != masks[:-1], axis=(1, 2))))
    chin_out = float(np.mean(np.maximum(0.0, lms[:, 8, 1] - polys[:, :, 1].max(axis=1))))
    rows.append({
      "clip": path.stem, "frames": n, "sigma": sigma, "pose_msi_lip": m["lip"],
      "pose_msi_jaw": m["jaw"], "aperture_corr": float(np.corrcoef(ap, raw_ap)[0, 1]),
      "aperture_ratio": float(ap.std() / raw_ap.std()), "mask_px": mask_px,
      "chin_out_px": chin_out,
    })  # fmt: skip
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("clips", nargs="+")
  parser.add_argument("--frames", type=int, default=500, help="first frames of each clip")
  args = parser.parse_args()
  keys = ("pose_msi_lip", "pose_msi_jaw", "aperture_corr", "aperture_ratio", "mask_px",
          "chin_out_px")  # fmt: skip
  print("| clip | frames | sigma | " + " | ".join(keys) + " |")
  print("|---" * (3 + len(keys)) + "|")
  for clip in args.clips:
    for r in measure(pathlib.Path(clip), args.frames):
      vals = " | ".join(f"{r[k]:.3f}" for k in keys)
      print(f"| {r['clip']} | {r['frames']} | {r['sigma']:g} | {vals} |", flush=True)


if __name__ == "__main__":
  main()
