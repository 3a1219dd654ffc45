"""Mouth-region sharpness (issue 13 item 3): how much detail the generated mouth keeps.

One square mouth box per video, placed from the *reference's* tracked landmarks and used
unchanged for the prediction, so both are scored on the same pixels:
  centre = median over frames of the mean of the 20 mouth points (iBUG 48-67),
  side   = MOUTH_BOX_SCALE x the median mouth width (corner 48 to corner 54),
both in source pixels, no resampling. Per frame we measure, on the box's grey image (ITU-R 601
luma, as cv2.COLOR_RGB2GRAY):
  * the variance of the Laplacian (3x3 kernel [0 1 0; 1 -4 1; 0 1 0], reflected border, the
    usual focus measure: a blurred mouth loses its teeth and lip edges and the variance drops);
  * CPBD (jaxtalk.metrics.cpbd), the perceptual blur measure of the paper's tables.
Video values are means over frames; `evaluate` reports generated / real as ratios.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from jaxtalk.errors import JaxtalkError
from jaxtalk.face.crop import CropBox
from jaxtalk.face.landmarks import LIPS, MOUTH_CORNERS
from jaxtalk.metrics.cpbd import cpbd

# The box spans 1.6 mouth widths: the lips, the teeth between them and a margin of skin for
# the lip edges; the jaw and nose stay mostly outside.
MOUTH_BOX_SCALE = 1.6


def mouth_box(landmarks_tn2: np.ndarray, scale: float = MOUTH_BOX_SCALE) -> CropBox:
  """The video's fixed square mouth box from its (T, 68, 2) landmarks (frames with NaN skipped)."""
  lm = np.asarray(landmarks_tn2, np.float64)
  ok = np.isfinite(lm).all(axis=(1, 2))
  if not ok.any():
    raise JaxtalkError("no frame with landmarks to place the mouth box")
  lm = lm[ok]
  centre = np.median(lm[:, list(LIPS)].mean(axis=1), axis=0)
  width = float(
    np.median(np.linalg.norm(lm[:, MOUTH_CORNERS[1]] - lm[:, MOUTH_CORNERS[0]], axis=-1))
  )
  side = max(8, int(round(scale * width)))
  # Landmark coordinates put pixel i's centre at i (as CropBox does).
  x0 = int(np.floor(centre[0] + 0.5 - side / 2 + 0.5))
  y0 = int(np.floor(centre[1] + 0.5 - side / 2 + 0.5))
  return CropBox(x0, y0, side)


def box_pixels(frame_hwc: np.ndarray, box: CropBox) -> np.ndarray:
  """The box's pixels at source resolution (edge pixels repeated where it leaves the frame)."""
  h, w = frame_hwc.shape[:2]
  ys = np.clip(np.arange(box.y0, box.y0 + box.side), 0, h - 1)
  xs = np.clip(np.arange(box.x0, box.x0 + box.side), 0, w - 1)
  return frame_hwc[ys[:, None], xs[None, :]]


def laplacian_variance(image: np.ndarray) -> float:
  """Variance of the 3x3 Laplacian of the grey image (RGB uint8 or grey), border reflected."""
  img = np.asarray(image)
  grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
  lap = cv2.Laplacian(
    grey.astype(np.float64), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT_101
  )
  return float(lap.var())


def mouth_sharpness(frames: Iterable[np.ndarray], box: CropBox) -> dict[str, float]:
  """Mean over frames of the mouth box's Laplacian variance and CPBD."""
  laps, cpbds = [], []
  for frame in frames:
    patch = box_pixels(frame, box)
    laps.append(laplacian_variance(patch))
    cpbds.append(cpbd(patch))
  if not laps:
    raise JaxtalkError("no frames to measure mouth sharpness on")
  return {"mouth_lapvar": float(np.mean(laps)), "mouth_cpbd": float(np.mean(cpbds))}


def ratio(pred: float | None, ref: float | None) -> float | None:
  """pred / ref, None when either is missing or the reference is 0 (no detail to compare)."""
  if pred is None or ref is None or not ref > 0:
    return None
  return float(pred / ref)
