"""Per-video landmark tracks cached on disk, keyed by file content and tracker settings.

The key hashes the file's bytes (not its path or mtime), the backend and every tracking
setting, so a renamed copy hits the cache and a changed setting misses it. Cache files are
written to a temporary name and renamed, so a killed run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib

import ml_collections
import numpy as np

from jaxtalk.caches import cache_root
from jaxtalk.errors import NoFaceError
from jaxtalk.face.landmarks import get_backend
from jaxtalk.face.track import Track, track_faces
from jaxtalk.io.video import iter_frames, probe_video

CACHE_VERSION = 1


def default_cache_dir() -> pathlib.Path:
  return cache_root() / "landmarks"


def file_digest(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _tracker_kwargs(track_cfg: ml_collections.ConfigDict) -> dict:
  return dict(
    roi_margin=float(track_cfg.roi_margin),
    upsample=int(track_cfg.upsample),
    hold_frames=int(track_cfg.hold_frames),
    redetect_every=int(track_cfg.redetect_every),
    first_frames=int(track_cfg.first_frames),
  )


def video_track(
  path: str | os.PathLike,
  backend: str,
  track_cfg: ml_collections.ConfigDict,
  fps: float | None = None,
  cache_dir: str | os.PathLike | None = None,
  use_cache: bool = True,
  progress: bool = False,
) -> Track:
  """Landmarks of every frame of a video file (resampled to `fps` if given), cached."""
  info = probe_video(path)  # raises a clear VideoReadError before any hashing
  kwargs = _tracker_kwargs(track_cfg)
  cache_path = None
  if use_cache:
    key = json.dumps(
      {"v": CACHE_VERSION, "file": file_digest(path), "backend": backend, "fps": fps, **kwargs},
      sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_path = pathlib.Path(cache_dir or default_cache_dir()) / f"{digest}.npz"
    if cache_path.is_file():
      with np.load(cache_path) as data:
        return Track.from_npz(data)
  total = math.ceil(info.duration_s * (fps or info.fps) - 1e-6) or None
  track = track_faces(
    iter_frames(path, fps),
    get_backend(backend),
    source=str(path),
    total=total,
    progress=progress,
    **kwargs,
  )
  if cache_path is not None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **track.to_npz_dict())
    os.replace(tmp, cache_path)
  return track


def require_all_frames(track: Track, source: str) -> None:
  """Metrics over trajectories need a face in every frame; name the gaps otherwise."""
  missing = track.missing_frames()
  if missing.size:
    shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if missing.size > 10 else "")
    raise NoFaceError(f"{source}: no face in {missing.size} of {track.num_frames} frames ({shown})")
