"""A small synthetic dataset written per docs/dataset_format.md, for tests and benchmarks.

Each clip is a drawn "face": a skin-coloured ellipse on a clip-specific gradient, a dark mouth
whose opening follows a per-clip sine, the mouth polygon and its mask, a flat shape render of
the same mouth, expressions and audio windows that both encode the opening. It has the exact
layout, dtypes and shapes of a preprocessed dataset, so the pipeline and the train loops run on
it unchanged; it is learnable (the opening is in the audio, the expression and the shape) but
says nothing about faces.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np


def rasterize_polygon_reference(points_p2: np.ndarray, height: int, width: int) -> np.ndarray:
  """numpy reference of the mask rule (pixel centres, even-odd, float32, edge by edge); used
  when jaxtalk.face.mask is not importable."""
  pts = np.asarray(points_p2, np.float32)
  x1, y1 = pts[:, 0], pts[:, 1]
  x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
  cy = np.arange(height, dtype=np.float32) + np.float32(0.5)
  cx = np.arange(width, dtype=np.float32) + np.float32(0.5)
  inside = np.zeros((height, width), bool)
  for e in range(len(pts)):
    straddle = (y1[e] > cy) != (y2[e] > cy)
    dy = np.where(straddle, y2[e] - y1[e], np.float32(1.0)).astype(np.float32)
    x_cross = x1[e] + (cy - y1[e]) * (x2[e] - x1[e]) / dy
    inside ^= straddle[:, None] & (cx[None, :] < x_cross[:, None])
  return inside


def rasterize(points_p2: np.ndarray, size: int) -> np.ndarray:
  """The dataset's rasteriser when the preprocessing module exists, else the reference."""
  try:
    from jaxtalk.face.mask import rasterize_polygon  # noqa: PLC0415
  except ImportError:
    return rasterize_polygon_reference(points_p2, size, size)
  return np.asarray(rasterize_polygon(points_p2, size), bool)


def _ellipse(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  return ((x - cx) / max(rx, 1e-3)) ** 2 + ((y - cy) / max(ry, 1e-3)) ** 2 <= 1.0


def write_synthetic_dataset(
  root: str | pathlib.Path,
  *,
  n_clips: int = 2,
  n_frames: int = 24,
  size: int = 64,
  expression_dim: int = 16,
  audio_window: int = 20,
  n_mels: int = 80,
  n_points: int = 18,  # len(jaxtalk.face.mask.MASK_POINTS): the shapes of a real dataset
  seed: int = 0,
) -> pathlib.Path:
  """Writes DATASET/clips/<clip>/*.npy and manifest.json; returns the dataset path."""
  root = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  (root / "clips").mkdir(parents=True, exist_ok=True)
  entries = {}
  for c in range(n_clips):
    name = f"clip{c:03d}"
    d = root / "clips" / name
    d.mkdir(parents=True, exist_ok=True)
    t = np.arange(n_frames, dtype=np.float32)
    period = 6.0 + 3.0 * c
    opening = 0.5 + 0.5 * np.sin(2 * np.pi * t / period + c)  # (T,) in [0, 1]
    cx, cy = size * (0.5 + 0.02 * c), size * 0.68
    rx = size * 0.16
    ry = size * (0.02 + 0.07 * opening)
    base = np.zeros((size, size, 3), np.float32)
    grad = np.linspace(0, 1, size, dtype=np.float32)
    base[..., 0] = 40 + 80 * grad[None, :] + 30 * c
    base[..., 1] = 60 + 60 * grad[:, None]
    base[..., 2] = 120 - 40 * grad[None, :]
    face = _ellipse(size, size * 0.5, size * 0.5, size * 0.32, size * 0.42)
    base[face] = (200, 160, 130)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    shape = np.empty((n_frames, size, size, 3), np.uint8)
    mask = np.empty((n_frames, size, size), np.uint8)
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    points = np.empty((n_frames, n_points, 2), np.float32)
    for i in range(n_frames):
      img = base.copy()
      mouth = _ellipse(size, cx, cy, rx, ry[i])
      img[mouth] = (90, 20, 30)
      img += rng.normal(0, 2.0, img.shape)
      frames[i] = np.clip(img, 0, 255).astype(np.uint8)
      sh = np.full((size, size, 3), 30, np.float32)
      sh[face] = 150
      sh[mouth] = 230
      shape[i] = sh.astype(np.uint8)
      # the mask polygon: an ellipse around the mouth, a little larger than it
      pr = rx * 1.35 + rng.normal(0, 0.3, n_points)
      qr = ry[i] * 1.35 + size * 0.05 + rng.normal(0, 0.3, n_points)
      points[i, :, 0] = cx + pr * np.cos(angles)
      points[i, :, 1] = cy + qr * np.sin(angles)
      mask[i] = rasterize(points[i], size).astype(np.uint8)
    freqs = np.arange(1, expression_dim, dtype=np.float32)
    expression = np.concatenate(
      [opening[:, None], 0.3 * np.sin(opening[:, None] * freqs[None, :] + c)], axis=1
    ).astype(np.float32)
    mel_len = n_frames * 4 + audio_window
    mel_t = np.arange(mel_len, dtype=np.float32) / 4.0
    mel_open = 0.5 + 0.5 * np.sin(2 * np.pi * mel_t / period + c)
    bins = np.linspace(0, 1, n_mels, dtype=np.float32)
    mel = (
      -4.0
      + 3.0 * mel_open[:, None] * np.exp(-((bins[None, :] - 0.3) ** 2) / 0.02)
      + rng.normal(0, 0.1, (mel_len, n_mels))
    ).astype(np.float32)
    audio = np.stack([mel[i * 4 : i * 4 + audio_window] for i in range(n_frames)]).astype(
      np.float32
    )
    landmarks = np.zeros((n_frames, 68, 2), np.float32)
    k = min(n_points, 68)
    landmarks[:, :k] = points[:, :k]
    pose = np.zeros((n_frames, 6), np.float32)
    for key, arr in dict(
      frames=frames, shape=shape, mask=mask, landmarks=landmarks, mask_points=points,
      expression=expression, pose=pose, audio=audio, mel=mel,
    ).items():  # fmt: skip
      np.save(d / f"{key}.npy", arr)
    entries[name] = {"num_frames": n_frames, "mel_frames": mel_len, "source": "synthetic"}
  manifest = {
    "format": "jaxtalk-dataset",
    "version": 1,
    "status": "complete",
    "synthetic": True,
    "fps": 25.0,
    "image_size": size,
    "expression_dim": expression_dim,
    "audio_window": audio_window,
    "n_mels": n_mels,
    "mask_points": n_points,
    "face_model": "synthetic",
    "clips": entries,
  }
  (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
  return root
