"""Mouth articulation and a weight-free lip-sync offset (pure NumPy/SciPy).

A frozen mouth is perfectly "stable", so motion stability (MSI) is only meaningful next to
a measure of how much, and how much in time with the audio, the mouth moves:

- `mouth_aperture`: inner-lip opening over mouth width per frame, on iBUG-68 landmarks
  (scale-free: the face's distance to the camera cancels).
- `articulation`: the amplitude ratio std(generated) / std(reference) of two aperture series and
  their Pearson correlation over time.
- `audio_envelope`: the speech loudness per video frame (log RMS of the 300-3000 Hz band in a
  one-frame window centred on each frame's time span).
- `sync_offset`: the lag that best aligns the aperture with the envelope (normalised
  cross-correlation of both after removing slow trends), and a confidence. Unlike SyncNet this
  needs no weights. Sign: a positive offset k means the mouth moves k frames AFTER the sound
  (the video lags the audio); delaying the audio by k frames lowers the offset by k.

Validation on the real clips of `../shared` (dlib landmarks, default settings; the script
scripts/articulation_sync_check.py regenerates it, tests/test_articulation.py re-checks a GRID
clip): the 8 GRID clips give offsets in [-1, +1] (confidence 0.24-0.85), and delaying or
advancing their audio by k = 3 or 5 frames moves the offset by -k +- 1 on every clip. The window
(one frame), the band (300-3000 Hz) and the detrending (0.6 s) were chosen on these clips among
{0.5, 1, 2} frames, {band, full}, {0.4, 0.6, 1.0} s as the setting where all of that held. On the
long clips the real mouth leads the sound: obama_20s -5 frames (confidence 0.37), tedlieu_60s -3
(confidence 0.09, weak); shifting their audio still moves the offset by -k. So compare a
generated clip's offset with the real clip's, not with 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from jaxtalk.errors import JaxtalkError

# iBUG-68 indices (0-based): inner-lip upper/lower pairs and the mouth corners.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
MOUTH_CORNERS = (48, 54)

# Speech band of the envelope: the formant region carries the syllable rhythm; below 300 Hz
# hum and voicing fundamentals, above 3 kHz sibilants that barely open the mouth.
SPEECH_BAND_HZ = (300.0, 3000.0)
# Slow trends (head pose, loudness drift) are removed by subtracting a moving average of this
# many seconds before correlating; syllables (4-6 Hz) pass.
DETREND_S = 0.6


class ArticulationError(JaxtalkError):
  """Series that cannot be compared (wrong shape, unequal length, too short)."""


def mouth_aperture(landmarks_tn2: np.ndarray) -> np.ndarray:
  """Per-frame inner-lip opening / mouth width, `(T,)` float64.

  opening = mean(|p61 - p67|, |p62 - p66|, |p63 - p65|), width = |p48 - p54| (iBUG-68,
  0-based). Frames with NaN landmarks (no face) give NaN; a zero width gives NaN too.
  """
  lm = np.asarray(landmarks_tn2, np.float64)
  if lm.ndim != 3 or lm.shape[1:] != (68, 2):
    raise ArticulationError(f"mouth_aperture needs (T, 68, 2) landmarks, got {lm.shape}")
  upper = lm[:, [a for a, _ in INNER_LIP_PAIRS]]
  lower = lm[:, [b for _, b in INNER_LIP_PAIRS]]
  opening_t = np.linalg.norm(upper - lower, axis=-1).mean(axis=1)
  width_t = np.linalg.norm(lm[:, MOUTH_CORNERS[0]] - lm[:, MOUTH_CORNERS[1]], axis=-1)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(width_t > 0, opening_t / width_t, np.nan)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation; 0.0 when either series is constant (no linear relation to measure)."""
  if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  x = x - x.mean()
  y = y - y.mean()
  denom = np.sqrt(np.dot(x, x) * np.dot(y, y))
  if not np.isfinite(denom) or denom <= 1e-12 * max(1.0, x.size):
    return 0.0
  return float(np.clip(np.dot(x, y) / denom, -1.0, 1.0))


def articulation(pred_t: np.ndarray, ref_t: np.ndarray) -> dict:
  """Amplitude ratio and correlation of a generated aperture series against a reference one.

  Returns `aperture_ratio` = std(pred) / std(ref) (1.0: the generated mouth opens as much as
  the real one; 0.0: frozen) and `aperture_corr` = Pearson correlation over time. Both series
  must have the same length; frames where either is NaN (no face) are left out of both. A
  constant series has no correlation with anything: `aperture_corr` is 0.0 then (not NaN);
  a constant reference makes the ratio undefined: `aperture_ratio` is NaN then.
  """
  pred = np.asarray(pred_t, np.float64).reshape(-1)
  ref = np.asarray(ref_t, np.float64).reshape(-1)
  if pred.shape != ref.shape:
    raise ArticulationError(
      f"articulation needs series of equal length, got {pred.size} and {ref.size} frames"
    )
  keep = np.isfinite(pred) & np.isfinite(ref)
  if keep.sum() < 2:
    raise ArticulationError(f"articulation needs >= 2 frames with a face, got {keep.sum()}")
  pred, ref = pred[keep], ref[keep]
  # A constant series has std exactly 0 (np.std of equal floats can leave ~1e-17).
  std_ref = float(ref.std()) if np.ptp(ref) > 0 else 0.0
  std_pred = float(pred.std()) if np.ptp(pred) > 0 else 0.0
  ratio = std_pred / std_ref if std_ref > 0 else float("nan")
  return {"aperture_ratio": ratio, "aperture_corr": _pearson(pred, ref)}


def audio_envelope(
  samples: np.ndarray,
  sample_rate: int,
  fps: float,
  n_frames: int,
  window_s: float | None = None,
  band_hz: tuple[float, float] | None = SPEECH_BAND_HZ,
) -> np.ndarray:
  """Speech loudness per video frame, `(n_frames,)`: log RMS (natural log) of the band-passed
  audio in a window of `window_s` (default: one frame period) centred on the middle of each
  frame's time span [t / fps, (t + 1) / fps). The band-pass is zero-phase (forward-backward),
  so it shifts nothing in time. Frames beyond the end of the audio see silence."""
  x = np.asarray(samples, np.float64).reshape(-1)
  if sample_rate <= 0 or fps <= 0 or n_frames <= 0:
    raise ArticulationError(
      f"audio_envelope needs positive sample_rate, fps and n_frames, got "
      f"{sample_rate}, {fps}, {n_frames}"
    )
  if band_hz is not None and x.size > 64:
    lo, hi = band_hz
    hi = min(hi, 0.45 * sample_rate)
    sos = signal.butter(4, [lo, hi], btype="bandpass", fs=sample_rate, output="sos")
    x = signal.sosfiltfilt(sos, x)
  window_s = 1.0 / fps if window_s is None else window_s
  half = max(1, int(round(0.5 * window_s * sample_rate)))
  # Cumulative energy: every window's mean square in O(1).
  csum = np.concatenate([[0.0], np.cumsum(x * x)])
  centres = np.round((np.arange(n_frames) + 0.5) / fps * sample_rate).astype(np.int64)
  lo_i = np.clip(centres - half, 0, x.size)
  hi_i = np.clip(centres + half, 0, x.size)
  energy = (csum[hi_i] - csum[lo_i]) / (2 * half)
  # The floor (-100 dB re full scale) keeps silence finite.
  return 0.5 * np.log(energy + 1e-10)


def _detrend(x_t: np.ndarray, width: int) -> np.ndarray:
  """x minus its centred moving average (edges reflected), then scaled to unit variance."""
  x = np.asarray(x_t, np.float64)
  if width >= 2:
    x = x - ndimage.uniform_filter1d(x, size=width, mode="reflect")
  std = x.std()
  return (x - x.mean()) / std if std > 0 else x - x.mean()


def sync_offset(
  aperture_t: np.ndarray,
  envelope_t: np.ndarray,
  max_shift: int = 10,
  fps: float = 25.0,
) -> tuple[int, float]:
  """Lip-sync offset in frames and its confidence, from the mouth aperture and the audio
  envelope of the same frames (no weights needed).

  Both series lose their slow trend (moving average over `DETREND_S` seconds at `fps`), then for
  each lag k in [-max_shift, max_shift] the Pearson correlation of aperture[t] with
  envelope[t - k] over the frames where both exist is computed. The offset is the k of the
  highest correlation: positive k = the mouth moves k frames AFTER the sound (video lags
  audio), negative = before. Confidence = peak correlation minus the median correlation over
  all lags (near 0: no usable alignment, e.g. a frozen mouth). NaN apertures (frames without a
  face) are filled by linear interpolation.
  """
  a = np.asarray(aperture_t, np.float64).reshape(-1)
  e = np.asarray(envelope_t, np.float64).reshape(-1)
  if a.shape != e.shape:
    raise ArticulationError(
      f"sync_offset needs aperture and envelope of equal length, got {a.size} and {e.size}"
    )
  n = a.size
  if n < 2 * max_shift + 8:
    raise ArticulationError(
      f"sync_offset needs at least {2 * max_shift + 8} frames for max_shift {max_shift}, got {n}"
    )
  ok = np.isfinite(a)
  if ok.sum() < 2:
    raise ArticulationError("sync_offset: fewer than 2 frames have a mouth aperture")
  if not ok.all():
    a = np.interp(np.arange(n), np.flatnonzero(ok), a[ok])
  lags, corr = sync_correlations(a, e, max_shift, fps)
  best = int(np.argmax(corr))
  return int(lags[best]), float(corr[best] - np.median(corr))


def sync_correlations(
  aperture_t: np.ndarray, envelope_t: np.ndarray, max_shift: int = 10, fps: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
  """The lags -max_shift..max_shift and the correlation of aperture[t] with envelope[t - lag]
  at each, after detrending (what `sync_offset` maximises; for plots). NaN-free inputs."""
  width = max(2, int(round(DETREND_S * fps)))
  a = _detrend(aperture_t, width)
  e = _detrend(envelope_t, width)
  n = a.size
  lags = np.arange(-max_shift, max_shift + 1)
  corr = np.empty(lags.size)
  for i, k in enumerate(lags):
    if k >= 0:
      corr[i] = _pearson(a[k:], e[: n - k])
    else:
      corr[i] = _pearson(a[: n + k], e[-k:])
  return lags, corr
