"""Arguments and helpers shared by the commands that read videos' landmarks."""

from __future__ import annotations

import argparse

import ml_collections

from jaxtalk.config import load_config
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.cache import video_track
from jaxtalk.face.landmarks import BACKENDS
from jaxtalk.face.track import Track


def add_landmark_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxtalk.cli import add_config_arguments

  add_config_arguments(parser)
  parser.add_argument(
    "--backend", default=None, help="landmark backend: dlib (default, offline) or fan"
  )
  parser.add_argument("--cache-dir", default=None, help="landmark cache (default ~/.cache/jaxtalk)")
  parser.add_argument("--no-cache", action="store_true", help="always re-detect landmarks")


def config_and_backend(args: argparse.Namespace) -> tuple[ml_collections.ConfigDict, str]:
  config = load_config(args.config, args.overrides)
  backend = args.backend or config.data.landmark_backend
  if backend not in BACKENDS:
    raise JaxtalkError(f"unknown landmark backend {backend!r}; choose from {', '.join(BACKENDS)}")
  return config, backend


def track_for(
  path: str,
  args: argparse.Namespace,
  config: ml_collections.ConfigDict,
  backend: str,
  progress: bool = False,
) -> Track:
  return video_track(
    path,
    backend,
    config.track,
    cache_dir=args.cache_dir,
    use_cache=not args.no_cache,
    progress=progress,
  )
