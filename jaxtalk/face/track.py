"""Face tracking across frames: detect once, then follow the previous box.

Each frame is searched first in the previous face box grown by `roi_margin` per side (cheap and
keeps the same person), then in the whole frame; when both fail, the previous box is held for
up to `hold_frames` frames (HOG misses a blurred frame now and then) before the face counts as
lost and is re-detected in later frames. Landmarks are predicted from the detector box, never
from the previous landmarks, so errors cannot accumulate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
from tqdm import tqdm

from jaxtalk.errors import NoFaceError
from jaxtalk.face.landmarks import N_POINTS, LandmarkBackend


@dataclasses.dataclass
class Track:
  """Per-frame tracking result; missing frames hold NaN landmarks and boxes."""

  landmarks_tn2: np.ndarray  # (T, 68, 2) float32, image pixels
  boxes_t4: np.ndarray  # (T, 4) float32 detector boxes (x0, y0, x1, y1)
  found_t: np.ndarray  # (T,) bool: a face was detected (or held) in the frame
  held_t: np.ndarray  # (T,) bool: the box was held from an earlier frame
  image_hw: tuple[int, int]
  backend: str

  @property
  def num_frames(self) -> int:
    return int(self.landmarks_tn2.shape[0])

  def missing_frames(self) -> np.ndarray:
    return np.flatnonzero(~self.found_t)

  def to_npz_dict(self) -> dict[str, np.ndarray]:
    return {
      "landmarks": self.landmarks_tn2,
      "boxes": self.boxes_t4,
      "found": self.found_t,
      "held": self.held_t,
      "image_hw": np.asarray(self.image_hw, np.int32),
      "backend": np.asarray(self.backend),
    }

  @classmethod
  def from_npz(cls, data) -> Track:
    return cls(
      landmarks_tn2=np.asarray(data["landmarks"], np.float32),
      boxes_t4=np.asarray(data["boxes"], np.float32),
      found_t=np.asarray(data["found"], bool),
      held_t=np.asarray(data["held"], bool),
      image_hw=tuple(int(v) for v in data["image_hw"]),
      backend=str(data["backend"]),
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  x0, y0 = max(a[0], b[0]), max(a[1], b[1])
  x1, y1 = min(a[2], b[2]), min(a[3], b[3])
  inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0


def _detect(backend: LandmarkBackend, image: np.ndarray, max_upsample: int) -> np.ndarray:
  # Try the cheapest pass first; upsampling quadruples HOG cost per level.
  for up in range(max_upsample + 1):
    boxes = backend.detect(image, up)
    if len(boxes):
      return boxes
  return boxes


def _detect_near(
  backend: LandmarkBackend, image: np.ndarray, prev: np.ndarray, margin: float, max_upsample: int
) -> np.ndarray | None:
  h, w = image.shape[:2]
  bw, bh = prev[2] - prev[0], prev[3] - prev[1]
  x0, y0 = int(max(0, prev[0] - margin * bw)), int(max(0, prev[1] - margin * bh))
  x1, y1 = int(min(w, prev[2] + margin * bw)), int(min(h, prev[3] + margin * bh))
  if x1 - x0 < 8 or y1 - y0 < 8:
    return None
  boxes = _detect(backend, image[y0:y1, x0:x1], max_upsample)
  if not len(boxes):
    return None
  boxes = boxes + np.array([x0, y0, x0, y0], np.float32)
  best = max(boxes, key=lambda b: _iou(b, prev))
  return best if _iou(best, prev) > 0.2 else None


def track_faces(
  frames: Iterable[np.ndarray],
  backend: LandmarkBackend,
  *,
  roi_margin: float = 0.5,
  upsample: int = 1,
  hold_frames: int = 5,
  redetect_every: int = 0,
  first_frames: int = 5,
  source: str = "video",
  total: int | None = None,
  progress: bool = False,
) -> Track:
  """Tracks the largest face of the first frames through `frames`.

  Raises NoFaceError (naming the frames) when no face appears in the first `first_frames`
  frames; later gaps are reported in `Track.found_t` for the caller to decide.
  """
  lms, boxes, found, held = [], [], [], []
  prev, streak, image_hw = None, 0, None
  for i, image in enumerate(tqdm(frames, total=total, disable=not progress, desc="landmarks")):
    image_hw = image.shape[:2]
    box, is_held = None, False
    if prev is not None and not (redetect_every and i % redetect_every == 0):
      box = _detect_near(backend, image, prev, roi_margin, upsample)
    if box is None:
      cand = _detect(backend, image, upsample)
      if len(cand):
        box = cand[0] if prev is None else max(cand, key=lambda b: _iou(b, prev) + 1e-6)
    if box is None and prev is not None and streak < hold_frames:
      box, is_held = prev, True
    if box is None:
      if i + 1 >= first_frames and not any(found):
        raise NoFaceError(
          f"{source}: no face found in the first {i + 1} frames (frames 0-{i}); is the face"
          " frontal and at least ~80 pixels wide?"
        )
      prev, streak = None, 0
      lms.append(np.full((N_POINTS, 2), np.nan, np.float32))
      boxes.append(np.full(4, np.nan, np.float32))
      found.append(False)
      held.append(False)
      continue
    streak = streak + 1 if is_held else 0
    prev = np.asarray(box, np.float32)
    lms.append(backend.landmarks(image, prev))
    boxes.append(prev)
    found.append(True)
    held.append(is_held)
  if image_hw is None:
    raise NoFaceError(f"{source}: no frames to track")
  if not any(found):
    raise NoFaceError(f"{source}: no face found in any of its {len(found)} frames")
  return Track(
    landmarks_tn2=np.stack(lms).astype(np.float32),
    boxes_t4=np.stack(boxes).astype(np.float32),
    found_t=np.asarray(found, bool),
    held_t=np.asarray(held, bool),
    image_hw=tuple(int(v) for v in image_hw),
    backend=backend.name,
  )
