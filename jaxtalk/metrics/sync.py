"""Lip-sync scores Sync-C (confidence) and Sync-D (distance) with SyncNet, as syncnet_python's
`SyncNetInstance.evaluate` computes them (github.com/joonson/syncnet_python).

Pipeline, per video (25 fps, 16 kHz audio):
1. Face crops: from the tracked face boxes, syncnet_python's `crop_video` recipe: half-size
   s = max(box w, box h) / 2 and centre, each median-filtered over 13 frames; the crop spans
   [cy - s, cy + 1.8 s] x [cx - 1.4 s, cx + 1.4 s] (crop_scale 0.4) of the frame padded with grey
   110, resized to 224x224, BGR. Our boxes are the landmark tracker's (dlib HOG) boxes, not
   syncnet_python's S3FD ones, so the crop sits slightly differently (see docs/evaluation.md).
2. Audio: MFCC of python_speech_features' defaults (25 ms windows, 10 ms hop, 512-point FFT,
   26 mel filters, 13 cepstra, lifter 22, c0 replaced by the log frame energy, pre-emphasis
   0.97) on 16-bit-scaled samples, reimplemented here in numpy.
3. Embeddings: window i (i = 0 .. min(T, samples // 640) - 6) pairs video frames i..i+4 with
   MFCC columns 4i..4i+19; SyncNet embeds both (jaxtalk.models.syncnet).
4. For every video window i and every offset j in [-vshift, vshift]:
   d[i, j] = || v_i - a_(i+j) + 1e-6 ||_2 (torch's pairwise_distance), with zero audio
   embeddings outside the clip. mdist[j] = mean_i d[i, j];
   Sync-D = min_j mdist[j], Sync-C = median_j mdist[j] - Sync-D, offset = -argmin_j (frames).
   With this sign, offset k > 0 means the lips lag the audio by k frames (a_t = v_(t+k)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import cv2
import jax
import numpy as np
from scipy import signal

from jaxtalk.errors import JaxtalkError
from jaxtalk.models.syncnet import EMBED_DIM, LIP_FRAMES, LIP_SIZE, SyncNet

SYNC_FPS = 25.0
SYNC_SAMPLE_RATE = 16000
VSHIFT = 15
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
MFCC_WINDOW = 20
CROP_SCALE = 0.4
BOX_MEDIAN = 13
PAD_VALUE = 110
PAIRWISE_EPS = 1e-6


# ---- audio: python_speech_features.mfcc with its defaults --------------------------------------


def _hz_to_mel(hz):
  return 2595 * np.log10(1 + hz / 700.0)


def _mel_to_hz(mel):
  return 700 * (10 ** (mel / 2595.0) - 1)


def mel_filterbank(
  nfilt: int = 26, nfft: int = 512, sample_rate: int = SYNC_SAMPLE_RATE
) -> np.ndarray:
  """python_speech_features' triangular filters on FFT bins, `(nfilt, nfft // 2 + 1)`."""
  mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), nfilt + 2)
  bins = np.floor((nfft + 1) * _mel_to_hz(mel) / sample_rate)
  fbank = np.zeros((nfilt, nfft // 2 + 1))
  for j in range(nfilt):
    for i in range(int(bins[j]), int(bins[j + 1])):
      fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
    for i in range(int(bins[j + 1]), int(bins[j + 2])):
      fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
  return fbank


def mfcc(
  samples: np.ndarray,
  sample_rate: int = SYNC_SAMPLE_RATE,
  *,
  numcep: int = 13,
  nfilt: int = 26,
  nfft: int = 512,
  preemph: float = 0.97,
  ceplifter: int = 22,
) -> np.ndarray:
  """`(frames, numcep)` MFCC exactly as `python_speech_features.mfcc(samples, sample_rate)`."""
  from scipy.fft import dct

  x = np.asarray(samples, np.float64).reshape(-1)
  x = np.append(x[0], x[1:] - preemph * x[:-1])
  frame_len = int(math.floor(0.025 * sample_rate + 0.5))
  frame_step = int(math.floor(0.01 * sample_rate + 0.5))
  if x.size <= frame_len:
    n_frames = 1
  else:
    n_frames = 1 + int(math.ceil((x.size - frame_len) / frame_step))
  padded = np.concatenate([x, np.zeros(int((n_frames - 1) * frame_step + frame_len) - x.size)])
  idx = np.arange(frame_len)[None, :] + frame_step * np.arange(n_frames)[:, None]
  frames = padded[idx]
  power = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft
  energy = power.sum(axis=1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  feat = power @ mel_filterbank(nfilt, nfft, sample_rate).T
  feat = np.where(feat == 0, np.finfo(float).eps, feat)
  feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
  if ceplifter > 0:
    feat = feat * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
  feat[:, 0] = np.log(energy)
  return feat


def to_int16_scale(audio: np.ndarray) -> np.ndarray:
  """Float samples in [-1, 1] -> the int16 values syncnet_python reads from its wav file."""
  return np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767)


# ---- video: syncnet_python's face crops -------------------------------------------------------


def smooth_crop_boxes(boxes_t4: np.ndarray) -> np.ndarray:
  """Per frame `(cx, cy, s)`: box centre and half-size, median-filtered over 13 frames."""
  b = np.asarray(boxes_t4, np.float64)
  s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
  cy, cx = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
  return np.stack([signal.medfilt(v, kernel_size=BOX_MEDIAN) for v in (cx, cy, s)], axis=1)


def face_crop(frame_hwc: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
  """syncnet_python's crop of one RGB frame -> `(224, 224, 3)` uint8 BGR."""
  bsi = int(s * (1 + 2 * CROP_SCALE))
  padded = np.pad(frame_hwc[..., ::-1], ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=PAD_VALUE)
  my, mx = cy + bsi, cx + bsi
  face = padded[
    int(my - s) : int(my + s * (1 + 2 * CROP_SCALE)),
    int(mx - s * (1 + CROP_SCALE)) : int(mx + s * (1 + CROP_SCALE)),
  ]
  if face.size == 0:
    raise JaxtalkError(f"empty SyncNet face crop (box centre {cx:.0f},{cy:.0f}, half-size {s:.1f})")
  return cv2.resize(np.ascontiguousarray(face), (LIP_SIZE, LIP_SIZE))


def face_crops(frames: Iterable[np.ndarray], boxes_t4: np.ndarray) -> Iterator[np.ndarray]:
  """Crops of the frames in order (as many as there are boxes)."""
  crop_boxes = smooth_crop_boxes(boxes_t4)
  for (cx, cy, s), frame in zip(crop_boxes, frames, strict=False):
    yield face_crop(frame, cx, cy, s)


# ---- distances and scores ---------------------------------------------------------------------


def sync_distances(
  video_emb_nd: np.ndarray, audio_emb_nd: np.ndarray, vshift: int = VSHIFT
) -> np.ndarray:
  """`(N, 2 vshift + 1)`: d[i, j] = ||v_i - a_(i + j - vshift) + eps||, zero-padded audio."""
  v = np.asarray(video_emb_nd, np.float64)
  a = np.asarray(audio_emb_nd, np.float64)
  if v.ndim != 2 or a.shape != v.shape:
    raise ValueError(f"embeddings must both be (N, D), got {v.shape} and {a.shape}")
  n = v.shape[0]
  padded = np.pad(a, ((vshift, vshift), (0, 0)))
  window = padded[np.arange(n)[:, None] + np.arange(2 * vshift + 1)[None, :]]  # (N, W, D)
  return np.linalg.norm(v[:, None, :] - window + PAIRWISE_EPS, axis=-1)


def sync_scores(dists_nw: np.ndarray) -> dict[str, float | int]:
  """Sync-D (min of the per-offset mean distance), Sync-C (median - min) and the AV offset."""
  d = np.asarray(dists_nw, np.float64)
  vshift = (d.shape[1] - 1) // 2
  mdist = d.mean(axis=0)
  best = int(np.argmin(mdist))
  sync_d = float(mdist[best])
  return {
    "sync_c": float(np.median(mdist) - sync_d),
    "sync_d": sync_d,
    "sync_offset": vshift - best,
  }


# ---- the network --------------------------------------------------------------------------------


class SyncNetScorer:
  """SyncNet with loaded weights and jitted, fixed-batch embedding functions."""

  def __init__(self, variables: dict, batch_size: int = 16) -> None:
    self.variables = jax.device_put(variables)
    self.batch_size = int(batch_size)
    model = SyncNet()
    self._audio = jax.jit(lambda v, x: model.apply(v, x, method=SyncNet.embed_audio))
    self._lips = jax.jit(lambda v, x: model.apply(v, x, method=SyncNet.embed_lips))

  @classmethod
  def from_file(cls, path, batch_size: int = 16) -> SyncNetScorer:
    from jaxtalk.metrics.syncnet_weights import load_syncnet_variables

    return cls(load_syncnet_variables(path), batch_size)

  def _run(self, fn, batch: np.ndarray) -> np.ndarray:
    # Pad to the fixed batch size so every call reuses one compiled program.
    n = batch.shape[0]
    if n < self.batch_size:
      batch = np.concatenate(
        [batch, np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)]
      )
    return np.asarray(fn(self.variables, batch))[:n]

  def embed_audio(self, mfcc_b13201: np.ndarray) -> np.ndarray:
    x = np.asarray(mfcc_b13201, np.float32)
    out = [
      self._run(self._audio, x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)

  def embed_lips(self, clips_b5hwc: np.ndarray) -> np.ndarray:
    x = np.asarray(clips_b5hwc, np.float32)
    out = [
      self._run(self._lips, x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)

  def embed_lip_stream(self, crops: Iterable[np.ndarray], n_windows: int) -> np.ndarray:
    """Embeddings of windows 0..n_windows-1 of a crop stream, holding one batch of crops."""
    out, buffer, start = [], [], 0
    for crop in crops:
      buffer.append(crop)
      # Window w needs crops w..w+4; emit a batch once its last window is complete.
      while start < n_windows and len(buffer) >= min(self.batch_size, n_windows - start) + 4:
        count = min(self.batch_size, n_windows - start)
        clips = np.stack([np.stack(buffer[k : k + LIP_FRAMES]) for k in range(count)])
        out.append(self._run(self._lips, clips.astype(np.float32)))
        buffer = buffer[count:]
        start += count
      if start >= n_windows:
        break
    if start < n_windows:
      raise JaxtalkError(f"video ended after {start + len(buffer)} frames; SyncNet needed more")
    return np.concatenate(out)


def audio_windows(mfcc_tc: np.ndarray, n_windows: int) -> np.ndarray:
  """`(n_windows, 13, 20, 1)`: MFCC columns 4i .. 4i + 19 for each window i."""
  m = np.asarray(mfcc_tc, np.float32).T  # (13, frames)
  wins = [m[:, MFCC_PER_FRAME * i : MFCC_PER_FRAME * i + MFCC_WINDOW] for i in range(n_windows)]
  return np.stack(wins)[..., None]


def sync_metrics(
  frames: Iterable[np.ndarray],
  boxes_t4: np.ndarray,
  audio_16k: np.ndarray,
  scorer: SyncNetScorer,
  vshift: int = VSHIFT,
) -> dict[str, float | int]:
  """Sync-C / Sync-D / offset of a 25 fps video (frames with their face boxes) and its audio."""
  n_frames = len(boxes_t4)
  min_length = min(n_frames, len(audio_16k) // int(SYNC_SAMPLE_RATE / SYNC_FPS))
  # syncnet_python stops one window early (range(0, min_length - 5)); kept for equal numbers.
  n_windows = min_length - LIP_FRAMES
  if n_windows < 1:
    raise JaxtalkError(
      f"Sync needs at least {LIP_FRAMES + 1} frames of video and audio, got {min_length}"
    )
  features = mfcc(to_int16_scale(audio_16k), SYNC_SAMPLE_RATE)
  audio_emb = scorer.embed_audio(audio_windows(features, n_windows))
  video_emb = scorer.embed_lip_stream(face_crops(frames, boxes_t4), n_windows)
  scores = sync_scores(sync_distances(video_emb, audio_emb, vshift))
  scores["sync_windows"] = n_windows
  return scores
