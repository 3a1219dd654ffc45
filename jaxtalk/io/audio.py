"""Audio reading through PyAV: any container, codec, sample rate or channel count in; mono
float32 at the requested rate out."""

from __future__ import annotations

import os

import av
import numpy as np

from jaxtalk.errors import AudioReadError


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Mono float32 samples in [-1, 1] at `sample_rate` (channels averaged, resampled)."""
  path = str(path)
  if not os.path.isfile(path):
    raise AudioReadError(f"{path}: no such file")
  try:
    container = av.open(path)
  except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
    raise AudioReadError(f"{path}: cannot be read as an audio or video file ({e})") from e
  with container:
    if not container.streams.audio:
      raise AudioReadError(f"{path}: has no audio track")
    stream = container.streams.audio[0]
    # mp4/mov record the exact track length (edit lists); other containers only estimate it.
    exact = "mp4" in container.format.name or "mov" in container.format.name
    duration_s = float(stream.duration * stream.time_base) if exact and stream.duration else None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks = []
    try:
      for frame in container.decode(stream):
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray().reshape(-1))
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:
      raise AudioReadError(f"{path}: corrupt audio data ({e})") from e
  if not chunks:
    raise AudioReadError(f"{path}: the audio track holds no samples")
  samples = np.concatenate(chunks).astype(np.float32)
  if duration_s:
    # Codecs pad the last frame (AAC: to 1024 samples); mp4 knows the true length.
    samples = samples[: int(round(duration_s * sample_rate))]
  return samples


def is_silent(samples: np.ndarray, threshold_db: float = -50.0, sample_rate: int = 16000) -> bool:
  """True when the loudest 50 ms window stays below `threshold_db` dBFS (no usable speech)."""
  if samples.size == 0:
    return True
  win = min(samples.size, max(1, int(0.05 * sample_rate)))
  frames = samples[: samples.size // win * win].reshape(-1, win)
  rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
  return bool(20 * np.log10(rms.max() + 1e-12) < threshold_db)
