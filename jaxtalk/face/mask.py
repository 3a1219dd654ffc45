"""The lower-face (mouth and jaw) mask the renderer's input is eroded with (StableFace III-C2).

The mask is a polygon through iBUG-68 landmarks, rasterised with a rule simple enough to be
re-implemented bit for bit on device (`jaxtalk/train/erosion.py` jitters the polygon points and
rasterises again inside the jitted step):

* Coordinates are continuous crop pixels: pixel (x, y) covers [x, x+1) x [y, y+1), so its centre
  is (x + 0.5, y + 0.5). A pixel is inside when its centre is.
* Even-odd rule by ray crossing (pnpoly), in float32, for each edge i from vertex i to vertex
  i+1 (the last edge closes the polygon back to vertex 0), with (px, py) the pixel centre:

      crosses = (yi > py) != (yj > py)
      xint    = xi + (py - yi) * (xj - xi) / (yj - yi)     # only used where crosses
      inside ^= crosses & (px < xint)

  evaluated exactly in that order (two subtractions, a multiply, a divide, an add: there is no
  multiply-add pair a compiler could fuse into an FMA, so XLA and NumPy round identically).

`MASK_POINTS` runs along the jaw from point 2 (level with the nose bottom, left of the image)
over the chin to point 14, then back along the bottom of the nose 35 -> 31. Everything the
mouth and jaw move is inside it: lips 48-67, the chin, the lower cheeks. The upper face (eyes,
nose, brows) stays visible, so the renderer can copy it from the input.
"""

from __future__ import annotations

import numpy as np

# Jaw 2..14 (left cheek, chin, right cheek), then the nose bottom from right to left.
MASK_POINTS: tuple[int, ...] = tuple(range(2, 15)) + (35, 34, 33, 32, 31)


def mask_polygon(landmarks_n2: np.ndarray) -> np.ndarray:
  """The mask polygon `(P, 2)` float32 (P = len(MASK_POINTS)) of one frame's 68 landmarks.

  Works on any leading batch shape: `(..., 68, 2) -> (..., P, 2)`.
  """
  landmarks = np.asarray(landmarks_n2, np.float32)
  return landmarks[..., list(MASK_POINTS), :]


def rasterize_polygon(polygon_p2: np.ndarray, size: int) -> np.ndarray:
  """`(size, size)` uint8, 1 where the pixel centre is inside the polygon (even-odd rule).

  See the module docstring for the exact arithmetic; vertices may lie outside the image.
  The crossing test `px < xint` is counted per row with a difference array instead of for every
  (pixel, edge) pair: pixel u of a row passes it exactly when u < ceil(xint - 0.5), and
  xint - 0.5 is exact in float32 for |xint| < 2**22, so the result is the same bit for bit.
  """
  poly = np.asarray(polygon_p2, np.float32)
  if poly.ndim != 2 or poly.shape[1] != 2:
    raise ValueError(f"polygon must be (P, 2), got {poly.shape}")
  xi, yi = poly[:, 0], poly[:, 1]
  xj, yj = np.roll(xi, -1), np.roll(yi, -1)
  py = (np.arange(size, dtype=np.float32) + np.float32(0.5))[:, None]  # (S, 1): image rows
  crosses = (yi > py) != (yj > py)  # (S, P)
  # Where the edge does not cross the row its intersection is never used; a denominator of 1
  # there only keeps the division finite.
  dy = np.where(crosses, yj - yi, np.float32(1.0))
  xint = xi + (py - yi) * (xj - xi) / dy  # (S, P) float32
  # Number of pixels u in [0, size) of the row with u + 0.5 < xint.
  reach = np.clip(np.ceil(np.clip(xint, -1.0, size + 1.0) - np.float32(0.5)), 0, size)
  rows, edges = np.nonzero(crosses)
  diff = np.zeros((size, size + 1), np.int32)
  np.add.at(diff, (rows, np.zeros_like(rows)), 1)
  np.add.at(diff, (rows, reach[rows, edges].astype(np.int64)), -1)
  count = np.cumsum(diff[:, :size], axis=1)
  return (count & 1).astype(np.uint8)


def rasterize_polygon_reference(polygon_p2: np.ndarray, size: int) -> np.ndarray:
  """The rule evaluated literally for every (pixel, edge) pair: slow, for tests."""
  poly = np.asarray(polygon_p2, np.float32)
  xi, yi = poly[:, 0], poly[:, 1]
  xj, yj = np.roll(xi, -1), np.roll(yi, -1)
  centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
  py = centres[:, None]
  crosses = (yi > py) != (yj > py)
  dy = np.where(crosses, yj - yi, np.float32(1.0))
  xint = xi + (py - yi) * (xj - xi) / dy
  hits = crosses[:, None, :] & (centres[None, :, None] < xint[:, None, :])
  return (hits.sum(axis=-1) % 2).astype(np.uint8)
