"""One stable face crop per clip, and the mapping of landmarks into it.

A per-frame box follows every detector wobble and bakes that jitter into the training frames
(exactly the motion instability StableFace is about), so a clip gets a single square box: its
centre is the per-axis median over the clip of the tracked face boxes' centres, its side the
median box side (the larger of width and height) times `crop_scale`, moved down by `crop_shift`
times its side (the detector's box centre sits near the nose: a tight crop needs the room below
the chin, where the open jaw goes, more than above the brows). The box is snapped to whole source
pixels, so cropping is an exact slice followed by one area resize to `size`.

Coordinates: landmarks from `jaxtalk.face.landmarks` put pixel i's centre at i (OpenCV and
dlib convention). Crop coordinates are continuous: crop pixel (u, v) covers [u, u+1) x [v, v+1),
its centre is (u + 0.5, v + 0.5) - the convention `jaxtalk.face.mask` rasterises with. A source
point p maps to (p + 0.5 - box_origin) * size / side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from jaxtalk.errors import NoFaceError


@dataclasses.dataclass(frozen=True)
class CropBox:
  """A square crop of the source frame: source pixels x0 .. x0+side-1, y0 .. y0+side-1."""

  x0: int
  y0: int
  side: int

  def to_list(self) -> list[int]:
    return [self.x0, self.y0, self.side]


def stable_crop_box(
  boxes_t4: np.ndarray, found_t: np.ndarray, crop_scale: float, crop_shift: float = 0.0
) -> CropBox:
  """The clip's crop box from its tracked face boxes (frames where `found_t`); `crop_shift` moves
  it down by that fraction of its side (data.crop_shift)."""
  boxes = np.asarray(boxes_t4, np.float64)[np.asarray(found_t, bool)]
  boxes = boxes[np.all(np.isfinite(boxes), axis=1)]
  if not len(boxes):
    raise NoFaceError("no tracked face box to place the crop")
  cx = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
  cy = float(np.median((boxes[:, 1] + boxes[:, 3]) / 2))
  side = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
  side_px = max(8, int(round(side * crop_scale)))
  # Box coordinates put pixel i's centre at i; the crop's continuous centre is cx + 0.5.
  x0 = int(np.floor(cx + 0.5 - side_px / 2 + 0.5))
  y0 = int(np.floor(cy + 0.5 + crop_shift * side_px - side_px / 2 + 0.5))
  return CropBox(x0, y0, side_px)


def config_crop_box(boxes_t4: np.ndarray, found_t: np.ndarray, data: Any) -> CropBox:
  """`stable_crop_box` with a config's `data.crop_scale` and `data.crop_shift` (0 for a config
  written before the shift existed)."""
  shift = float(data.get("crop_shift", 0.0))
  return stable_crop_box(boxes_t4, found_t, float(data.crop_scale), shift)


def crop_frame(frame_hwc: np.ndarray, box: CropBox, size: int) -> np.ndarray:
  """The `(size, size, 3)` uint8 crop; parts of the box outside the frame repeat its edge."""
  h, w = frame_hwc.shape[:2]
  x0, y0, x1, y1 = box.x0, box.y0, box.x0 + box.side, box.y0 + box.side
  pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
  if any(pad):
    frame_hwc = cv2.copyMakeBorder(frame_hwc, *pad, cv2.BORDER_REPLICATE)
    x0, x1, y0, y1 = x0 + pad[2], x1 + pad[2], y0 + pad[0], y1 + pad[0]
  patch = frame_hwc[y0:y1, x0:x1]
  if box.side == size:
    return np.ascontiguousarray(patch)
  interp = cv2.INTER_AREA if box.side > size else cv2.INTER_CUBIC
  return cv2.resize(patch, (size, size), interpolation=interp)


def to_crop_coords(points_n2: np.ndarray, box: CropBox, size: int) -> np.ndarray:
  """Source landmarks (pixel centre at i) -> continuous crop coordinates, float32."""
  scale = size / box.side
  origin = np.array([box.x0, box.y0], np.float64)
  return ((np.asarray(points_n2, np.float64) + 0.5 - origin) * scale).astype(np.float32)


def image_size_for(crop_side_px: float, size_range: tuple[int, int], multiple: int = 32) -> int:
  """The renderer's crop size for a clip whose crop box is `crop_side_px` source pixels wide.

  The rule (configs/cpu.py): work at about the face's own resolution, no finer than the source
  holds (upscaling invents no detail) and no coarser than `size_range[0]`: the side rounded down
  to a multiple of `multiple`, clipped to `size_range` = (lo, hi).
  """
  lo, hi = int(size_range[0]), int(size_range[1])
  if not 0 < lo <= hi:
    raise ValueError(f"image size range must be 0 < lo <= hi, got {size_range}")
  side = int(crop_side_px) // multiple * multiple
  return int(min(max(side, lo), hi))
