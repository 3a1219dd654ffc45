"""`jaxtalk slice VIDEO [VIDEO ...] -o slice.png [--x COL | --y ROW]`.

Positions are in the 256-pixel MSI crop of each video (the same face-relative place for every
video); the default is a column through the mouth centre of the first frames.
"""

from __future__ import annotations

import argparse
import pathlib

from jaxtalk.commands.common import add_landmark_arguments, config_and_backend
from jaxtalk.metrics.slice import save_png
from jaxtalk.metrics.video_slice import slice_picture


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("videos", nargs="+", metavar="VIDEO")
  parser.add_argument("-o", "--output", required=True, help="output picture (.png)")
  where = parser.add_mutually_exclusive_group()
  where.add_argument("--x", type=int, default=None, help="crop column (0-255); default: mouth")
  where.add_argument("--y", type=int, default=None, help="crop row (0-255) instead of a column")
  parser.add_argument("--labels", nargs="*", default=None, help="labels (default: file names)")
  add_landmark_arguments(parser)


def run(args: argparse.Namespace) -> int:
  config, backend = config_and_backend(args)
  labels = args.labels or [pathlib.Path(v).name for v in args.videos]
  picture = slice_picture(
    args.videos, labels, config, backend, x=args.x, y=args.y, cache_dir=args.cache_dir,
    use_cache=not args.no_cache,
  )  # fmt: skip
  save_png(args.output, picture)
  print(f"slice of {len(args.videos)} video(s) ({picture.shape[0]}-pixel crop) -> {args.output}")
  return 0
