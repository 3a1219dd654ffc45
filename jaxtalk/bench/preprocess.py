"""Preprocessing throughput per core on a clip, split by stage (decode, landmarks, crop, fit,
render, mask, audio, write), and the whole `preprocess` of the clip."""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time

import numpy as np

from jaxtalk.bench.machine import describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("video", help="a clip, e.g. ../shared/data/real/grid/bbaf2n.mpg")
  parser.add_argument("--config", default="grid", help="config (grid: 256x256, E=53)")
  parser.add_argument("--repeats", type=int, default=3, help="best of N for each stage")


def _best(fn, repeats: int) -> tuple[float, object]:
  times, out = [], None
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return float(np.min(times)), out


def run(args: argparse.Namespace) -> int:
  import cv2

  from jaxtalk.audio.features import frame_windows, log_mel
  from jaxtalk.config import load_config
  from jaxtalk.data.preprocess import Settings, preprocess
  from jaxtalk.data.writer import ClipWriter
  from jaxtalk.face import landmark3d
  from jaxtalk.face.crop import crop_frame, stable_crop_box, to_crop_coords
  from jaxtalk.face.landmarks import get_backend
  from jaxtalk.face.mask import MASK_POINTS, mask_polygon, rasterize_polygon
  from jaxtalk.face.track import track_faces
  from jaxtalk.io.audio import read_audio
  from jaxtalk.io.video import read_frames

  cv2.setNumThreads(1)  # per-core figures: preprocessing scales by processes (--workers)
  config = load_config(args.config)
  s = Settings.from_config(config)
  size = s.image_size
  r = args.repeats

  decode_s, frames = _best(lambda: read_frames(args.video, s.fps), r)
  n = len(frames)
  backend = get_backend(s.landmark_backend)
  accepted = inspect.signature(track_faces).parameters
  track_kwargs = {k: v for k, v in s.track.items() if k in accepted}
  track_s, track = _best(lambda: track_faces(frames, backend, **track_kwargs), r)
  box = stable_crop_box(track.boxes_t4, track.found_t, s.crop_scale, s.crop_shift)
  crop_s, crops = _best(lambda: np.stack([crop_frame(f, box, size) for f in frames]), r)
  lms = to_crop_coords(track.landmarks_tn2, box, size)
  learn_s, model = _best(lambda: landmark3d.learn_face_model([lms], size, s.expression_dim), r)
  fit_s, fit = _best(lambda: landmark3d.fit_frames(model, lms, size), r)
  render_s, _ = _best(
    lambda: [model.render(fit.expression_te[t], fit.pose_t6[t], size) for t in range(n)], r
  )
  mask_s, _ = _best(lambda: [rasterize_polygon(p, size) for p in mask_polygon(lms)], r)

  def audio():
    samples = read_audio(args.video, s.sample_rate)
    mel = log_mel(samples, s.sample_rate, s.n_mels, s.hop_ms, s.win_ms, s.mel_floor)
    return frame_windows(mel, n, s.fps, s.hop_ms, s.audio_window)

  audio_s, _ = _best(audio, r)
  with tempfile.TemporaryDirectory() as tmp:
    dims = {"T": n, "S": size, "P": len(MASK_POINTS), "E": s.expression_dim, "W": s.audio_window}
    dims.update({"F": s.n_mels, "M": 4 * n})

    def write():
      w = ClipWriter(tmp, "bench", dims)
      w["frames"] = crops
      w["shape"] = crops
      w.finish()

    write_s, _ = _best(write, r)
    t = time.perf_counter()
    preprocess(
      [args.video],
      f"{tmp}/ds",
      config,
      cache_dir=f"{tmp}/cache",
      progress=False,
      log=lambda m: None,
    )
    whole_s = time.perf_counter() - t

  print(f"machine: {describe()}, one core (cv2 threads 1)")
  print(
    f"clip: {args.video} ({n} frames {frames.shape[2]}x{frames.shape[1]}), config {args.config}"
  )
  print(f"crop {size}x{size}, expression {s.expression_dim}; best of {r}")
  stages = [
    ("decode", decode_s),
    ("track + landmarks (dlib)", track_s),
    ("crop + resize", crop_s),
    ("fit (pose + expression)", fit_s),
    ("render shape", render_s),
    ("mask", mask_s),
    ("audio (read + log-mel + windows)", audio_s),
    ("write shards", write_s),
  ]
  for name, secs in stages:
    print(f"{name:34s} {n / secs:9.1f} frames/s  ({1000 * secs / n:6.2f} ms/frame)")
  total = sum(secs for _, secs in stages)
  print(f"{'sum of stages':34s} {n / total:9.1f} frames/s")
  print(f"{'learn face model (once per person)':34s} {learn_s * 1000:9.1f} ms for {n} frames")
  print(f"{'jaxtalk preprocess, cold cache':34s} {n / whole_s:9.1f} frames/s ({whole_s:.2f} s)")
  return 0
