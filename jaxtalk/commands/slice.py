"""`jaxtalk slice VIDEO [VIDEO ...] -o slice.png [--x COL | --y ROW]`.

Positions are in the 256-pixel MSI crop of each video (the same face-relative place for every
video); the default is a column through the mouth centre of the first frames.
"""

from __future__ import annotations

import argparse
import pathlib

import cv2

from jaxtalk.commands.common import add_landmark_arguments, config_and_backend, track_for
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.cache import require_all_frames
from jaxtalk.io.video import iter_frames
from jaxtalk.metrics.msi import msi_crop_box, normalise_landmarks
from jaxtalk.metrics.slice import compose, mouth_centre, slice_image


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("videos", nargs="+", metavar="VIDEO")
  parser.add_argument("-o", "--output", required=True, help="output picture (.png)")
  where = parser.add_mutually_exclusive_group()
  where.add_argument("--x", type=int, default=None, help="crop column (0-255); default: mouth")
  where.add_argument("--y", type=int, default=None, help="crop row (0-255) instead of a column")
  parser.add_argument("--labels", nargs="*", default=None, help="labels (default: file names)")
  add_landmark_arguments(parser)


def video_slice(path: str, args: argparse.Namespace, config, backend: str):
  track = track_for(path, args, config, backend)
  require_all_frames(track, path)
  box = msi_crop_box(track.landmarks_tn2, config.msi.crop_frames, config.msi.mouth_ratio)
  size = int(config.msi.crop_size)
  x, y = args.x, args.y
  if x is None and y is None:
    centre = mouth_centre(
      normalise_landmarks(track.landmarks_tn2, box, size), config.msi.crop_frames
    )
    x = int(round(centre[0]))
  try:
    return slice_image(iter_frames(path), box, size=size, x=x, y=y)
  except ValueError as e:
    raise JaxtalkError(f"{path}: {e}") from e


def run(args: argparse.Namespace) -> int:
  config, backend = config_and_backend(args)
  labels = args.labels or [pathlib.Path(v).name for v in args.videos]
  if len(labels) != len(args.videos):
    raise JaxtalkError(f"{len(labels)} labels for {len(args.videos)} videos")
  slices = [video_slice(v, args, config, backend) for v in args.videos]
  picture = compose(slices, labels)
  out = pathlib.Path(args.output)
  out.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
    raise JaxtalkError(f"could not write {out} (use a .png or .jpg name)")
  print(f"slice of {len(slices)} video(s) ({slices[0].shape[0]} x frames) -> {out}")
  return 0
