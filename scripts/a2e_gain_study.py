"""What a per-component output gain, fitted on the a2e's validation tail, would do to its
held-out figures (issue 15; a study, not something jaxtalk applies).

    python scripts/a2e_gain_study.py RUN [--config cpu] [--holdout 0.2]

RUN is a `jaxtalk bench quality ... -o RUN` folder (RUN/dataset, RUN/model/a2e). The trained
a2e predicts the whole clip from its audio. For each fitting range (the last 120 or 300
training frames, or all of them) the gain of expression component k is std(fitted_k) /
std(predicted_k) over that range, clipped to [1, cap]; predictions are scaled about their
training mean by it, and the held-out frames are scored as `jaxtalk bench a2e` scores them
(mouth aperture ratio and correlation, leading-4 component std ratio and correlation, lip-sync
offset). No held-out frame enters a gain.
"""

from __future__ import annotations

import argparse
import pathlib
import types

import numpy as np

from jaxtalk import infer
from jaxtalk.bench.a2e import HeldOut, _source_envelope, heldout_figures
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import open_data
from jaxtalk.train.a2e_train import training_clips


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run", type=pathlib.Path)
  ap.add_argument("--config", default="cpu")
  ap.add_argument("--holdout", type=float, default=0.2)
  args = ap.parse_args()
  cfg = load_config(args.config)
  ds = open_data(str(args.run / "dataset"))
  state = infer.restore_a2e_state(cfg, args.run / "model" / "a2e")
  models = types.SimpleNamespace(config=cfg, a2e_state=state, a2e_calibration=None)
  face_model = ds.face_model()
  for c in training_clips(ds, args.holdout):
    clip = ds.clip(c.name)
    n_train, n = c.usable_frames, c.num_frames
    pred = infer.predict_expressions(models, np.asarray(clip["audio"][:]))
    fit = np.asarray(clip["expression"][:], np.float32)
    pose = np.asarray(clip["pose"][:], np.float64)
    env = _source_envelope(ds, c.name, n - n_train, n_train, cfg)

    def score(p, tag, c=c, n_train=n_train, fit=fit, pose=pose, env=env):
      part = HeldOut(c.name, n_train, p[n_train:], fit[n_train:], pose[n_train:], env)
      r = heldout_figures([part], face_model, ds.image_size, ds.fps)
      print(
        f"{c.name} {tag:24s} aperture ratio {r['aperture_ratio']:.2f} corr "
        f"{r['aperture_corr']:.2f} | lead-4 std ratio {r['leading_mean_std_ratio']:.2f} corr "
        f"{r['leading_mean_corr']:.2f} | sync {r.get('sync_offset_frames')}"
      )

    score(pred, "as trained")
    mean = pred[:n_train].mean(0)
    for tail in (120, 300, n_train):
      fit_range = slice(n_train - tail, n_train)
      gain = fit[fit_range].std(0) / np.maximum(pred[fit_range].std(0), 1e-6)
      print(f"  gains of components 0-3 from the last {tail} training frames: {gain[:4].round(2)}")
      for cap in (2.0, 3.0):
        score(mean + (pred - mean) * np.clip(gain, 1.0, cap), f"tail {tail}, cap {cap:g}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
