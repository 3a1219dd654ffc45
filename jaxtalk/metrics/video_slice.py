"""Slice pictures of video files: landmarks (cached) -> MSI crop -> column through the mouth."""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from jaxtalk.errors import JaxtalkError
from jaxtalk.face.cache import require_all_frames, video_track
from jaxtalk.io.video import iter_frames
from jaxtalk.metrics.msi import msi_crop_box, normalise_landmarks
from jaxtalk.metrics.slice import compose, mouth_centre, slice_image


def video_slice(
  path: str | os.PathLike,
  config: ml_collections.ConfigDict,
  backend: str | None = None,
  *,
  x: int | None = None,
  y: int | None = None,
  cache_dir: str | os.PathLike | None = None,
  use_cache: bool = True,
) -> np.ndarray:
  """`(crop_size, T, 3)`: column `x` (default: through the mouth) or row `y` of the MSI crop."""
  backend = backend or config.data.landmark_backend
  track = video_track(path, backend, config.track, cache_dir=cache_dir, use_cache=use_cache)
  require_all_frames(track, str(path))
  box = msi_crop_box(track.landmarks_tn2, config.msi.crop_frames, config.msi.mouth_ratio)
  size = int(config.msi.crop_size)
  if x is None and y is None:
    lms = normalise_landmarks(track.landmarks_tn2, box, size)
    x = int(round(mouth_centre(lms, config.msi.crop_frames)[0]))
  try:
    return slice_image(iter_frames(path), box, size=size, x=x, y=y)
  except ValueError as e:
    raise JaxtalkError(f"{path}: {e}") from e


def slice_picture(
  paths: list[str | os.PathLike],
  labels: list[str],
  config: ml_collections.ConfigDict,
  backend: str | None = None,
  **kwargs,
) -> np.ndarray:
  """Slices of several videos side by side under their labels (RGB uint8)."""
  if len(labels) != len(paths):
    raise JaxtalkError(f"{len(labels)} labels for {len(paths)} videos")
  return compose([video_slice(p, config, backend, **kwargs) for p in paths], labels)
