"""Full-reference image metrics: SSIM (Wang et al. 2004) and PSNR, in numpy/scipy.

SSIM is the Gaussian-window SSIM of Wang et al.: an 11x11 Gaussian window (sigma 1.5, cut at 3.5
sigma), K1 = 0.01, K2 = 0.03, L = 255 (uint8 range), population (not sample) covariances, and
the mean of the SSIM map after cropping the (window - 1) / 2 = 5 pixel border that the window's
reflection padding touches. Colour images are scored per channel (RGB) and the channel scores
averaged, as `skimage.metrics.structural_similarity(..., channel_axis=-1)` does and as the
talking-face papers that report SSIM on colour frames compute it; it is not the SSIM of the
luminance Y. The numbers equal scikit-image's with `gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255` (tested), but scikit-image is not needed at run time.

PSNR is 10 log10(255^2 / MSE) over every pixel and channel; identical images give +inf.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's window: 2 * int(3.5 * 1.5 + 0.5) + 1 = 11 taps
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_float(image: np.ndarray) -> np.ndarray:
  return np.asarray(image, dtype=np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
  if a.shape != b.shape:
    raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")


def ssim_map(
  image_a_hw: np.ndarray,
  image_b_hw: np.ndarray,
  *,
  data_range: float = DATA_RANGE,
  sigma: float = SSIM_SIGMA,
) -> np.ndarray:
  """The per-pixel SSIM map of two single-channel images (border not cropped)."""
  a, b = _as_float(image_a_hw), _as_float(image_b_hw)
  _check_pair(a, b)

  def blur(x: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a * mu_a
  var_b = blur(b * b) - mu_b * mu_b
  cov_ab = blur(a * b) - mu_a * mu_b
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2
  num = (2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)
  den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
  return num / den


def ssim(
  image_a: np.ndarray,
  image_b: np.ndarray,
  *,
  data_range: float = DATA_RANGE,
  sigma: float = SSIM_SIGMA,
) -> float:
  """Mean SSIM of two images `(H, W)` or `(H, W, C)`; colour: mean over channels."""
  a, b = np.asarray(image_a), np.asarray(image_b)
  _check_pair(a, b)
  if a.ndim == 2:
    a, b = a[..., None], b[..., None]
  if a.ndim != 3:
    raise ValueError(f"images must be (H, W) or (H, W, C), got {a.shape}")
  pad = int(SSIM_TRUNCATE * sigma + 0.5)
  if min(a.shape[:2]) < 2 * pad + 1:
    raise ValueError(f"images of {a.shape[:2]} are smaller than the {2 * pad + 1}-pixel window")
  scores = []
  for ch in range(a.shape[-1]):
    s = ssim_map(a[..., ch], b[..., ch], data_range=data_range, sigma=sigma)
    scores.append(s[pad:-pad, pad:-pad].mean(dtype=np.float64))
  return float(np.mean(scores))


def psnr(image_a: np.ndarray, image_b: np.ndarray, *, data_range: float = DATA_RANGE) -> float:
  """PSNR in dB over all pixels and channels; +inf for identical images."""
  a, b = _as_float(image_a), _as_float(image_b)
  _check_pair(a, b)
  mse = float(np.mean((a - b) ** 2))
  if mse == 0.0:
    return float("inf")
  return float(10.0 * np.log10(data_range**2 / mse))
