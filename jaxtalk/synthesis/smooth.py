"""Eq. 1's weighted sum of neighbouring shape renders for one output frame, on the host.

Inference smooths the shape renders over the whole sequence frame by frame (`infer.smooth_lazy`)
on its host threads, beside the renderer. As NumPy (a cast, a product and a sum per tap, five
taps) it held the GIL for ~6 % of the host's GIL time per frame (`scripts/host_gil_share.py`),
and on a GPU machine the GIL bounds the pipeline (docs/benchmarks.md, issue 10): here it is one
compiled call without the GIL. The arithmetic is NumPy's, in the same order: each tap's float32
product added to a float32 sum that starts at 0 (numba contracts no FMA without fastmath), so
the frames are the same bits (tests/test_stability.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _weighted_sum(frames, weights, out):  # pragma: no cover - compiled
  for y in range(out.shape[0]):
    for x in range(out.shape[1]):
      for c in range(out.shape[2]):
        acc = np.float32(0.0)
        for k in range(len(frames)):
          acc += weights[k] * np.float32(frames[k][y, x, c])
        out[y, x, c] = acc


def weighted_frames(frames_khwc: Sequence[np.ndarray], weights_k: np.ndarray) -> np.ndarray:
  """float32 sum over k of float32(weights[k]) * float32(frames[k]), accumulated in k order;
  the frames (H, W, C), all of one dtype and memory layout (views of one kind)."""
  out = np.empty(np.shape(frames_khwc[0]), np.float32)
  _weighted_sum(tuple(frames_khwc), np.asarray(weights_k, np.float32), out)
  return out
