"""68-point iBUG landmark backends behind one interface.

`dlib` (default, offline): dlib's HOG face detector and the 68-point shape predictor shipped in
the `face-recognition-models` package. `fan` (optional): face-alignment's FAN, the tool the
StableFace paper used for MSI; it needs `pip install jaxtalk[fan]` and its weights, which
face-alignment fetches on first use. Both use the iBUG-68 point order (0-16 jaw, 17-26 brows,
27-35 nose, 36-47 eyes, 48-67 lips), so MSI groups mean the same points for either backend.

Boxes are float arrays `(x0, y0, x1, y1)` in pixels; landmarks are `(68, 2)` float32 (x, y).
"""

from __future__ import annotations

import functools
from typing import Protocol

import cv2
import numpy as np

from jaxtalk.errors import JaxtalkError, WeightsError

N_POINTS = 68
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
EYES = tuple(range(36, 48))
LIPS = tuple(range(48, 68))
MOUTH_CORNERS = (48, 54)


class LandmarkBackend(Protocol):
  name: str

  def detect(self, image_hwc: np.ndarray, upsample: int = 0) -> np.ndarray:
    """Face boxes `(n, 4)` in the image, largest first."""

  def landmarks(self, image_hwc: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The `(68, 2)` landmarks of the face in `box`."""


def _sort_largest_first(boxes_n4: np.ndarray) -> np.ndarray:
  if len(boxes_n4) == 0:
    return np.zeros((0, 4), np.float32)
  area = (boxes_n4[:, 2] - boxes_n4[:, 0]) * (boxes_n4[:, 3] - boxes_n4[:, 1])
  return boxes_n4[np.argsort(-area, kind="stable")].astype(np.float32)


class DlibBackend:
  """dlib HOG detector + 68-point predictor from face-recognition-models (no downloads)."""

  name = "dlib"
  PREDICT_SIZE = 256

  def __init__(self) -> None:
    import dlib

    try:
      import face_recognition_models
    except ImportError as e:
      raise WeightsError(
        "the dlib backend needs the 68-point predictor from the face-recognition-models package:"
        " pip install face-recognition-models"
      ) from e
    self._dlib = dlib
    self._detector = dlib.get_frontal_face_detector()
    self._predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

  def detect(self, image_hwc: np.ndarray, upsample: int = 0) -> np.ndarray:
    rects = self._detector(np.ascontiguousarray(image_hwc), upsample)
    boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32)
    return _sort_largest_first(boxes.reshape(-1, 4))

  def landmarks(self, image_hwc: np.ndarray, box: np.ndarray) -> np.ndarray:
    # dlib returns whole-pixel points, so raw predictions carry resolution-dependent rounding
    # noise that MSI would read as jitter. Predicting on the face resampled so its box is
    # PREDICT_SIZE pixels wide makes the rounding step a fixed fraction of the face
    # (sub-pixel in the source image) whatever the video's resolution.
    box = np.asarray(box, np.float64)
    scale = self.PREDICT_SIZE / max(box[2] - box[0], 1.0)
    margin = 0.25 * (box[2] - box[0])
    x0, y0 = box[0] - margin, box[1] - margin
    size = int(round((box[2] - box[0] + 2 * margin) * scale))
    m = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
    face = cv2.warpAffine(
      np.ascontiguousarray(image_hwc),
      m,
      (size, size),
      flags=cv2.INTER_LINEAR,
      borderMode=cv2.BORDER_REPLICATE,
    )
    fx0, fy0 = margin * scale, margin * scale
    side = self.PREDICT_SIZE
    rect = self._dlib.rectangle(
      int(round(fx0)), int(round(fy0)), int(round(fx0 + side)), int(round(fy0 + side))
    )
    shape = self._predictor(face, rect)
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    # Pixel centres: output pixel u samples source x0 + u / scale (warpAffine's convention).
    return (points / scale + np.array([x0, y0])).astype(np.float32)


FAN_HELP = (
  "face-alignment downloads the FAN (2DFAN4) and S3FD weights on first use into "
  "$TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints). On an offline machine, "
  "copy those two files there from a machine that has fetched them, or use --backend dlib."
)


class FanBackend:
  """face-alignment's FAN (the paper's landmark tool); optional, needs PyTorch and weights."""

  name = "fan"

  def __init__(self, device: str = "cpu") -> None:
    try:
      import face_alignment
    except ImportError as e:
      raise JaxtalkError(
        "the fan backend needs face-alignment (and PyTorch): pip install 'jaxtalk[fan]'; "
        "or use --backend dlib, which works offline"
      ) from e
    try:
      self._fa = face_alignment.FaceAlignment(
        face_alignment.LandmarksType.TWO_D, device=device, face_detector="sfd"
      )
    except Exception as e:  # network errors, missing or corrupt weight files
      raise WeightsError(f"face-alignment could not load its weights ({e}). {FAN_HELP}") from e

  def detect(self, image_hwc: np.ndarray, upsample: int = 0) -> np.ndarray:
    del upsample  # S3FD is multi-scale already
    faces = self._fa.face_detector.detect_from_image(np.ascontiguousarray(image_hwc))
    boxes = np.array([f[:4] for f in faces], np.float32).reshape(-1, 4)
    return _sort_largest_first(boxes)

  def landmarks(self, image_hwc: np.ndarray, box: np.ndarray) -> np.ndarray:
    out = self._fa.get_landmarks_from_image(
      np.ascontiguousarray(image_hwc), detected_faces=[np.asarray(box, np.float32)]
    )
    return np.asarray(out[0][:, :2], np.float32)


BACKENDS = {"dlib": DlibBackend, "fan": FanBackend}


@functools.cache
def get_backend(name: str) -> LandmarkBackend:
  """The named backend, built once per process: loading dlib's 100 MB predictor (or FAN's
  weights) costs over a second, which would dominate on short clips."""
  if name not in BACKENDS:
    raise JaxtalkError(f"unknown landmark backend {name!r}; choose from {', '.join(BACKENDS)}")
  return BACKENDS[name]()
