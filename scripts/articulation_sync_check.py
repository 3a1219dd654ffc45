"""Regenerates the validation figures of jaxtalk/metrics/articulation.py's weight-free sync
offset on the real clips of ../shared: per clip, the offset and confidence of the real mouth
aperture (dlib landmarks) against the real audio, and how the offset moves when the audio is
delayed by k = 3, -3, 5, -5 frames (expected: by -k).

  python scripts/articulation_sync_check.py [--shared ../shared] [--long]
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from jaxtalk.config import load_config
from jaxtalk.face.cache import video_track
from jaxtalk.io.audio import read_audio
from jaxtalk.metrics.articulation import audio_envelope, mouth_aperture, sync_offset

SAMPLE_RATE = 16000
FPS = 25.0


def shift_audio(samples: np.ndarray, k: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Delay (k > 0) or advance (k < 0) the audio by k video frames, keeping its length."""
  n = int(round(k * sample_rate / FPS))
  if n >= 0:
    return np.concatenate([np.zeros(n, samples.dtype), samples])[: samples.size]
  return np.concatenate([samples[-n:], np.zeros(-n, samples.dtype)])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--shared", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared")
  )
  parser.add_argument("--long", action="store_true", help="also the 20 s and 60 s clips")
  args = parser.parse_args()
  shared = pathlib.Path(args.shared) / "data" / "real"
  clips = sorted((shared / "grid").glob("*.mpg"))
  if args.long:
    clips += [shared / "long" / "obama_20s.mp4", shared / "long" / "tedlieu_60s.mp4"]
  cfg = load_config("grid")
  for clip in clips:
    track = video_track(clip, "dlib", cfg.track)
    aperture_t = mouth_aperture(track.landmarks_tn2)
    samples = read_audio(clip, SAMPLE_RATE)
    max_shift = 10 if aperture_t.size > 100 else 5
    env = audio_envelope(samples, SAMPLE_RATE, FPS, aperture_t.size)
    offset, conf = sync_offset(aperture_t, env, max_shift)
    moved = []
    for k in (3, -3, 5, -5):
      env_k = audio_envelope(shift_audio(samples, k), SAMPLE_RATE, FPS, aperture_t.size)
      moved.append(sync_offset(aperture_t, env_k, max_shift)[0] - offset)
    print(
      f"{clip.name:24s} offset {offset:+d}  confidence {conf:.2f}  moved by {moved} for k=3,-3,5,-5"
    )


if __name__ == "__main__":
  main()
