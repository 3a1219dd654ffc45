"""A small software rasteriser for shape renders: triangles, z-buffer, Lambert + Gouraud.

numpy only (no OpenGL, no CUDA): preprocessing runs offline on CPU and inference draws a few
hundred frames, so a per-triangle loop over a ~150-triangle mesh is fast enough (a few ms per
256x256 frame) and bit-reproducible. Pixel (x, y) is sampled at its centre (x + 0.5, y + 0.5)
in the continuous image coordinates the projections use. Depth is interpolated linearly in
screen space (the faces are far from the camera compared to their depth, so the perspective
error is far below a pixel).
"""

from __future__ import annotations

import math

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


def to_uint8(image_hw3: np.ndarray) -> np.ndarray:
  return np.clip(np.round(image_hw3 * 255.0), 0, 255).astype(np.uint8)
