"""Mouth landmark distance (LMD, Chen et al. 2018) and its normalised form NLMD (StableFace
Sec. IV-A, Table II / V).

Both videos' 68-point landmarks are put in one frame of reference: the *reference* video's face
crop, the fixed square box MSI uses (jaxtalk.metrics.msi.msi_crop_box: side = mean mouth width of
the first frames / 0.25, centred on the face), resized to `crop_size` (256) pixels. The same box
is applied to the prediction, so a prediction that is shifted or scaled against the reference
is penalised (it is not re-registered), while the resolution of the source frames is factored
out. Then, over the 20 mouth points 48-67:

  LMD  = mean over frames t and points i of || p_t,i - r_t,i ||_2   (pixels of the 256 crop)
  NLMD = LMD / crop_size = the same mean distance divided by the crop's side

NLMD is what the paper calls "the landmark distance divided by the image resolution, e.g.
256x256": the distance as a fraction of the side of the face image the generator produces.
"""

from __future__ import annotations

import numpy as np

from jaxtalk.errors import JaxtalkError
from jaxtalk.face.landmarks import LIPS
from jaxtalk.metrics.msi import msi_crop_box, normalise_landmarks


def mean_point_distance(
  pred_tn2: np.ndarray, ref_tn2: np.ndarray, points: tuple[int, ...] = LIPS
) -> float:
  """Mean Euclidean distance between corresponding points, over frames and `points`."""
  p = np.asarray(pred_tn2, np.float64)[:, list(points)]
  r = np.asarray(ref_tn2, np.float64)[:, list(points)]
  if p.shape != r.shape:
    raise ValueError(f"landmark arrays differ in shape: {p.shape} vs {r.shape}")
  if not (np.isfinite(p).all() and np.isfinite(r).all()):
    raise JaxtalkError("landmarks contain missing (NaN) frames; LMD needs a face in every frame")
  return float(np.linalg.norm(p - r, axis=-1).mean())


def landmark_distance(
  pred_tn2: np.ndarray,
  ref_tn2: np.ndarray,
  *,
  box: np.ndarray | None = None,
  points: tuple[int, ...] = LIPS,
  crop_size: int = 256,
  crop_frames: int = 5,
  mouth_ratio: float = 0.25,
) -> dict[str, float]:
  """LMD (pixels of the `crop_size` crop) and NLMD (fraction of the crop side) on the mouth.

  `pred_tn2` and `ref_tn2` are (T, 68, 2) in the same image coordinates (the reference's
  pixels). `box` is the crop `(x0, y0, side)`; by default the reference's MSI crop box.
  """
  ref = np.asarray(ref_tn2, np.float64)
  if box is None:
    box = msi_crop_box(ref, crop_frames, mouth_ratio)
  lmd = mean_point_distance(
    normalise_landmarks(pred_tn2, box, crop_size), normalise_landmarks(ref, box, crop_size), points
  )
  return {"lmd": lmd, "nlmd": lmd / crop_size, "crop_box": [float(v) for v in box]}
