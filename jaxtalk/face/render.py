"""A small software rasteriser for shape renders: triangles, z-buffer, Lambert + Gouraud.

CPU only (no OpenGL, no CUDA): a per-triangle loop over a ~150-triangle mesh, compiled with
numba (already in the dependencies through librosa, now named): ~2 ms for a face filling a
256x256 frame on the 2-core dev CPU, and bit-reproducible. Pixel (x, y) is sampled at its
centre (x + 0.5, y + 0.5) in the continuous image coordinates the projections use. Depth is
interpolated linearly in screen space (the faces are far from the camera compared to their
depth, so the perspective error is far below a pixel).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Light from the camera, a little above and to the left, so the face reads as a relief
# (a light straight from the camera makes every frontal triangle equally bright).
# Unit vector from the surface towards the light, in camera coordinates (x right, y down, z away).
TO_LIGHT = np.array([-0.3, -0.45, -1.0]) / np.linalg.norm([-0.3, -0.45, -1.0])
AMBIENT = 0.25
DIFFUSE = 0.75


def vertex_normals(vertices_n3: np.ndarray, triangles_f3: np.ndarray) -> np.ndarray:
  """Area-weighted unit vertex normals `(n, 3)` (triangles wound so normals face the camera)."""
  v = vertices_n3[triangles_f3]  # (F, 3, 3)
  face = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])  # length = 2 * area
  normals = np.zeros_like(vertices_n3)
  for k in range(3):
    np.add.at(normals, triangles_f3[:, k], face)
  norm = np.linalg.norm(normals, axis=1, keepdims=True)
  return normals / np.maximum(norm, 1e-12)


def lambert(normals_n3: np.ndarray) -> np.ndarray:
  """Per-vertex intensity in [0, 1]; two-sided, so a fold-over triangle is never black."""
  return AMBIENT + DIFFUSE * np.abs(normals_n3 @ TO_LIGHT)


def rasterize(
  points_n2: np.ndarray,
  depth_n: np.ndarray,
  triangles_f3: np.ndarray,
  shade_n: np.ndarray,
  albedo_f3: np.ndarray,
  size: int,
) -> np.ndarray:
  """Draws triangles into a `(size, size, 3)` float image (0 where nothing is drawn).

  points_n2: vertices in continuous pixel coordinates; depth_n: distance from the camera
  (smaller wins); shade_n: per-vertex light intensity, interpolated across each triangle
  (Gouraud); albedo_f3: the colour of each triangle, multiplied by the shade.
  """
  image = np.zeros((size, size, 3), np.float64)
  zbuf = np.full((size, size), np.inf)
  _draw(
    np.ascontiguousarray(points_n2, np.float64),
    np.ascontiguousarray(depth_n, np.float64),
    np.ascontiguousarray(triangles_f3, np.int64),
    np.ascontiguousarray(shade_n, np.float64),
    np.ascontiguousarray(albedo_f3, np.float64),
    image,
    zbuf,
  )
  return image


# Compiled once per machine (cache=True), and without the GIL, so inference's host threads draw
# frames in parallel. It was a NumPy loop over triangles (~150 small array operations per frame,
# 14 ms at 256x256 on the 2-core dev CPU, all under the GIL): the bound of the whole inference
# pipeline on a GPU. The arithmetic is that loop's, pixel by pixel in the same order, and gives
# the same bits (tests/test_render.py keeps the NumPy version as the reference).
@numba.njit(cache=True, nogil=True)
def _draw(pts, depth, triangles, shade, albedo, image, zbuf):  # pragma: no cover - compiled
  size = image.shape[0]
  for f in range(triangles.shape[0]):
    a, b, c = triangles[f, 0], triangles[f, 1], triangles[f, 2]
    xa, ya = pts[a, 0], pts[a, 1]
    xb, yb = pts[b, 0], pts[b, 1]
    xc, yc = pts[c, 0], pts[c, 1]
    area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    if abs(area) < 1e-9:
      continue
    # Pixels whose centres can fall inside the triangle.
    x0 = max(math.floor(min(xa, xb, xc) - 0.5), 0)
    x1 = min(math.ceil(max(xa, xb, xc) - 0.5), size - 1)
    y0 = max(math.floor(min(ya, yb, yc) - 0.5), 0)
    y1 = min(math.ceil(max(ya, yb, yc) - 0.5), size - 1)
    # Barycentric weights from edge functions, normalised by the signed area (either winding).
    inv = 1.0 / area
    for y in range(y0, y1 + 1):
      py = y + 0.5
      for x in range(x0, x1 + 1):
        px = x + 0.5
        wa = ((yb - yc) * inv * (px - xb)) + ((xc - xb) * inv * (py - yb))
        wb = ((yc - ya) * inv * (px - xc)) + ((xa - xc) * inv * (py - yc))
        wc = 1.0 - wa - wb
        if wa < 0 or wb < 0 or wc < 0:
          continue
        z = wa * depth[a] + wb * depth[b] + wc * depth[c]
        if z < zbuf[y, x]:
          zbuf[y, x] = z
          light = wa * shade[a] + wb * shade[b] + wc * shade[c]
          for k in range(3):
            image[y, x, k] = light * albedo[f, k]


def to_uint8(image_hw3: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
  """round(image x 255) clipped to 0 .. 255, as uint8, into `out` (any strides) when given.
  One compiled pass without the GIL (as NumPy: four passes and three temporaries under it, for
  every frame inference draws); the same float64 arithmetic, rounded half to even as np.round."""
  if out is None:
    out = np.empty(image_hw3.shape, np.uint8)
  _to_uint8(image_hw3, out)
  return out


@numba.njit(cache=True, nogil=True)
def _to_uint8(image, out):  # pragma: no cover - compiled
  for y in range(image.shape[0]):
    for x in range(image.shape[1]):
      for k in range(image.shape[2]):
        out[y, x, k] = np.uint8(min(max(np.rint(image[y, x, k] * 255.0), 0.0), 255.0))
