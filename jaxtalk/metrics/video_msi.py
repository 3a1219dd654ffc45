"""MSI of video files: landmarks (cached) -> crop normalisation -> Eq. 2-4."""

from __future__ import annotations

import os

import ml_collections

from jaxtalk.face.cache import require_all_frames, video_track
from jaxtalk.metrics.msi import msi_crop_box, msi_from_config


def video_msi(
  path: str | os.PathLike,
  config: ml_collections.ConfigDict,
  backend: str | None = None,
  *,
  cache_dir: str | os.PathLike | None = None,
  use_cache: bool = True,
  progress: bool = False,
) -> dict:
  """The MSI record of one video: lip, jaw and all, plus what produced them."""
  backend = backend or config.data.landmark_backend
  track = video_track(
    path, backend, config.track, cache_dir=cache_dir, use_cache=use_cache, progress=progress
  )
  require_all_frames(track, str(path))
  scores = msi_from_config(track.landmarks_tn2, config.msi)
  box = msi_crop_box(track.landmarks_tn2, config.msi.crop_frames, config.msi.mouth_ratio)
  return {
    "video": str(path),
    "frames": track.num_frames,
    "backend": backend,
    "msi_lip": scores["lip"],
    "msi_jaw": scores["jaw"],
    "msi_all": scores["all"],
    "crop_box": [float(v) for v in box],
    "held_frames": int(track.held_t.sum()),
  }
