"""`jaxtalk landmarks VIDEO -o out.npz [--overlay out.mp4]`."""

from __future__ import annotations

import argparse
import pathlib

import cv2
import numpy as np

from jaxtalk.commands.common import add_landmark_arguments, config_and_backend, track_for
from jaxtalk.io.video import iter_frames, probe_video, write_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("video")
  parser.add_argument("-o", "--output", required=True, help="output .npz")
  parser.add_argument("--overlay", default=None, help="also write the video with the points drawn")
  add_landmark_arguments(parser)


def draw_points(frame_hwc: np.ndarray, points_n2: np.ndarray, box=None) -> np.ndarray:
  out = np.ascontiguousarray(frame_hwc.copy())
  if box is not None and np.isfinite(box).all():
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x0, y0), (x1, y1), (255, 200, 0), 1)
  for x, y in points_n2:
    if np.isfinite(x) and np.isfinite(y):
      cv2.circle(out, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1, cv2.LINE_AA)
  return out


def run(args: argparse.Namespace) -> int:
  config, backend = config_and_backend(args)
  track = track_for(args.video, args, config, backend, progress=True)
  out = pathlib.Path(args.output)
  out.parent.mkdir(parents=True, exist_ok=True)
  fps = probe_video(args.video).fps
  np.savez(out, fps=np.float32(fps), **track.to_npz_dict())
  missing = track.missing_frames()
  print(f"{args.video}: {track.num_frames} frames, {missing.size} without a face -> {out}")
  if args.overlay:
    frames = (
      draw_points(f, track.landmarks_tn2[i], track.boxes_t4[i])
      for i, f in enumerate(iter_frames(args.video))
    )
    write_video(args.overlay, frames, fps)
    print(f"overlay -> {args.overlay}")
  return 0
