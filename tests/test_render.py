"""The compiled rasteriser (jaxtalk/face/render.py) against the NumPy one it replaced: the same
bits on random overlapping triangles (z-test, both windings, off-image and degenerate ones) and
on the face model's real mesh, plus hand-worked pixels."""

from __future__ import annotations

import math

import numpy as np

from jaxtalk.face import render
from jaxtalk.face.landmark3d import TRIANGLE_ALBEDO, TRIANGLES


def rasterize_numpy(
  points_n2: np.ndarray,
  depth_n: np.ndarray,
  triangles_f3: np.ndarray,
  shade_n: np.ndarray,
  albedo_f3: np.ndarray,
  size: int,
) -> np.ndarray:
  """The rasteriser as it was written in NumPy (vectorised over each triangle's bounding box),
  kept here as the independent reference for the compiled one."""
  image = np.zeros((size, size, 3), np.float64)
  zbuf = np.full((size, size), np.inf)
  # Python floats for the per-triangle scalar work: numpy scalars cost more than the math.
  pts = np.asarray(points_n2, np.float64).tolist()
  depth = np.asarray(depth_n, np.float64)
  shade = np.asarray(shade_n, np.float64)
  albedo = np.asarray(albedo_f3, np.float64)
  grid = np.arange(size, dtype=np.float64) + 0.5
  for f, (a, b, c) in enumerate(np.asarray(triangles_f3).tolist()):
    (xa, ya), (xb, yb), (xc, yc) = pts[a], pts[b], pts[c]
    area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    if abs(area) < 1e-9:
      continue
    # Pixels whose centres can fall inside the triangle.
    x0 = max(math.floor(min(xa, xb, xc) - 0.5), 0)
    x1 = min(math.ceil(max(xa, xb, xc) - 0.5), size - 1)
    y0 = max(math.floor(min(ya, yb, yc) - 0.5), 0)
    y1 = min(math.ceil(max(ya, yb, yc) - 0.5), size - 1)
    if x0 > x1 or y0 > y1:
      continue
    px = grid[x0 : x1 + 1]
    py = grid[y0 : y1 + 1, None]
    # Barycentric weights from edge functions, normalised by the signed area (either winding):
    # each is affine in (px, py), so it is a row term plus a column term.
    inv = 1.0 / area
    wa = ((yb - yc) * inv * (px - xb)) + ((xc - xb) * inv * (py - yb))
    wb = ((yc - ya) * inv * (px - xc)) + ((xa - xc) * inv * (py - yc))
    wc = 1.0 - wa - wb
    inside = (wa >= 0) & (wb >= 0) & (wc >= 0)
    z = wa * depth[a] + wb * depth[b] + wc * depth[c]
    region = zbuf[y0 : y1 + 1, x0 : x1 + 1]
    win = inside & (z < region)
    if not win.any():
      continue
    region[win] = z[win]
    light = wa[win] * shade[a] + wb[win] * shade[b] + wc[win] * shade[c]
    image[y0 : y1 + 1, x0 : x1 + 1][win] = light[:, None] * albedo[f]
  return image


def test_rasterize_equals_the_numpy_version_bit_for_bit():
  rng = np.random.default_rng(0)
  size = 48
  for trial in range(20):
    n, f = 30, 40
    pts = rng.uniform(-10, size + 10, (n, 2))
    depth = rng.uniform(1.0, 2.0, n)
    tri = rng.integers(0, n, (f, 3))
    tri[0] = [0, 0, 1]  # degenerate: skipped by both
    shade = rng.uniform(0.2, 1.0, n)
    albedo = rng.uniform(0.0, 1.0, (f, 3))
    got = render.rasterize(pts, depth, tri, shade, albedo, size)
    want = rasterize_numpy(pts, depth, tri, shade, albedo, size)
    np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")
    assert (got > 0).any()


def test_rasterize_the_face_mesh_equals_the_numpy_version():
  """The face model's own mesh (landmark3d.TRIANGLES), as inference draws it: a frontal face
  filling a 256 crop."""
  rng = np.random.default_rng(1)
  n = int(TRIANGLES.max()) + 1
  ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
  pts = np.stack([128 + 90 * np.cos(ang) * rng.uniform(0.3, 1, n),
                  128 + 110 * np.sin(ang) * rng.uniform(0.3, 1, n)], 1)  # fmt: skip
  depth = rng.uniform(10.0, 11.0, n)
  shade = rng.uniform(0.25, 1.0, n)
  got = render.rasterize(pts, depth, TRIANGLES, shade, TRIANGLE_ALBEDO, 256)
  want = rasterize_numpy(pts, depth, TRIANGLES, shade, TRIANGLE_ALBEDO, 256)
  np.testing.assert_array_equal(got, want)
  assert (got.sum(-1) > 0).mean() > 0.2


def test_rasterize_hand_worked_pixels():
  """One right triangle (0,0)-(4,0)-(0,4) in a 6x6 image: pixel centres with x + y < 4 are
  inside (x + y = 4 on the hypotenuse too); with shade 1 at every vertex the colour is the
  albedo; a nearer triangle covering the same pixels wins the z-test, a farther one loses."""
  pts = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
  one = np.ones(3)
  red = np.array([[1.0, 0.0, 0.0]])
  img = render.rasterize(pts, one, np.array([[0, 1, 2]]), one, red, 6)
  ys, xs = np.mgrid[0:6, 0:6] + 0.5
  np.testing.assert_array_equal(img[..., 0] > 0, xs + ys <= 4)
  np.testing.assert_array_equal(img[xs + ys <= 4], np.tile(red, ((xs + ys <= 4).sum(), 1)))
  # the same triangle twice: green nearer (depth 0.5) wins whatever the order, red farther loses
  both = np.concatenate([pts, pts])
  depth = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
  tri = np.array([[0, 1, 2], [3, 4, 5]])
  colours = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  for order in ([0, 1], [1, 0]):
    img = render.rasterize(both, depth, tri[order], np.ones(6), colours[order], 6)
    assert (img[xs + ys <= 4] == [0.0, 1.0, 0.0]).all()


def test_to_uint8_equals_numpy_rounding_bit_for_bit():
  # the compiled conversion against NumPy's round (half to even), clip and cast: halves on both
  # sides of even and odd levels, values out of range, and a strided destination (inference
  # writes the render into channels 0-2 of a 4-channel array)
  rng = np.random.default_rng(5)
  image = rng.uniform(-0.1, 1.1, (17, 13, 3))
  image[0, :4, 0] = np.array([0.5, 1.5, 2.5, 254.5]) / 255.0
  image[1, :3, 1] = [np.nextafter(0.5 / 255.0, 1.0), -1e-300, 1.0]
  want = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(render.to_uint8(image), want)
  packed = np.full((17, 13, 4), 7, np.uint8)
  got = render.to_uint8(image, packed[..., :3])
  assert np.shares_memory(got, packed)
  np.testing.assert_array_equal(packed[..., :3], want)
  assert (packed[..., 3] == 7).all()
