"""Labelled side-by-side panels (real | generated | shape render) for videos people look at.

Crops are as small as the model (64 px in the tiny config); each panel is scaled up to at least
`min_size` pixels (nearest-neighbour for integer factors keeps the model's pixels honest, no
smoothing that would hide artefacts) with its label in a strip above it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MIN_PANEL = 256
LABEL_HEIGHT = 24


def panel_size(crop_size: int, min_size: int = MIN_PANEL) -> int:
  """The panel side: the crop size times the smallest integer factor reaching min_size."""
  return crop_size * max(1, -(-min_size // crop_size))


def labelled_panels(
  images_hwc: Sequence[np.ndarray], labels: Sequence[str], min_size: int = MIN_PANEL
) -> np.ndarray:
  """(LABEL_HEIGHT + P, n * P, 3) uint8: the images scaled to P x P side by side, labelled."""
  if len(images_hwc) != len(labels):
    raise ValueError(f"{len(images_hwc)} images but {len(labels)} labels")
  side = panel_size(max(int(im.shape[0]) for im in images_hwc), min_size)
  out = []
  for im, label in zip(images_hwc, labels, strict=True):
    im = np.asarray(im, np.uint8)
    if im.shape[:2] != (side, side):
      im = cv2.resize(im, (side, side), interpolation=cv2.INTER_NEAREST)
    strip = np.full((LABEL_HEIGHT, side, 3), 32, np.uint8)
    cv2.putText(strip, label, (6, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    out.append(np.concatenate([strip, im], axis=0))
  return np.concatenate(out, axis=1)
