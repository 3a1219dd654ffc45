"""jaxtalk.metrics.articulation against independent computations: hand-placed landmarks,
numpy's std/corrcoef, constructed lags, and a real GRID clip with shifted audio."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.cache import video_track
from jaxtalk.io.audio import read_audio
from jaxtalk.metrics.articulation import (
  ArticulationError,
  articulation,
  audio_envelope,
  mouth_aperture,
  sync_offset,
)

FPS = 25.0
SR = 16000


def _hand_mouth() -> np.ndarray:
  """68 points, all at (30, 50) but for the mouth corners and three inner-lip pairs."""
  lm = np.full((68, 2), [30.0, 50.0])
  lm[48], lm[54] = (10, 50), (50, 50)  # width 40
  lm[61], lm[67] = (20, 45), (20, 55)  # gap 10
  lm[62], lm[66] = (30, 44), (30, 56)  # gap 12
  lm[63], lm[65] = (40, 45), (43, 49)  # gap 5 (a 3-4-5 triangle)
  return lm


def test_mouth_aperture_hand_worked():
  lm = _hand_mouth()
  # (10 + 12 + 5) / 3 / 40 = 0.225
  np.testing.assert_allclose(mouth_aperture(lm[None]), [0.225], atol=1e-12)
  # Scale- and translation-free; a closed mouth gives 0; no face (NaN) gives NaN.
  moved = lm * 2.5 + [100.0, -7.0]
  closed = lm.copy()
  closed[[65, 66, 67]] = closed[[63, 62, 61]]
  got = mouth_aperture(np.stack([moved, closed, np.full((68, 2), np.nan)]))
  np.testing.assert_allclose(got[:2], [0.225, 0.0], atol=1e-12)
  assert np.isnan(got[2])


def test_mouth_aperture_rejects_wrong_shape():
  with pytest.raises(ArticulationError, match=r"\(T, 68, 2\)"):
    mouth_aperture(np.zeros((5, 20, 2)))


def test_articulation_against_numpy():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=200)
  pred = 0.4 * ref + 0.3 * rng.normal(size=200) + 5.0
  got = articulation(pred, ref)
  np.testing.assert_allclose(got["aperture_ratio"], np.std(pred) / np.std(ref), rtol=1e-12)
  np.testing.assert_allclose(got["aperture_corr"], np.corrcoef(pred, ref)[0, 1], rtol=1e-12)
  # NaN frames (no face) are dropped from both series.
  pred_nan, ref_nan = pred.copy(), ref.copy()
  pred_nan[[3, 50]] = np.nan
  ref_nan[7] = np.nan
  keep = np.ones(200, bool)
  keep[[3, 50, 7]] = False
  got = articulation(pred_nan, ref_nan)
  np.testing.assert_allclose(got["aperture_corr"], np.corrcoef(pred[keep], ref[keep])[0, 1])
  np.testing.assert_allclose(got["aperture_ratio"], np.std(pred[keep]) / np.std(ref[keep]))


def test_articulation_constant_series():
  ref = np.sin(np.arange(50) / 3.0)
  frozen = articulation(np.full(50, 0.2), ref)
  assert frozen == {"aperture_ratio": 0.0, "aperture_corr": 0.0}
  flat_ref = articulation(ref, np.full(50, 0.2))
  assert flat_ref["aperture_corr"] == 0.0 and np.isnan(flat_ref["aperture_ratio"])


def test_articulation_unequal_lengths_is_a_clear_error():
  with pytest.raises(JaxtalkError, match="equal length.*10 and 11"):
    articulation(np.zeros(10), np.zeros(11))


def test_audio_envelope_tone_burst():
  # A 1 kHz tone of amplitude 0.5 during frames 10..19 (0.4-0.8 s), silence elsewhere.
  t = np.arange(int(1.2 * SR)) / SR
  x = np.where((t >= 0.4) & (t < 0.8), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
  env = audio_envelope(x, SR, FPS, 30)
  # Inside the burst: log RMS of the sine = log(0.5 / sqrt(2)) (the band passes 1 kHz at ~unity).
  np.testing.assert_allclose(env[11:19], np.log(0.5 / np.sqrt(2)), atol=0.05)
  assert env[:8].max() < np.log(0.5 / np.sqrt(2)) - 4  # silence is far below (>= 35 dB)
  assert env[22:].max() < np.log(0.5 / np.sqrt(2)) - 4
  # A 100 Hz tone of the same amplitude is outside the speech band: much quieter.
  hum = audio_envelope(0.5 * np.sin(2 * np.pi * 100 * t), SR, FPS, 30)
  assert hum[5:25].max() < np.log(0.5 / np.sqrt(2)) - 2


@pytest.mark.parametrize("k", [-4, 0, 2, 7])
def test_sync_offset_constructed_lag(k):
  # A smooth random "loudness" and a mouth that follows it k frames later: a[t] = e[t - k].
  rng = np.random.default_rng(1)
  e_long = np.convolve(rng.normal(size=400), np.hanning(5), mode="same")
  e = e_long[20:320]
  a = 0.05 * e_long[20 - k : 320 - k] + 0.3
  offset, conf = sync_offset(a, e, max_shift=10)
  assert offset == k
  assert conf > 0.5
  # Unrelated noise: low confidence.
  _, conf_noise = sync_offset(rng.normal(size=300), e, max_shift=10)
  assert conf_noise < conf / 2


def test_sync_offset_errors():
  with pytest.raises(ArticulationError, match="equal length"):
    sync_offset(np.zeros(100), np.zeros(99))
  with pytest.raises(ArticulationError, match="at least 28 frames"):
    sync_offset(np.zeros(20), np.zeros(20), max_shift=10)


def _shift_audio(samples: np.ndarray, k: int) -> np.ndarray:
  n = int(round(k * SR / FPS))
  if n >= 0:
    return np.concatenate([np.zeros(n, samples.dtype), samples])[: samples.size]
  return np.concatenate([samples[-n:], np.zeros(-n, samples.dtype)])


def test_sync_offset_real_grid_clip(grid_clip, tmp_path):
  track = video_track(grid_clip, "dlib", load_config("grid").track, cache_dir=tmp_path)
  aperture_t = mouth_aperture(track.landmarks_tn2)
  samples = read_audio(grid_clip, SR)
  env = audio_envelope(samples, SR, FPS, aperture_t.size)
  offset, conf = sync_offset(aperture_t, env, max_shift=5)
  assert abs(offset) <= 1, (offset, conf)
  assert conf > 0.2
  # Delaying the audio by k frames makes the mouth move k frames earlier relative to it.
  for k in (3, -3, 5, -5):
    env_k = audio_envelope(_shift_audio(samples, k), SR, FPS, aperture_t.size)
    moved, _ = sync_offset(aperture_t, env_k, max_shift=10)
    assert abs((moved - offset) - (-k)) <= 1, (k, offset, moved)
  # A frozen mouth has no sync: articulation exposes it.
  assert (
    articulation(np.full_like(aperture_t, aperture_t.mean()), aperture_t)["aperture_ratio"] == 0
  )
