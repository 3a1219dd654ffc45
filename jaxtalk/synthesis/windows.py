"""Long sequences through a fixed-length renderer: overlapping windows, blended at the seams.

The renderer sees T frames at a time (its temporal attention is over a window). A sequence of
N frames is cut into windows of T starting every T - O frames, the last one aligned to the end.
Where windows overlap, two joins (`SEAMS`):

  centre     each frame is taken whole from the one window in which it lies farthest from that
             window's edges (ties: the earlier window). Two renders are never mixed, so a mouth
             that differs between two windows cannot appear twice (ghosting); every frame still
             has at least O/2 frames of context on both sides inside its window. The frame is
             the window's output as it is (no arithmetic, its dtype kept).
  crossfade  linear ramps over the overlap (the first version): no jump at a seam, but where
             the two windows' renders differ the blend shows both (ghosting). Right for
             parameters (expressions), wrong for images.
 `blend_stream` consumes window outputs in order and yields each frame as soon as no later
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


SEAMS = ("centre", "crossfade")


def window_weights(starts: list[int], n: int, window: int, seam: str = "crossfade") -> np.ndarray:
  """(num_windows, window) blend weights; for each frame the weights of its windows sum to 1
  (one-hot with seam="centre")."""
  if seam not in SEAMS:
    raise ValueError(f"infer.seam must be one of {SEAMS}, got {seam!r}")
  if seam == "centre":
    w = np.zeros((len(starts), window), np.float64)
    for t in range(max(n, 1)):
      best, best_d = 0, -1
      for i, s in enumerate(starts):
        if s <= t < s + window:
          d = min(t - s, s + window - 1 - t)  # distance to the nearer window edge
          if d > best_d:
            best, best_d = i, d
      w[best, t - starts[best]] = 1.0
    # frames past n (a single window padded beyond a short sequence) are never emitted
    return w
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


def take_window(x, start: int, window: int) -> np.ndarray:
  """Frames start .. start+window-1 of an array or lazy source, edge-padded past the end (the
  padding's outputs fall past n, where `blend_stream` drops them)."""
  part = np.asarray(x[start : start + window])
  if len(part) < window:
    part = np.concatenate([part, np.repeat(part[-1:], window - len(part), 0)])
  return part


def blend_stream(
  outputs: Iterable[np.ndarray], starts: list[int], n: int, window: int, seam: str = "crossfade"
) -> Iterator[np.ndarray]:
  """Joins window outputs `(window, ...)` (in the order of `starts`) into n frames, in order:
  float64 weighted sums, or with seam="centre" each frame as its window gave it (a view)."""
  weights = window_weights(starts, n, window, seam)
  acc: dict[int, np.ndarray] = {}
  emitted = 0
  for i, (start, out) in enumerate(zip(starts, outputs, strict=True)):
    if seam == "centre":
      # one-hot weights: the sum would be 1.0 * x + 0.0 * y = x, so take x as it is (inference
      # hands on ~100 frames a second from one thread: float copies of them were its largest cost)
      out = np.asarray(out)
      for j in np.flatnonzero(weights[i]):
        acc[start + int(j)] = out[j]
    else:
      out = np.asarray(out, np.float64)
      for j in range(min(window, n - start)):
        t = start + j
        acc[t] = acc.get(t, 0.0) + weights[i, j] * out[j]
    done_until = starts[i + 1] if i + 1 < len(starts) else n
    while emitted < done_until:
      yield acc.pop(emitted)
      emitted += 1
