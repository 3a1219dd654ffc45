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

import math

import numba
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
  Runs in a compiled kernel without the GIL (`_rasterize`).
  """
  poly = np.ascontiguousarray(polygon_p2, np.float32)
  if poly.ndim != 2 or poly.shape[1] != 2:
    raise ValueError(f"polygon must be (P, 2), got {poly.shape}")
  out = np.zeros((size, size), np.uint8)
  _rasterize(poly, out)
  return out


# Compiled without the GIL (as face/render.py's triangles): inference's paste threads rasterise a
# mask per frame, and the NumPy form of the same counting (crossings per row, np.add.at into a
# difference array, a cumsum) held the GIL for ~16 % of the host's GIL time (py-spy --gil,
# scripts/host_gil_share.py; the GIL bounds inference on a GPU machine). The
# arithmetic is the module docstring's in float32, in the same order (numba adds no FMA without
# fastmath), so the result is the same bit for bit (tests/test_mask.py checks against
# rasterize_polygon_reference).
@numba.njit(cache=True, nogil=True)
def _rasterize(poly, out):  # pragma: no cover - compiled
  size = out.shape[0]
  p = poly.shape[0]
  half, lo, hi = np.float32(0.5), np.float32(-1.0), np.float32(size + 1.0)
  diff = np.zeros(size + 1, np.int32)
  for y in range(size):
    py = np.float32(y) + half
    diff[:] = 0
    for i in range(p):
      j = (i + 1) % p
      xi, yi, xj, yj = poly[i, 0], poly[i, 1], poly[j, 0], poly[j, 1]
      if (yi > py) != (yj > py):
        xint = xi + (py - yi) * (xj - xi) / (yj - yi)
        # pixels u of the row with u + 0.5 < xint: u < ceil(xint - 0.5), exact in float32
        reach = min(max(math.ceil(min(max(xint, lo), hi) - half), 0), size)
        diff[0] += 1
        diff[reach] -= 1
    count = 0
    for u in range(size):
      count += diff[u]
      out[y, u] = count & 1


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
