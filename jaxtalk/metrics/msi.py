"""Motion Stability Index (StableFace, Sec. III-D, Eq. 2-4): the reference implementation.

Given landmarks `Z_t` (T, N, 2) of a video:

1. Crop normalisation. One fixed square box per video from its first `crop_frames` frames:
   side = mean mouth width (|p54 - p48|) / `mouth_ratio` (0.25), centred on the mean of all 68
   points; coordinates are mapped into that box rescaled to `crop_size` (256) pixels. MSI is
   translation invariant, so only the scale of this box matters for the number; its position
   matters for pictures (the vertical slice).
2. Eq. 2: v_t = Z_{t+1} - Z_t and a_t = v_t - v_{t-1}, i.e. the second difference
   a_t = Z_{t+1} - 2 Z_t + Z_{t-1} at the T - 2 interior frames. The paper's boundary
   convention (v_0 = v_{T+1} = 0) would turn the first and last velocities into accelerations and
   penalise any steady drift as jitter; a constant-velocity track must be perfectly stable, so
   only interior accelerations are used. This is also why a video needs at least 4 frames: the
   variance of n = T - 2 accelerations with the 1/(n - 1) normalisation of Eq. 3 needs n >= 2.
3. Eq. 3: per point i, sigma_i = 1/(n - 1) * sum_t ||a_t^i - mean_t a^i||^2, the squared
   deviation summed over x and y.
4. Eq. 4: MSI = 1/K * sum_k 1 / (sigma_k + eps) over the K points of a group, eps = 1e-5;
   groups: lip (48-67), jaw (0-16), all (0-67).

Higher is more stable; a perfectly smooth trajectory scores 1/eps = 1e5.
"""

from __future__ import annotations

import numpy as np

from jaxtalk.errors import JaxtalkError
from jaxtalk.face.landmarks import JAW, LIPS, MOUTH_CORNERS

GROUPS: dict[str, tuple[int, ...]] = {"lip": LIPS, "jaw": JAW, "all": tuple(range(68))}
MIN_FRAMES = 4


def msi_crop_box(
  landmarks_tn2: np.ndarray, crop_frames: int = 5, mouth_ratio: float = 0.25
) -> np.ndarray:
  """The fixed square crop `(x0, y0, side)` in image pixels (StableFace Sec. III-D)."""
  first = np.asarray(landmarks_tn2[:crop_frames], np.float64)
  if not np.isfinite(first).all():
    raise JaxtalkError(f"landmarks of the first {crop_frames} frames are incomplete")
  mouth_width = np.linalg.norm(first[:, MOUTH_CORNERS[1]] - first[:, MOUTH_CORNERS[0]], axis=-1)
  side = float(mouth_width.mean()) / mouth_ratio
  if not side > 0:
    raise JaxtalkError("mouth width is zero in the first frames; landmarks are degenerate")
  cx, cy = first.reshape(-1, 2).mean(axis=0)
  return np.array([cx - side / 2, cy - side / 2, side], np.float64)


def normalise_landmarks(
  landmarks_tn2: np.ndarray, box: np.ndarray, crop_size: int = 256
) -> np.ndarray:
  """Landmarks in the coordinates of the crop box resized to `crop_size` x `crop_size`."""
  x0, y0, side = box
  return (np.asarray(landmarks_tn2, np.float64) - np.array([x0, y0])) * (crop_size / side)


def acceleration(landmarks_tn2: np.ndarray) -> np.ndarray:
  """Eq. 2 at the interior frames: `(T - 2, N, 2)`."""
  z = np.asarray(landmarks_tn2, np.float64)
  velocity = z[1:] - z[:-1]
  return velocity[1:] - velocity[:-1]


def acceleration_variance(landmarks_tn2: np.ndarray) -> np.ndarray:
  """Eq. 3 per point: `(N,)`, squared deviation summed over x and y, 1/(n - 1)."""
  z = np.asarray(landmarks_tn2)
  if z.ndim != 3 or z.shape[-1] != 2:
    raise ValueError(f"landmarks must be (T, N, 2), got {z.shape}")
  if z.shape[0] < MIN_FRAMES:
    raise JaxtalkError(f"MSI needs at least {MIN_FRAMES} frames, got {z.shape[0]}")
  if not np.isfinite(z).all():
    raise JaxtalkError("landmarks contain missing (NaN) frames")
  a = acceleration(z)
  dev = a - a.mean(axis=0, keepdims=True)
  return np.sum(dev**2, axis=(0, 2)) / (a.shape[0] - 1)


def msi_from_variance(variance_n: np.ndarray, eps: float = 1e-5) -> float:
  """Eq. 4 over the given points."""
  return float(np.mean(1.0 / (np.asarray(variance_n, np.float64) + eps)))


def msi(
  landmarks_tn2: np.ndarray,
  *,
  eps: float = 1e-5,
  crop_frames: int = 5,
  mouth_ratio: float = 0.25,
  crop_size: int = 256,
  normalise: bool = True,
) -> dict[str, float]:
  """MSI for lip, jaw and all points of one video's 68-point landmarks (image pixels)."""
  z = np.asarray(landmarks_tn2, np.float64)
  if normalise:
    z = normalise_landmarks(z, msi_crop_box(z, crop_frames, mouth_ratio), crop_size)
  var = acceleration_variance(z)
  return {name: msi_from_variance(var[list(idx)], eps) for name, idx in GROUPS.items()}


def msi_from_config(landmarks_tn2: np.ndarray, msi_cfg) -> dict[str, float]:
  return msi(
    landmarks_tn2,
    eps=float(msi_cfg.eps),
    crop_frames=int(msi_cfg.crop_frames),
    mouth_ratio=float(msi_cfg.mouth_ratio),
    crop_size=int(msi_cfg.crop_size),
  )
