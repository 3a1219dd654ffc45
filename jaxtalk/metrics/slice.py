"""Vertical-slice jitter pictures (StableFace Fig. 1 and Fig. 7).

The same pixel column of every frame, taken at a fixed place in the face crop (by default
through the mouth centre), placed side by side along time: steady motion draws smooth curves,
jitter draws saw teeth. The crop is the MSI crop (`msi_crop_box`), so slices of different
videos of the same face line up and have the same scale.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from jaxtalk.errors import JaxtalkError
from jaxtalk.face.landmarks import LIPS


def crop_frame(frame_hwc: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
  """The square `box` (x0, y0, side) of a frame resized to `size`; outside pixels are edge."""
  x0, y0, side = (float(v) for v in box)
  scale = size / side
  m = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], np.float64)
  return cv2.warpAffine(
    frame_hwc,
    m,
    (size, size),
    flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_REPLICATE,
  )


def mouth_centre(landmarks_crop_tn2: np.ndarray, frames: int = 5) -> np.ndarray:
  """Mean lip position over the first frames, in crop pixels: the default slice position."""
  return np.asarray(landmarks_crop_tn2[:frames, list(LIPS)], np.float64).reshape(-1, 2).mean(0)


def slice_image(
  frames: Iterable[np.ndarray],
  box: np.ndarray,
  *,
  size: int = 256,
  x: int | None = None,
  y: int | None = None,
) -> np.ndarray:
  """A `(size, T, 3)` picture: column `x` (or row `y`) of every cropped frame, time to the right.

  Exactly one of `x` and `y` is given, in crop pixels (0..size-1).
  """
  if (x is None) == (y is None):
    raise ValueError("give exactly one of x (column) or y (row)")
  pos = x if x is not None else y
  if not 0 <= pos < size:
    raise ValueError(f"slice position {pos} is outside the {size}-pixel crop")
  cols = []
  for frame in frames:
    crop = crop_frame(frame, box, size)
    cols.append(crop[:, pos] if x is not None else crop[pos, :])
  if not cols:
    raise ValueError("no frames")
  return np.stack(cols, axis=1)


def compose(slices: Sequence[np.ndarray], labels: Sequence[str], gap: int = 8) -> np.ndarray:
  """Slices side by side, each under its label, on a white background (RGB uint8)."""
  header = 22
  height = max(s.shape[0] for s in slices) + header
  width = sum(max(s.shape[1], 8 * len(label)) for s, label in zip(slices, labels)) + gap * (
    len(slices) + 1
  )
  canvas = np.full((height + gap, width, 3), 255, np.uint8)
  cursor = gap
  for s, label in zip(slices, labels):
    w = max(s.shape[1], 8 * len(label))
    canvas[header : header + s.shape[0], cursor : cursor + s.shape[1]] = s
    cv2.putText(
      canvas, label, (cursor, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
    )
    cursor += w + gap
  return canvas


def save_png(path, picture_hwc: np.ndarray) -> None:
  """Writes an RGB picture (PNG or JPEG by the file name); a clear error if it cannot."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(out), cv2.cvtColor(picture_hwc, cv2.COLOR_RGB2BGR)):
    raise JaxtalkError(f"could not write {out} (use a .png or .jpg name)")
