"""End-to-end inference speed (frames/s with and without compile) and peak memory vs audio length.

Models are freshly initialised (speed does not depend on the weights); the face model is learned
from the benchmark clip. Each measurement runs in a fresh process so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from jaxtalk.bench.machine import describe
from jaxtalk.bench.threads import CHILDREN, ThreadClock


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("video", help="background clip with a face, e.g. a GRID .mpg")
  parser.add_argument("--configs", nargs="+", default=["tiny", "grid"])
  parser.add_argument("--seconds", nargs="*", type=float, default=[10.0, 60.0],
                      help="audio lengths for the memory comparison (tiny config)")  # fmt: skip
  parser.add_argument("--speed-seconds", type=float, default=4.0,
                      help="audio length for the frames/s figures")  # fmt: skip
  parser.add_argument("--host-only", action="store_true",
                      help="time the host's per-frame work alone: the renderer replaced by a "
                           "stub that returns the background crops")  # fmt: skip
  parser.add_argument("--set", dest="overrides", action="append", default=[])
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def _models(video: str, config: str, overrides: list[str]):
  import jax
  import numpy as np

  from jaxtalk import infer
  from jaxtalk import model_io as state_lib
  from jaxtalk.config import load_config
  from jaxtalk.face.cache import video_track
  from jaxtalk.face.crop import config_crop_box, to_crop_coords
  from jaxtalk.face.landmark3d import learn_face_model

  cfg = load_config(config, overrides)
  size = cfg.data.image_size
  track = video_track(video, cfg.data.landmark_backend, cfg.track, fps=cfg.data.fps)
  box = config_crop_box(track.boxes_t4, track.found_t, cfg.data)
  lms = to_crop_coords(track.landmarks_tn2, box, size)
  face_model = learn_face_model([lms], size, cfg.data.expression_dim)
  init_key, run_key = state_lib.make_keys(cfg.seed)
  stats = state_lib.default_data_stats(cfg.data.n_mels)
  r_state = jax.jit(state_lib.renderer_init_fn(cfg))(init_key, run_key, stats)
  a_state = jax.jit(state_lib.a2e_init_fn(cfg))(init_key, run_key, stats)
  jax.block_until_ready((r_state, a_state))
  del np
  # untrained weights: the stage a run of this config would reach (smoothing included in the cost)
  stage = 2 if cfg.train.stage2_steps > 0 else 1
  return infer.Models(cfg, face_model, r_state, a_state, None, stage)


def _audio(video: str, seconds: float, sample_rate: int):
  import numpy as np

  from jaxtalk.io.audio import read_audio

  clip = read_audio(video, sample_rate)
  n = int(seconds * sample_rate)
  return np.resize(clip, n)  # the clip repeated: speech all along


def _background_crops(state, crops, shapes, masks, expression, audio):
  """A stand-in renderer for --host-only: the eroded background's crops, unchanged."""
  del state, shapes, masks, expression, audio
  return crops


def _worker(args: argparse.Namespace) -> dict:
  import os
  import tempfile

  from jaxtalk import infer

  job = json.loads(args.worker)
  models = _models(args.video, job["config"], args.overrides)
  background = infer.prepare_background(args.video, models, say=lambda s: None)
  sr = models.config.data.sample_rate
  out = {"config": job["config"], "seconds": job["seconds"], "size": models.config.data.image_size}
  with tempfile.TemporaryDirectory() as tmp:
    import soundfile

    wav = os.path.join(tmp, "a.wav")
    soundfile.write(wav, _audio(args.video, job["seconds"], sr), sr)
    generate = _background_crops if job.get("host_only") else infer.make_generate(models)
    times = []
    for _ in range(2 if job["speed"] else 1):
      with ThreadClock() as clock:  # the last run's: the compiled one
        r = infer.synthesize(models, background, wav, os.path.join(tmp, "o.mp4"),
                             generate=generate, progress=False)  # fmt: skip
      times.append(clock.wall)
  out["frames"] = r.frames
  out["fps_with_compile"] = r.frames / times[0]
  if job["speed"]:
    out["fps_compiled"] = r.frames / times[1]
    # where the compiled run's time went: before the first frame, the frames, the flush
    out["first_frame_s"], out["last_frame_s"] = r.first_frame_s, r.last_frame_s
    out["total_s"] = r.total_s
    out["thread_cpu_s"], out["thread_count"] = clock.seconds, clock.threads
  out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return out


def _spawn(args: argparse.Namespace, job: dict) -> dict:
  cmd = [sys.executable, "-m", "jaxtalk.cli", "bench", "infer", args.video, "--worker",
         json.dumps(job), *sum((["--set", o] for o in args.overrides), [])]  # fmt: skip
  r = subprocess.run(cmd, capture_output=True, text=True)
  if r.returncode != 0:
    raise RuntimeError(f"benchmark worker failed:\n{r.stderr[-3000:]}")
  return json.loads(r.stdout.strip().splitlines()[-1])


def _print_threads(r: dict) -> None:
  """The compiled run's CPU per frame by thread role (jaxtalk/bench/threads.py), and how busy
  each role's threads were: a serial role near 100 % bounds the frame rate."""
  if not r.get("thread_cpu_s"):
    return
  wall, frames = r["total_s"], r["frames"]
  print("    CPU per frame by thread role (in brackets: busy share of the run, per thread):")
  for name, cpu in sorted(r["thread_cpu_s"].items(), key=lambda kv: -kv[1]):
    count = r["thread_count"].get(name, 1)
    label = f"{name} x{count}" if count > 1 else name
    if name == CHILDREN:  # the x264 encoder: all its threads, as cores kept busy
      label = "encoder process (all its threads)"
    print(f"      {label:32s} {1000 * cpu / frames:7.2f} ms  ({100 * cpu / wall / count:5.1f} %)")


def run(args: argparse.Namespace) -> int:
  if args.worker:
    print(json.dumps(_worker(args)))
    return 0
  print(f"machine: {describe()}; clip {args.video}")
  what = "the host's work alone (renderer stubbed)" if args.host_only else "the whole pipeline"
  print(f"speed (fresh models; frames/s of {what}: audio -> mp4):")
  for config in args.configs:
    job = {"config": config, "seconds": args.speed_seconds, "speed": True}
    r = _spawn(args, {**job, "host_only": args.host_only})
    print(
      f"  {config:5s} {r['size']}x{r['size']}: {r['frames']} frames,"
      f" {r['fps_with_compile']:.2f} frames/s incl. compile, {r['fps_compiled']:.2f} compiled"
    )
    # the steady rate is frames after the first over the time between the first and the last
    steady = (r["frames"] - 1) / max(r["last_frame_s"] - r["first_frame_s"], 1e-9)
    print(
      f"    compiled run: first frame after {r['first_frame_s']:.2f} s, last after "
      f"{r['last_frame_s']:.2f} s ({steady:.1f} frames/s between), file closed after "
      f"{r['total_s']:.2f} s"
    )
    _print_threads(r)
  print("peak memory vs audio length (tiny config):")
  for seconds in args.seconds:
    r = _spawn(args, {"config": "tiny", "seconds": seconds, "speed": False})
    print(f"  {seconds:5.0f} s audio ({r['frames']} frames): peak RSS {r['peak_rss_mb']:.0f} MB")
  return 0
