"""Landmark throughput and `jaxtalk msi` time on a clip (cold and warm landmark cache)."""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from jaxtalk.bench.machine import describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("video", help="a clip, e.g. ../shared/data/real/grid/bbaf2n.mpg")
  parser.add_argument("--backend", default="dlib")
  parser.add_argument("--repeats", type=int, default=3)


def run(args: argparse.Namespace) -> int:
  from jaxtalk.config import load_config
  from jaxtalk.face.landmarks import get_backend
  from jaxtalk.face.track import track_faces
  from jaxtalk.io.video import read_frames
  from jaxtalk.metrics.video_msi import video_msi

  config = load_config("grid")
  backend = get_backend(args.backend)
  t = time.perf_counter()
  frames = read_frames(args.video)
  decode_s = time.perf_counter() - t
  n = len(frames)
  track_s = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    track_faces(
      frames,
      backend,
      **{
        k: config.track[k]
        for k in ("roi_margin", "upsample", "hold_frames", "redetect_every", "first_frames")
      },
    )
    track_s.append(time.perf_counter() - t)
  with tempfile.TemporaryDirectory() as cache:
    t = time.perf_counter()
    video_msi(args.video, config, args.backend, cache_dir=cache)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    video_msi(args.video, config, args.backend, cache_dir=cache)
    warm_s = time.perf_counter() - t
  best = float(np.min(track_s))
  print(f"machine: {describe()}, backend {args.backend}")
  print(f"clip: {args.video} ({n} frames {frames.shape[2]}x{frames.shape[1]})")
  print(f"decode:            {n / decode_s:8.1f} frames/s")
  print(f"track+landmarks:   {n / best:8.1f} frames/s (best of {args.repeats}, one core)")
  print(f"msi, cold cache:   {cold_s:8.3f} s (decode + landmarks + MSI)")
  print(f"msi, warm cache:   {warm_s:8.3f} s")
  return 0
