"""Frame-to-frame jumps at the seams of windowed inference (issue 11, item 4).

`jaxtalk infer` renders a long clip in windows of `infer.window` frames overlapping by
`infer.overlap` (jaxtalk.synthesis.windows). Where the output switches from one window's render
to the next, a model that depends on its window can jump. These functions name the frames where
that happens and compare the jumps there with the jumps everywhere else in the same video, and
with the real video's jumps on the same frames (real motion jumps too: a seam is suspicious only
where the generated jump exceeds both).
"""

from __future__ import annotations

import numpy as np

from jaxtalk.synthesis.windows import window_starts, window_weights

LIP_POINTS = slice(48, 68)  # the 68-point scheme's outer and inner lip


def seam_frames(n: int, window: int, overlap: int, seam: str = "centre") -> np.ndarray:
  """Frames t (1 <= t < n) whose pixels come from another window than frame t-1's, sorted.

  seam="centre": the frames where the owning window changes. seam="crossfade": every frame of
  an overlap and the frame after it (the blend changes there gradually). Empty for one window.
  """
  starts = window_starts(n, window, overlap)
  if len(starts) == 1:
    return np.zeros(0, np.int64)
  weights = window_weights(starts, n, window, seam)
  # (windows, n) weight of each window on each frame
  full = np.zeros((len(starts), n))
  for i, s in enumerate(starts):
    stop = min(s + window, n)
    full[i, s:stop] = weights[i, : stop - s]
  changed = np.any(np.abs(np.diff(full, axis=1)) > 1e-12, axis=0)  # between t-1 and t
  frames = np.nonzero(changed)[0] + 1
  if seam == "centre":
    return frames.astype(np.int64)
  # crossfade: the weights change on every frame of a ramp; keep only the overlap regions
  inside = np.zeros(n, bool)
  for i in range(1, len(starts)):
    inside[starts[i] : starts[i - 1] + window + 1] = True
  return frames[inside[frames]].astype(np.int64)


def frame_jumps(frames_thw: np.ndarray) -> np.ndarray:
  """(T,) mean absolute difference between frame t and frame t-1 (grey levels; NaN at t=0)."""
  x = np.asarray(frames_thw, np.float64)
  out = np.full(len(x), np.nan)
  if len(x) > 1:
    out[1:] = np.abs(np.diff(x, axis=0)).reshape(len(x) - 1, -1).mean(axis=1)
  return out


def landmark_jumps(points_tn2: np.ndarray) -> np.ndarray:
  """(T,) mean displacement of the points between frame t and frame t-1 (NaN at t=0)."""
  x = np.asarray(points_tn2, np.float64)
  out = np.full(len(x), np.nan)
  if len(x) > 1:
    out[1:] = np.linalg.norm(np.diff(x, axis=0), axis=-1).mean(axis=1)
  return out


def jump_summary(jumps_t: np.ndarray, seams: np.ndarray, prefix: str = "") -> dict:
  """Worst and mean jump at the seam frames and at every other frame (t >= 1)."""
  jumps_t = np.asarray(jumps_t, np.float64)
  at = np.zeros(len(jumps_t), bool)
  at[np.asarray(seams, np.int64)] = True
  at[0] = False
  other = ~at
  other[0] = False

  def stat(fn, mask):
    return float(fn(jumps_t[mask])) if mask.any() else None

  return {
    f"{prefix}seam_jump_max": stat(np.max, at),
    f"{prefix}seam_jump_mean": stat(np.mean, at),
    f"{prefix}other_jump_max": stat(np.max, other),
    f"{prefix}other_jump_mean": stat(np.mean, other),
  }
