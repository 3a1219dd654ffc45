"""Does audio2expression articulate better when trained on expressions smoothed over time?
(issue 15)

The fitted expressions are fitted frame by frame to dlib's landmarks, so they carry the
landmarks' per-frame noise; a model trained to follow that noise may learn the mouth less well.
This runs `jaxtalk bench a2e` with the *training* frames' expressions filtered by a zero-phase
Gaussian of SIGMA frames along time (the held-out frames, which are scored, stay as fitted), after
printing the lag-1..3 autocorrelation of each clip's fitted mouth aperture (a smooth signal
sampled at 25 frames/s stays near 1 at lag 1; white measurement noise pulls it down).

  python scripts/a2e_smoothed_targets.py SIGMA DATASET [jaxtalk bench a2e options ...]
  e.g. python scripts/a2e_smoothed_targets.py 1.0 RUN/dataset --config cpu --steps 800 --set seed=0
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.ndimage

from jaxtalk.cli import main as jaxtalk_main
from jaxtalk.data import dataset as dataset_lib
from jaxtalk.data.dataset import Dataset
from jaxtalk.data.pipeline import open_data
from jaxtalk.metrics.articulation import mouth_aperture


def aperture_autocorr(ds: Dataset) -> None:
  fm, size = ds.face_model(), ds.image_size
  for name in ds.clip_names:
    c = ds.clip(name)
    pts = [fm.project(e, p, size) for e, p in zip(c["expression"], c["pose"], strict=True)]
    d = mouth_aperture(np.stack(pts))
    d = d - d.mean()
    lags = [float(np.corrcoef(d[:-k], d[k:])[0, 1]) for k in (1, 2, 3)]
    print(f"{name}: fitted aperture autocorrelation at lags 1-3: "
          + ", ".join(f"{v:.2f}" for v in lags))  # fmt: skip


def main() -> int:
  sigma, path = float(sys.argv[1]), sys.argv[2]
  ds = open_data(path)
  aperture_autocorr(ds)
  train = {name: ds.train_frames(name) for name in ds.clip_names}
  read = dataset_lib.Clip.__getitem__

  def smoothed(self, field):
    a = read(self, field)
    if field != "expression" or sigma <= 0:
      return a
    out = np.array(a)
    n = train[self.name]
    s = scipy.ndimage.gaussian_filter1d(out.astype(np.float64), sigma, axis=0, mode="nearest")
    out[:n] = s[:n]
    return out

  dataset_lib.Clip.__getitem__ = smoothed
  return jaxtalk_main(["bench", "a2e", path, *sys.argv[3:]])


if __name__ == "__main__":
  raise SystemExit(main())
