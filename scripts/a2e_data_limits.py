"""Two more checks of what limits audio2expression's correlation on the long clips (issue 15).

1. **Landmark noise** (`noise`): dlib's mouth aperture of every frame as tracked (one
   prediction from the detector's box) against the mean of 14 predictions per frame: the box
   shifted by +-3 % of its width along x and y and scaled by 0.95 / 1.05, each on the frame and
   on its mirror image (points mapped back and renumbered). Test-time averaging removes part of
   the predictor's per-frame noise; the lag-1 autocorrelation of the aperture (raw, and with its
   0.6 s moving average removed) and its sync confidence against the audio envelope tell how
   much of the series was that noise.
2. **Other speakers' speech as extra data** (`speakers`): ridge regressions from the log-mel
   windows (each clip standardised by its own statistics; frames t-4, t, t+4, 20 pooled bands)
   to each clip's standardised dlib aperture, fitted on the first 80 % of TARGET alone or with
   the other clips (the long clips' other one, the eight GRID clips, all) added whole, scored on
   TARGET's last 20 %.

  python scripts/a2e_data_limits.py noise ../shared/data/real/long/tedlieu_60s.mp4
  python scripts/a2e_data_limits.py speakers [--shared ../shared]
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import scipy.ndimage
from a2e_linear_ceiling import band_features, ridge  # this folder is on sys.path as a script

from jaxtalk.audio.features import frame_windows, log_mel
from jaxtalk.config import load_config
from jaxtalk.face.cache import video_track
from jaxtalk.face.landmarks import DlibBackend
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import read_frames
from jaxtalk.metrics.articulation import (
  DETREND_S,
  articulation,
  audio_envelope,
  mouth_aperture,
  sync_offset,
)

FPS = 25.0
# iBUG-68 left/right pairs: a mirrored face's point i is the original's MIRROR[i].
PAIRS = [(0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9), (17, 26), (18, 25),
         (19, 24), (20, 23), (21, 22), (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42),
         (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63),
         (65, 67)]  # fmt: skip
MIRROR = np.arange(68)
for _a, _b in PAIRS:
  MIRROR[_a], MIRROR[_b] = _b, _a
BOX_JITTER = [(0, 0, 1.0), (0.03, 0, 1.0), (-0.03, 0, 1.0), (0, 0.03, 1.0), (0, -0.03, 1.0),
              (0, 0, 1.05), (0, 0, 0.95)]  # fmt: skip


def averaged_landmarks(backend: DlibBackend, image: np.ndarray, box: np.ndarray) -> np.ndarray:
  """The mean of the predictions from the jittered boxes, on the frame and on its mirror."""
  w_img = image.shape[1]
  mirrored = np.ascontiguousarray(image[:, ::-1])
  width = box[2] - box[0]
  cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
  points = []
  for dx, dy, s in BOX_JITTER:
    x, y, h = cx + dx * width, cy + dy * width, 0.5 * width * s
    b = np.array([x - h, y - h, x + h, y + h], np.float32)
    points.append(backend.landmarks(image, b))
    m = backend.landmarks(mirrored, np.array([w_img - 1 - b[2], b[1], w_img - 1 - b[0], b[3]]))
    m[:, 0] = w_img - 1 - m[:, 0]
    points.append(m[MIRROR])
  return np.mean(points, axis=0)


def lag1(x: np.ndarray) -> float:
  x = x - x.mean()
  return float(np.dot(x[1:], x[:-1]) / np.dot(x, x))


def noise(video: str) -> None:
  cfg = load_config("cpu")
  frames = read_frames(video, FPS)
  track = video_track(video, "dlib", cfg.track, fps=FPS)
  n = min(len(frames), track.num_frames)
  backend = DlibBackend()
  averaged = np.stack([averaged_landmarks(backend, frames[t], track.boxes_t4[t]) for t in range(n)])
  envelope = audio_envelope(read_audio(video), 16000, FPS, n)
  plain = mouth_aperture(track.landmarks_tn2[:n])
  width = int(round(DETREND_S * FPS))
  for name, a in (("as tracked", plain), ("14 predictions averaged", mouth_aperture(averaged))):
    fast = a - scipy.ndimage.uniform_filter1d(a, width, mode="reflect")
    offset, conf = sync_offset(a, envelope)
    print(f"{name}: std {a.std():.4f}, lag-1 autocorr {lag1(a):.3f} (fast part {lag1(fast):.3f}),"
          f" sync {offset:+d} (conf {conf:.3f}), corr with as tracked "
          f"{np.corrcoef(a, plain)[0, 1]:.3f}")  # fmt: skip


def ridge_features(video: str, track_cfg) -> tuple[np.ndarray, np.ndarray]:
  track = video_track(video, "dlib", track_cfg, fps=FPS)
  n = track.num_frames
  mel = log_mel(read_audio(video))
  # each speaker by their own statistics, the whole clip's: per band a shift, which the ridge's
  # intercept absorbs, and a scale, which only reweights its penalty (alike in every row)
  mel = (mel - mel.mean(0)) / (mel.std(0) + 1e-6)
  feats = band_features(frame_windows(mel, n, FPS, 10.0, 20), [-4, 0, 4])
  ap = mouth_aperture(track.landmarks_tn2)
  ok = np.isfinite(ap)
  return feats[ok], (ap[ok] - ap[ok].mean()) / ap[ok].std()


def speakers(shared: pathlib.Path) -> None:
  cfg = load_config("cpu")
  long = {
    p.stem: ridge_features(str(p), cfg.track)
    for p in sorted((shared / "data/real/long").glob("*.mp4"))
  }
  grid = [
    ridge_features(str(p), cfg.track) for p in sorted((shared / "data/real/grid").glob("*.mpg"))
  ]
  for target, (x, y) in long.items():
    tr = int(round(0.8 * len(y)))
    others = [v for k, v in long.items() if k != target]
    for name, extra in (("alone", []), ("+ other long clip", others), ("+ 8 GRID clips", grid),
                        ("+ all", others + grid)):  # fmt: skip
      x_tr = np.concatenate([x[:tr], *(e[0] for e in extra)])
      y_tr = np.concatenate([y[:tr], *(e[1] for e in extra)])
      corrs = [articulation(ridge(x_tr, y_tr, x[tr:], lam), y[tr:])["aperture_corr"]
               for lam in (1e2, 3e2, 1e3, 3e3)]  # fmt: skip
      print(f"{target}, {name} ({len(y_tr)} frames): held-out aperture corr at ridge weight "
            f"100/300/1000/3000: " + " ".join(f"{c:.2f}" for c in corrs))  # fmt: skip


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = ap.add_subparsers(dest="what", required=True)
  sub.add_parser("noise").add_argument("video")
  sub.add_parser("speakers").add_argument("--shared", default="../shared", type=pathlib.Path)
  args = ap.parse_args()
  if args.what == "noise":
    noise(args.video)
  else:
    speakers(args.shared)


if __name__ == "__main__":
  main()
