"""Long sequences through a fixed-length renderer: overlapping windows, blended at the seams.

The renderer sees T frames at a time (its temporal attention is over a window). A sequence of
N frames is cut into windows of T starting every T - O frames, the last one aligned to the end;
where windows overlap, their outputs are cross-faded with linear ramps, so there is no jump at a
seam. `blend_stream` consumes window outputs in order and yields each frame as soon as no later
window can touch it: memory holds one window, however long the sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def window_starts(n: int, window: int, overlap: int) -> list[int]:
  """Start frames of the windows covering n frames (a single window when n <= window)."""
  if window < 1 or not 0 <= overlap < window:
    raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
  if n <= window:
    return [0]
  stride = window - overlap
  starts = list(range(0, n - window, stride)) + [n - window]
  return sorted(set(starts))


def window_weights(starts: list[int], n: int, window: int) -> np.ndarray:
  """(num_windows, window) blend weights; for each frame the weights of its windows sum to 1."""
  w = np.ones((len(starts), window), np.float64)
  for i in range(1, len(starts)):
    ov = starts[i - 1] + window - starts[i]  # frames shared with the previous window
    if ov > 0:
      ramp = np.arange(1, ov + 1, dtype=np.float64) / (ov + 1)
      w[i, :ov] = ramp
      w[i - 1, window - ov :] = 1.0 - ramp
  total = np.zeros(max(n, window))
  for s, wi in zip(starts, w):
    total[s : s + window] += wi
  for i, s in enumerate(starts):
    w[i] /= total[s : s + window]
  return w


def ping_pong(n: int, length: int) -> np.ndarray:
  """Indices 0..length-1 played forward then backward, repeated, for n output frames.

  A background video shorter than the audio is looped back and forth, so the head never jumps
  from the last frame to the first.
  """
  if length < 1:
    raise ValueError("empty background")
  if length == 1:
    return np.zeros(n, np.int64)
  period = 2 * (length - 1)
  k = np.arange(n) % period
  return np.where(k < length, k, period - k).astype(np.int64)


def blend_stream(
  outputs: Iterable[np.ndarray], starts: list[int], n: int, window: int
) -> Iterator[np.ndarray]:
  """Blends window outputs `(window, ...)` (in the order of `starts`) into n frames, in order."""
  weights = window_weights(starts, n, window)
  acc: dict[int, np.ndarray] = {}
  emitted = 0
  for i, (start, out) in enumerate(zip(starts, outputs, strict=True)):
    out = np.asarray(out, np.float64)
    for j in range(window):
      t = start + j
      if t >= n:
        break
      acc[t] = acc.get(t, 0.0) + weights[i, j] * out[j]
    done_until = starts[i + 1] if i + 1 < len(starts) else n
    while emitted < done_until:
      yield acc.pop(emitted)
      emitted += 1
