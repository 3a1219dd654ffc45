"""Pasting the generated face crop back into the full-resolution frame without a visible box.

The crop was cut from the frame with one fixed square box per clip (x0, y0, side). The generated
crop is warped back with the inverse transform and blended under a feathered alpha: the face
region grown by a margin and blurred, so the transition is gradual. Pixels where alpha is zero
are copied from the original frame untouched.

The crop is upsampled bicubically, the alpha bilinearly (so its support, the region that
changes, stays where the linear ramp puts it). Bicubic because the mouth's detail is what a
crop smaller than the face's own box loses first: on the real held-out Ted Lieu frames, cut to
128² and pasted back, the mouth keeps 34 % of its Laplacian variance with bilinear upsampling
and 39 % with bicubic (at 256²: 50 % vs 65 %; `python scripts/sharpness_ceiling.py VIDEO`).
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from jaxtalk.face.mask import rasterize_polygon


def feathered_alpha(region_hw: np.ndarray, grow: int, blur: int) -> np.ndarray:
  """float32 alpha in [0, 1]: the region dilated by `grow` px, then box-blurred `blur` px wide."""
  region = (np.asarray(region_hw) > 0).astype(np.uint8)
  if grow > 0:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    region = cv2.dilate(region, kernel)
  alpha = region.astype(np.float32)
  if blur > 1:
    # Erode first by half the blur so the blurred edge stays inside the grown region.
    half = blur // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * half + 1, 2 * half + 1))
    alpha = cv2.erode(region, kernel).astype(np.float32)
    alpha = cv2.blur(alpha, (blur, blur), borderType=cv2.BORDER_CONSTANT)
  return np.clip(alpha, 0.0, 1.0)


def crop_to_frame(box: np.ndarray, size: int) -> np.ndarray:
  """The 2x3 affine map from crop pixels to frame pixels, the inverse of
  `jaxtalk.face.crop.crop_frame` (a resize of source pixels x0 .. x0+side-1): crop pixel u's
  centre is frame x = x0 + (u + 0.5) * scale - 0.5."""
  x0, y0, side = (float(v) for v in box)
  scale = side / size
  shift = 0.5 * (scale - 1.0)
  return np.array([[scale, 0.0, x0 + shift], [0.0, scale, y0 + shift]], np.float64)


def frame_alpha(alpha_ss: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
  """The crop's alpha in frame pixels (0 outside the crop)."""
  h, w = frame_hw
  m = crop_to_frame(box, alpha_ss.shape[0])
  return cv2.warpAffine(alpha_ss.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)  # fmt: skip


def paste(
  frame_hwc: np.ndarray, crop_hwc: np.ndarray, alpha_hw: np.ndarray, box: np.ndarray
) -> np.ndarray:
  """The frame with `crop` blended in by `alpha`; `box` = (x0, y0, side) as in `CropBox`."""
  h, w = frame_hwc.shape[:2]
  m = crop_to_frame(box, crop_hwc.shape[0])
  gen = cv2.warpAffine(crop_hwc, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
  a = frame_alpha(alpha_hw, box, (h, w))
  out = np.ascontiguousarray(frame_hwc, np.uint8).copy()
  _blend(a, np.ascontiguousarray(gen, np.uint8), out)
  return out


def polygon_alpha(polygon_p2: np.ndarray, size: int, grow: int, blur: int) -> np.ndarray:
  """float32 alpha in [0, 1] of a polygon region, a continuous function of its vertices.

  The same region as `feathered_alpha` of the rasterised polygon (grown by `grow` px, then a
  linear ramp `blur` px wide, ending where the grown region ends), but computed from each pixel
  centre's signed distance d to the polygon (negative inside):

      alpha = clip(0.5 + (grow - blur // 2 - d) / blur, 0, 1)

  A rasterised mask turns a sub-pixel move of the polygon into whole pixels switching on or off
  (and dilation spreads them), so a paste region built from it flickers on a still head; this
  one moves exactly as much as the polygon does. Pixels at d >= grow - blur // 2 + blur / 2 get
  alpha 0 exactly, so `paste` leaves them bit-identical to the background.
  """
  poly = np.ascontiguousarray(polygon_p2, np.float64)
  alpha = np.zeros((size, size), np.float32)
  core = grow - blur // 2  # alpha = clip(0.5 + (core - d) / blur): 0 where d >= core + blur / 2
  # Only pixels within that reach of the polygon can be nonzero: the distances are computed in
  # the polygon's bounding box grown by it (a small part of the crop), pixel by pixel with a
  # running minimum over the edges, in a compiled kernel without the GIL (`_distance2`): ~10x
  # faster at 256² than the whole crop, so the paste keeps up with an accelerator's renderer;
  # same formula, values equal to float rounding (tests/test_stability.py checks against the
  # whole-crop brute force).
  reach = core + max(blur, 1) / 2 + 1
  lo = np.maximum(np.floor(poly.min(0) - reach), 0).astype(int)
  hi = np.minimum(np.ceil(poly.max(0) + reach) + 1, size).astype(int)
  if (hi <= lo).any():
    return alpha
  inside = rasterize_polygon(polygon_p2, size)
  _region_alpha(poly, int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]), inside, core, max(blur, 1),
                alpha)  # fmt: skip
  return alpha


# Without the GIL: inference pastes on many threads. As a NumPy loop over the edges (a dozen
# array temporaries per edge) it held the GIL for ~35 % of the host's GIL time, the largest
# share (py-spy --gil, scripts/host_gil_share.py; the GIL bounds inference on a GPU machine,
# docs/benchmarks.md).
@numba.njit(cache=True, nogil=True)
def _distance2(poly, x0, y0, d2):  # pragma: no cover - compiled
  """d2[r, c] = the squared distance from pixel centre (x0 + c + 0.5, y0 + r + 0.5) to the
  closed polygon's nearest edge (segment), float64."""
  p = poly.shape[0]
  for r in range(d2.shape[0]):
    py = y0 + r + 0.5
    for c in range(d2.shape[1]):
      px = x0 + c + 0.5
      best = np.inf
      for i in range(p):
        ax, ay = poly[i, 0], poly[i, 1]
        j = (i + 1) % p
        ex, ey = poly[j, 0] - ax, poly[j, 1] - ay
        t = ((px - ax) * ex + (py - ay) * ey) / max(ex * ex + ey * ey, 1e-12)
        t = min(max(t, 0.0), 1.0)
        dx, dy = px - (ax + t * ex), py - (ay + t * ey)
        best = min(best, dx * dx + dy * dy)
      d2[r, c] = best


# The rest of polygon_alpha in the same kernel call: as NumPy over the box (sqrt, sign, ramp,
# clip: a temporary each) it still held the GIL for ~10 % of the host's GIL time. The same float64
# arithmetic per pixel, cast to float32 as the assignment of NumPy's result did.
@numba.njit(cache=True, nogil=True)
def _region_alpha(poly, x0, y0, x1, y1, inside, core, blur, alpha):  # pragma: no cover - compiled
  """alpha[y0:y1, x0:x1] = clip(0.5 + (core - d) / blur, 0, 1), d the signed distance from each
  pixel centre to the polygon (negative where `inside` is set)."""
  d2 = np.empty((y1 - y0, x1 - x0), np.float64)
  _distance2(poly, x0, y0, d2)
  for r in range(y1 - y0):
    for c in range(x1 - x0):
      dist = np.sqrt(d2[r, c])
      d = -dist if inside[y0 + r, x0 + c] else dist
      part = 0.5 + (core - d) / blur
      alpha[y0 + r, x0 + c] = min(max(part, 0.0), 1.0)


# Without the GIL, as _distance2: NumPy's boolean-mask gather and scatter of the blended pixels
# held it (~10 % of the host's GIL time). Same float32 arithmetic in the same order as
# `a * gen + (1 - a) * frame`, rounded half to even as np.round, then clipped.
@numba.njit(cache=True, nogil=True)
def _blend(a, gen, out):  # pragma: no cover - compiled
  """out = round(a * gen + (1 - a) * out) where a > 0 (uint8 images, float32 alpha)."""
  one = np.float32(1.0)
  for y in range(out.shape[0]):
    for x in range(out.shape[1]):
      w = a[y, x]
      if w > 0:
        for k in range(out.shape[2]):
          v = w * np.float32(gen[y, x, k]) + (one - w) * np.float32(out[y, x, k])
          out[y, x, k] = min(max(np.rint(v), np.float32(0.0)), np.float32(255.0))
