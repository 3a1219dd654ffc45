"""Audio features for the renderer's audio fusion and audio2expression: librosa log-mel.

`log_mel` is a power mel spectrogram (Slaney mel scale and filter norm, librosa's defaults),
`hop_ms` hop, a Hann window of `win_ms` (n_fft = the window length), frames centred on their
time (librosa `center=True`, zero-padded as librosa does by default), so mel frame m describes
the audio around time m * hop. The log is natural, floored: log(max(mel, floor)); the floor
keeps codec noise and digital silence from producing -inf and huge negative values.

`frame_windows` aligns mel frames to video frames: video frame t is shown from t / fps on, so
its centre mel frame is c_t = floor(t * mel_rate / fps + 0.5) (mel_rate = 1000 / hop_ms; at
25 fps and 10 ms hop, c_t = 4 t exactly). Its window is the W mel frames c_t - W//2 ...
c_t - W//2 + W - 1 (W//2 before the centre, the centre and W - W//2 - 1 after), with indices
outside the clip clamped to its first or last mel frame (edge padding).
"""

from __future__ import annotations

import librosa
import numpy as np


def mel_params(sample_rate: int, hop_ms: float, win_ms: float) -> tuple[int, int]:
  """(hop_length, win_length) in samples."""
  hop = int(round(sample_rate * hop_ms / 1000.0))
  win = int(round(sample_rate * win_ms / 1000.0))
  return hop, win


def log_mel(
  samples: np.ndarray,
  sample_rate: int = 16000,
  n_mels: int = 80,
  hop_ms: float = 10.0,
  win_ms: float = 25.0,
  floor: float = 1e-10,
) -> np.ndarray:
  """`(M, n_mels)` float32 log-mel of mono samples, M = 1 + len(samples) // hop."""
  hop, win = mel_params(sample_rate, hop_ms, win_ms)
  mel = librosa.feature.melspectrogram(
    y=np.asarray(samples, np.float32),
    sr=sample_rate,
    n_fft=win,
    hop_length=hop,
    win_length=win,
    window="hann",
    center=True,
    pad_mode="constant",
    power=2.0,
    n_mels=n_mels,
  )
  return np.log(np.maximum(mel, floor)).T.astype(np.float32)


def centre_mel_index(frame_index: np.ndarray, fps: float, hop_ms: float) -> np.ndarray:
  """The mel frame at the start time of each video frame (see the module docstring)."""
  mel_rate = 1000.0 / hop_ms
  return np.floor(np.asarray(frame_index, np.float64) * mel_rate / fps + 0.5).astype(np.int64)


def window_indices(
  num_frames: int, num_mel: int, fps: float, hop_ms: float, window: int, first_frame: int = 0
) -> np.ndarray:
  """`(T, W)` int64 mel indices of frames first_frame .. first_frame + T - 1, edge-clamped."""
  centre = centre_mel_index(np.arange(first_frame, first_frame + num_frames), fps, hop_ms)
  idx = centre[:, None] - window // 2 + np.arange(window)[None, :]
  return np.clip(idx, 0, num_mel - 1)


def frame_windows(
  mel_m80: np.ndarray,
  num_frames: int,
  fps: float,
  hop_ms: float,
  window: int,
  first_frame: int = 0,
) -> np.ndarray:
  """`(T, W, n_mels)` float32: the mel window centred on each video frame."""
  idx = window_indices(num_frames, mel_m80.shape[0], fps, hop_ms, window, first_frame)
  return np.ascontiguousarray(mel_m80[idx], np.float32)
