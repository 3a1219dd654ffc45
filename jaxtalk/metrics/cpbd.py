"""CPBD: cumulative probability of blur detection (Narvekar & Karam, IEEE TIP 2011).

A no-reference sharpness score in [0, 1], higher is sharper. This follows the public python
implementation (the `cpbd` package, github.com/0x64746b/python-cpbd, itself a port of the
authors' MATLAB code) step for step, vectorised, with its quirks kept so that the numbers
match it:

1. Grey image as PIL's "L" conversion does it (ITU-R 601 luma, integer rounding), as float64.
2. Edge blocks: Canny edges (scikit-image's `canny` with its defaults: sigma 1, thresholds
   0.1 / 0.2 on the gradient magnitude of the 0-255 image, so nearly every local maximum
   counts); a 64x64 block (only whole blocks, from the top-left) is an edge block when more than
   0.2 % of its pixels are edges.
3. Edge widths (Marziliano et al.): at Sobel edges (magnitude scaled to 255, kept above its
   mean, thinned to local maxima along rows or columns) whose gradient angle (`np.gradient`,
   quantised to 45 degrees) is 0 or +-180, the width is the distance between the intensity
   extrema either side along the row (each side capped at 101 pixels). Other angles get no
   width, and a pixel whose x-gradient is 0 counts as angle 0, as in the reference.
4. Per edge block: just-noticeable width w_JNB = 5 if the block's contrast (max - min grey)
   is <= 50 else 3; each edge's probability of blur P = 1 - exp(-(w / w_JNB)^3.6).
5. Histogram of P over all edges of all edge blocks in 101 bins (P * 100 rounded half to even);
   CPBD = the fraction of edges in bins 0..63, i.e. P(P_blur <= 63 %).

An image without measurable edges scores 0. Canny is reimplemented here (scikit-image is only a
test dependency); the tests check it and the whole score against the reference.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EDGE_BLOCK_THRESHOLD = 0.002
BETA = 3.6
BLOCK = 64
JNB_CONTRAST = 50  # contrast <= 50: w_JNB = 5, else 3
MAX_MARGIN = 100
CPBD_BINS = 64  # bins 0..63 of P * 100


def grey_pil(image: np.ndarray) -> np.ndarray:
  """RGB uint8 `(H, W, 3)` -> grey float64 `(H, W)` with PIL's `convert("L")` integer maths."""
  image = np.asarray(image)
  if image.ndim == 2:
    return image.astype(np.float64)
  rgb = image[..., :3].astype(np.int64)
  grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
  return grey.astype(np.float64)


def _shift(padded: np.ndarray, di: int, dj: int) -> np.ndarray:
  """`x[i + di, j + dj]` for every pixel of the unpadded array (padded by 1 on each side)."""
  h, w = padded.shape[0] - 2, padded.shape[1] - 2
  return padded[1 + di : 1 + di + h, 1 + dj : 1 + dj + w]


def canny(
  image_hw: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2
) -> np.ndarray:
  """Canny edges as `skimage.feature.canny(image)` computes them with its defaults."""
  image = np.asarray(image_hw, np.float64)
  # Gaussian smoothing with zero padding, renormalised by the smoothed all-ones mask so the
  # border is not darkened ("bleed-over" correction).
  smooth = ndimage.gaussian_filter(image, sigma, mode="constant", cval=0.0, truncate=4.0)
  weight = ndimage.gaussian_filter(np.ones_like(image), sigma, mode="constant", truncate=4.0)
  smooth = smooth / (weight + np.finfo(np.float64).eps)
  jsobel = ndimage.sobel(smooth, axis=1)
  isobel = ndimage.sobel(smooth, axis=0)
  magnitude = isobel * isobel
  magnitude += jsobel * jsobel
  np.sqrt(magnitude, out=magnitude)

  inner = np.zeros(image.shape, bool)
  inner[1:-1, 1:-1] = True
  candidate = inner & (magnitude >= low)
  ai, aj = np.abs(isobel), np.abs(jsobel)
  up, down, right, left = isobel >= 0, isobel <= 0, jsobel >= 0, jsobel <= 0
  cond1 = (up & right) | (down & left)
  cond2 = ~cond1 & ((down & right) | (up & left))
  pad = np.pad(magnitude, 1)
  m = _shift  # short alias: m(pad, di, dj) is magnitude[i + di, j + dj]
  with np.errstate(divide="ignore", invalid="ignore"):
    r_ji, r_ij = aj / ai, ai / aj
  # Bilinear interpolation of the magnitude on both sides along the gradient, per octant pair.
  cases = (
    (cond1 & (ai > aj), r_ji, (1, 0), (1, 1), (-1, 0), (-1, -1)),
    (cond1 & ~(ai > aj), r_ij, (0, 1), (1, 1), (0, -1), (-1, -1)),
    (cond2 & (ai < aj), r_ij, (0, 1), (-1, 1), (0, -1), (1, -1)),
    (cond2 & ~(ai < aj), r_ji, (-1, 0), (-1, 1), (1, 0), (1, -1)),
  )
  maxima = np.zeros(image.shape, bool)
  for sel, w, n11, n12, n21, n22 in cases:
    sel = sel & candidate
    if not sel.any():
      continue
    ws, ms = w[sel], magnitude[sel]
    side1 = m(pad, *n12)[sel] * ws + m(pad, *n11)[sel] * (1.0 - ws) <= ms
    side2 = m(pad, *n22)[sel] * ws + m(pad, *n21)[sel] * (1.0 - ws) <= ms
    maxima[sel] = side1 & side2

  # Hysteresis: keep 8-connected chains of maxima that reach the high threshold somewhere.
  labels, count = ndimage.label(maxima, np.ones((3, 3), bool))
  if count == 0:
    return maxima
  good = np.zeros(count + 1, bool)
  good[np.unique(labels[maxima & (magnitude >= high)])] = True
  good[0] = False
  return good[labels]


def sobel_edges(image_hw: np.ndarray) -> np.ndarray:
  """The reference's Sobel edge map: magnitude above its mean, thinned (cpbd/octave.py)."""
  image = np.asarray(image_hw, np.float64)
  mag = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
  peak = mag.max()
  if not peak > 0:
    return np.zeros(image.shape, bool)
  mag *= 255.0 / peak
  mag[mag <= mag.mean()] = 0
  pad = np.pad(mag, 1)
  along_x = (mag > _shift(pad, 0, -1)) & (mag > _shift(pad, 0, 1))
  along_y = (mag > _shift(pad, -1, 0)) & (mag > _shift(pad, 1, 0))
  return along_x | along_y


def _walk(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, step: int, stop_if_up: bool):
  """Per edge pixel, the reference's `margin + 1` of the first step that leaves the slope.

  Walks from the pixel's neighbour in direction `step` (-1 left, +1 right) comparing
  `image[outer] - image[inner]`; stops at the border or when that difference is `>= 0`
  (`stop_if_up`) or `<= 0` (otherwise). A walk that never stops gives 101.
  """
  width = image.shape[1]
  result = np.full(rows.shape, MAX_MARGIN + 1, np.int64)
  open_ = np.ones(rows.shape, bool)
  for margin in range(MAX_MARGIN + 1):
    inner = cols + step * (1 + margin)
    outer = cols + step * (2 + margin)
    outside = (outer < 0) | (outer >= width)
    diff = image[rows, np.clip(outer, 0, width - 1)] - image[rows, np.clip(inner, 0, width - 1)]
    stop = outside | ((diff >= 0) if stop_if_up else (diff <= 0))
    newly = stop & open_
    result[newly] = margin + 1
    open_ &= ~stop
    if not open_.any():
      break
  return result


def edge_widths(edges_hw: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
  """Marziliano edge widths at `edges_hw` (0 where no width is measured), as the reference."""
  image = np.asarray(image_hw, np.float64)
  gy, gx = np.gradient(image)
  with np.errstate(invalid="ignore"):
    angles = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), 0.0)
  angles = np.where((gx == 0) & (gy == np.pi / 2), 90.0, angles)
  widths = np.zeros(image.shape)
  if not np.any(angles):
    return widths
  quantised = 45 * np.round(angles / 45)
  interior = np.zeros(image.shape, bool)
  interior[1:-1, 1:-1] = True
  edges = interior & np.asarray(edges_hw, bool)
  # Angle +-180: intensity falls from left to right; angle 0: it rises.
  for sel, falling in (
    (edges & (np.abs(quantised) == 180), True),
    (edges & (quantised == 0), False),
  ):
    rows, cols = np.nonzero(sel)
    if rows.size == 0:
      continue
    left = _walk(image, rows, cols, -1, stop_if_up=not falling)
    right = _walk(image, rows, cols, +1, stop_if_up=falling)
    widths[rows, cols] = left + right
  return widths


def cpbd(image: np.ndarray) -> float:
  """CPBD sharpness of one image (RGB uint8 `(H, W, 3)` or grey `(H, W)` in 0..255)."""
  grey = grey_pil(image)
  block_edges = canny(grey)
  widths = edge_widths(sobel_edges(grey), grey)
  hist = np.zeros(101)
  total = 0
  h, w = grey.shape
  for i in range(h // BLOCK):
    for j in range(w // BLOCK):
      rows, cols = slice(BLOCK * i, BLOCK * (i + 1)), slice(BLOCK * j, BLOCK * (j + 1))
      if np.count_nonzero(block_edges[rows, cols]) <= BLOCK * BLOCK * EDGE_BLOCK_THRESHOLD:
        continue
      block_w = widths[rows, cols]
      block_w = block_w[block_w != 0]
      block = grey[rows, cols]
      jnb = 5.0 if int(block.max() - block.min()) <= JNB_CONTRAST else 3.0
      prob = 1.0 - np.exp(-(np.abs(block_w / jnb) ** BETA))
      hist += np.bincount(np.round(prob * 100).astype(np.int64), minlength=101)
      total += block_w.size
  if total == 0:
    return 0.0
  return float(hist[:CPBD_BINS].sum() / total)
