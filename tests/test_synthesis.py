"""Windowing, seam blending, ping-pong looping and feathered pasting (no networks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jaxtalk.synthesis.paste import crop_to_frame, feathered_alpha, frame_alpha, paste
from jaxtalk.synthesis.windows import blend_stream, ping_pong, window_starts, window_weights


@pytest.mark.parametrize(
  "n, window, overlap", [(3, 4, 2), (4, 4, 2), (10, 4, 2), (23, 12, 4), (30, 8, 0)]
)
def test_windows_cover_every_frame_and_weights_sum_to_one(n, window, overlap):
  starts = window_starts(n, window, overlap)
  assert starts[0] == 0 and starts[-1] + window >= n
  assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))
  w = window_weights(starts, n, window)
  total = np.zeros(max(n, window))
  for s, wi in zip(starts, w):
    total[s : s + window] += wi
  np.testing.assert_allclose(total[:n], 1.0)


def test_blend_reproduces_a_sequence_the_windows_agree_on():
  n, window, overlap = 23, 6, 3
  seq = np.random.default_rng(0).normal(size=(n, 5))
  starts = window_starts(n, window, overlap)
  out = np.stack(list(blend_stream((seq[s : s + window] for s in starts), starts, n, window)))
  np.testing.assert_allclose(out, seq, atol=1e-12)


def test_blend_is_continuous_at_seams():
  # Each window adds its own constant offset (a renderer that disagrees between windows): the
  # blended output must not jump at a seam by more than the largest step inside a window.
  n, window, overlap = 40, 8, 4
  starts = window_starts(n, window, overlap)
  base = np.sin(np.arange(n) / 5.0)
  offsets = np.random.default_rng(1).uniform(-0.3, 0.3, len(starts))
  outs = [base[s : s + window] + o for s, o in zip(starts, offsets)]
  blended = np.array(list(blend_stream(outs, starts, n, window)))
  steps = np.abs(np.diff(blended))
  naive = np.concatenate(
    [
      o[: (starts[i + 1] - s) if i + 1 < len(starts) else None]
      for i, (s, o) in enumerate(zip(starts, outs))
    ]
  )[:n]
  # Hard cuts jump by the offset difference; cross-fading spreads it over the overlap.
  assert steps.max() < np.abs(np.diff(naive)).max()
  assert (
    steps.max()
    <= np.abs(np.diff(base)).max() + np.abs(np.diff(offsets)).max() / (overlap + 1) + 1e-9
  )


def test_blend_stream_emits_frames_before_the_end():
  n, window, overlap = 50, 6, 2
  starts = window_starts(n, window, overlap)
  consumed = []

  def outputs():
    for s in starts:
      consumed.append(s)
      yield np.zeros((window, 1))

  gen = blend_stream(outputs(), starts, n, window)
  next(gen)
  assert len(consumed) == 1  # the first frame is out after one window: streaming, not buffering


def test_ping_pong():
  np.testing.assert_array_equal(ping_pong(10, 4), [0, 1, 2, 3, 2, 1, 0, 1, 2, 3])
  np.testing.assert_array_equal(ping_pong(3, 1), [0, 0, 0])
  assert (np.abs(np.diff(ping_pong(200, 7))) == 1).all()


def test_paste_leaves_everything_outside_the_feathered_mask_untouched():
  rng = np.random.default_rng(2)
  frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
  crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  region = np.zeros((64, 64), np.uint8)
  region[30:50, 20:44] = 1
  alpha = feathered_alpha(region, grow=3, blur=7)
  assert alpha.max() == pytest.approx(1.0) and alpha[0, 0] == 0
  box = np.array([40.0, 20.0, 96.0])
  out = paste(frame, crop, alpha, box)
  # Map alpha into the frame independently: frame x -> crop u = (x - x0 + 0.5) / scale - 0.5.
  ys, xs = np.mgrid[0:120, 0:160]
  u = (xs - box[0] + 0.5) / (box[2] / 64) - 0.5
  v = (ys - box[1] + 0.5) / (box[2] / 64) - 0.5
  far = (u < 20 - 3 - 2) | (u > 44 + 3 + 2) | (v < 30 - 3 - 2) | (v > 50 + 3 + 2)
  np.testing.assert_array_equal(out[far], frame[far])
  # Deep inside the region the generated pixels win.
  cy, cx = int(box[1] + 40 * 1.5), int(box[0] + 32 * 1.5)
  assert np.abs(out[cy, cx].astype(int) - frame[cy, cx].astype(int)).sum() > 0


def test_paste_inverts_the_crop():
  from jaxtalk.face.crop import CropBox, crop_frame

  rng = np.random.default_rng(3)
  frame = cv2_smooth(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
  box = CropBox(30, 10, 96)
  crop = crop_frame(frame, box, 64)
  out = paste(np.zeros_like(frame), crop, np.ones((64, 64), np.float32), np.array([30, 10, 96]))
  inner = (slice(10 + 4, 10 + 96 - 4), slice(30 + 4, 30 + 96 - 4))
  # Down- then up-sampling a smooth image: the pasted crop lands where it was cut from.
  err = np.abs(out[inner].astype(float) - frame[inner].astype(float)).mean()
  shifted = np.abs(out[inner].astype(float) - np.roll(frame, 1, axis=1)[inner].astype(float)).mean()
  assert err < 3.0 and err < shifted


def cv2_smooth(image):
  import cv2

  return cv2.GaussianBlur(image, (0, 0), 4)


def test_paste_blend_equals_the_numpy_formula():
  """paste's compiled blend (`_blend`) gives the bits of the NumPy form it replaced:
  round(a * gen + (1 - a) * frame) in float32, half to even, where alpha > 0."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    frame = rng.integers(0, 256, (120, 160, 3), np.uint8)
    crop = rng.integers(0, 256, (64, 64, 3), np.uint8)
    alpha = np.clip(rng.uniform(-0.5, 1.5, (64, 64)), 0, 1).astype(np.float32)
    alpha[::7] = 0.5  # exact halves: a 0/255 pair blends to x.5, where rounding modes differ
    box = np.array([rng.uniform(-10, 100), rng.uniform(-10, 60), rng.uniform(30, 90)])
    gen = cv2.warpAffine(crop, crop_to_frame(box, 64), (160, 120), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    a = frame_alpha(alpha, box, (120, 160))[..., None]
    want = frame.copy()
    blended = a * gen.astype(np.float32) + (1 - a) * frame.astype(np.float32)
    inside = a[..., 0] > 0
    want[inside] = np.clip(np.round(blended[inside]), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(paste(frame, crop, alpha, box), want)
