"""The mouth mask polygon and its rasteriser (pixel centres, even-odd), which the on-device
erosion re-implements bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path

from jaxtalk.face.mask import (
  MASK_POINTS,
  mask_polygon,
  rasterize_polygon,
  rasterize_polygon_reference,
)


def _centres(size: int) -> np.ndarray:
  xs, ys = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
  return np.stack([xs.ravel(), ys.ravel()], axis=1)


def test_square_by_hand():
  # Corners on pixel boundaries: exactly pixels x 1..4, y 1..3 have their centres inside.
  mask = rasterize_polygon(np.array([[1, 1], [5, 1], [5, 4], [1, 4]], np.float32), 8)
  want = np.zeros((8, 8), np.uint8)
  want[1:4, 1:5] = 1
  np.testing.assert_array_equal(mask, want)
  assert mask.dtype == np.uint8


def test_triangle_by_hand():
  # Right triangle (0,0)-(4,0)-(0,4): centre (x+.5, y+.5) inside when x + y + 1 < 4.
  mask = rasterize_polygon(np.array([[0, 0], [4, 0], [0, 4]], np.float32), 5)
  want = np.array([[int(x + y + 1 < 4) for x in range(5)] for y in range(5)], np.uint8)
  np.testing.assert_array_equal(mask, want)


def test_even_odd_self_intersecting():
  # A pentagram: the even-odd rule leaves the central pentagon empty.
  angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
  star = np.stack([32 + 28 * np.cos(angles), 32 - 28 * np.sin(angles)], axis=1).astype(np.float32)
  mask = rasterize_polygon(star, 64)
  assert mask[32, 32] == 0 and mask.sum() > 200


@pytest.mark.parametrize("seed", range(6))
def test_matches_matplotlib_at_pixel_centres(seed):
  rng = np.random.default_rng(seed)
  size = 48
  # Convex-ish polygons away from pixel centres (matplotlib's boundary rule differs on them).
  angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
  radius = rng.uniform(8, 20, 9)
  poly = np.stack([24 + radius * np.cos(angles), 24 + radius * np.sin(angles)], axis=1)
  poly = (poly + 0.123).astype(np.float32)
  ref = Path(poly).contains_points(_centres(size)).reshape(size, size)
  np.testing.assert_array_equal(rasterize_polygon(poly, size), ref.astype(np.uint8))


def test_fast_equals_literal_rule():
  """The difference-array rasteriser equals the rule evaluated per (pixel, edge) pair, also
  with vertices on pixel centres, edges, outside the image and horizontal edges."""
  rng = np.random.default_rng(0)
  for i in range(200):
    size = int(rng.integers(4, 70))
    poly = rng.uniform(-8, size + 8, (int(rng.integers(3, 20)), 2)).astype(np.float32)
    if i % 3 == 0:
      poly = (np.round(poly * 2) / 2).astype(np.float32)
    elif i % 3 == 1:
      poly = np.round(poly).astype(np.float32)
    np.testing.assert_array_equal(
      rasterize_polygon(poly, size), rasterize_polygon_reference(poly, size)
    )


def test_mask_polygon_points():
  landmarks = np.arange(68 * 2, dtype=np.float32).reshape(68, 2)
  poly = mask_polygon(landmarks)
  assert poly.shape == (len(MASK_POINTS), 2) and poly.dtype == np.float32
  np.testing.assert_array_equal(poly, landmarks[list(MASK_POINTS)])
  assert mask_polygon(np.stack([landmarks] * 3)).shape == (3, len(MASK_POINTS), 2)
  # Jaw 2..14 then the nose bottom back: a closed ring around the mouth.
  assert MASK_POINTS[:13] == tuple(range(2, 15)) and set(MASK_POINTS[13:]) == set(range(31, 36))
