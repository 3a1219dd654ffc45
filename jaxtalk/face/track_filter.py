"""Temporal filtering of the background track: the same filter in preprocessing and inference.

Per-frame landmark detection jitters by a fraction of a pixel from frame to frame even on a
still head. Anything built from raw per-frame landmarks inherits that jitter: the head pose the
shape renders are drawn with, the mouth mask the renderer's input is eroded with, and the
region pasted back into the frame. None of it is the person's motion, and the model cannot
remove jitter it is given as input. So the *background* track is filtered over time:

* `pose` (rotation vector, translation), which places the shape renders: filtered with
  `pose_sigma`;
* the landmarks the mouth mask polygon (and the paste region) is built from: filtered with
  `landmark_sigma`.

The expression fit is NOT filtered: it is fitted from the raw landmarks, frame by frame, so the
real mouth articulation reaches the dataset (and the audio2expression targets) unchanged. The
landmarks stored in the dataset stay raw too (they are the measurement; MSI of the real video is
computed from them).

The filter is a zero-phase Gaussian along time (`scipy.ndimage.gaussian_filter1d`, truncated at
4 sigma, edges extended with the nearest frame). Zero-phase because the whole track is known
offline (preprocessing, and inference over a prepared background video), so nothing lags; a
Gaussian because it has no overshoot or ringing (a Savitzky-Golay filter keeps more of a fast
motion but rings around steps), and because one number, sigma in frames, sets it. The defaults
were chosen by measurement on the real clips (docs/benchmarks.md, "Issue 9: background track
filter"; scripts/track_filter_measure.py): MSI of the track rises several-fold while the head
pose keeps its slow motion.

Config (data section; part of the dataset settings, and inference reads the checkpoint's):
  data.track_filter              "gaussian" (default) or "none" (the ablation: raw per frame)
  data.track_filter_pose_sigma   frames (default 2.0)
  data.track_filter_mask_sigma   frames (default 1.5)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.ndimage

from jaxtalk.errors import ConfigError
from jaxtalk.face.mask import mask_polygon, rasterize_polygon

KINDS = ("gaussian", "none")


@dataclasses.dataclass(frozen=True)
class TrackFilter:
  """Which filter, and its strength in frames (see the module docstring)."""

  kind: str = "gaussian"
  pose_sigma: float = 2.0
  landmark_sigma: float = 1.5

  def __post_init__(self) -> None:
    if self.kind not in KINDS:
      raise ConfigError(f"data.track_filter must be one of {KINDS}, got {self.kind!r}")
    if self.pose_sigma < 0 or self.landmark_sigma < 0:
      raise ConfigError("data.track_filter_pose_sigma and _mask_sigma must be >= 0")

  @classmethod
  def from_config(cls, cfg: Any) -> TrackFilter:
    """From a full config (its data section); configs older than the filter get "none"."""
    d = cfg.data
    return cls(
      kind=str(d.get("track_filter", "none")),
      pose_sigma=float(d.get("track_filter_pose_sigma", 2.0)),
      landmark_sigma=float(d.get("track_filter_mask_sigma", 1.5)),
    )

  @property
  def active(self) -> bool:
    return self.kind != "none"

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def smooth_time(x_t: np.ndarray, sigma: float) -> np.ndarray:
  """Zero-phase Gaussian of `sigma` frames along axis 0 (edges: nearest frame), same dtype.

  A constant sequence stays exactly constant, and a straight-line one stays a straight line
  away from the ends (the kernel is symmetric and sums to 1).
  """
  x = np.asarray(x_t)
  if sigma <= 0 or len(x) < 2:
    return x.copy()
  out = scipy.ndimage.gaussian_filter1d(
    x.astype(np.float64), sigma, axis=0, mode="nearest", truncate=4.0
  )
  return out.astype(x.dtype)


def filter_pose(pose_t6: np.ndarray, flt: TrackFilter) -> np.ndarray:
  """The head pose track `(T, 6)` filtered over time (unchanged when the filter is off).

  Rotation vectors are averaged component-wise: faces stay near frontal (angles far below pi),
  where that equals averaging the rotations to second order.
  """
  if not flt.active:
    return np.asarray(pose_t6).copy()
  return smooth_time(pose_t6, flt.pose_sigma)


def filter_landmarks(landmarks_tn2: np.ndarray, flt: TrackFilter) -> np.ndarray:
  """The landmark track `(T, 68, 2)` the mouth mask is built from, filtered over time."""
  if not flt.active:
    return np.asarray(landmarks_tn2).copy()
  return smooth_time(landmarks_tn2, flt.landmark_sigma)


def track_masks(
  landmarks_tn2: np.ndarray, size: int, flt: TrackFilter
) -> tuple[np.ndarray, np.ndarray]:
  """(polygons (T, P, 2) float32, masks (T, S, S) uint8) of a landmark track: the mouth mask of
  every frame from the time-filtered landmarks. Preprocessing (the dataset's `mask_points` and
  `mask`) and inference (the background's masks and paste region) both call this."""
  polygons = mask_polygon(filter_landmarks(landmarks_tn2, flt))
  masks = np.zeros((len(polygons), size, size), np.uint8)
  for t, poly in enumerate(polygons):
    masks[t] = rasterize_polygon(poly, size)
  return polygons, masks
