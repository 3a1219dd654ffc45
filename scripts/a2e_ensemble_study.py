"""Seed spread of the a2e and what averaging seeds does (issue 15; a study, not applied).

    for s in 0 1 2; do jaxtalk bench a2e DATASET --config cpu --minutes 3 --set seed=$s \\
        --workdir W$s; done
    python scripts/a2e_ensemble_study.py DATASET W0 W1 W2 [--config cpu]

Each workdir's a2e (best checkpoint, its own output calibration) predicts the whole clip from
its audio; the held-out frames are scored as `jaxtalk bench a2e` scores them, per seed, for the
mean of the calibrated predictions, and for the mean of the raw predictions with one gain
refitted on the same validation tail (the last 120 training frames) as training fits it.
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxtalk import infer, model_io
from jaxtalk.bench.a2e import HeldOut, _source_envelope, heldout_figures
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import open_data
from jaxtalk.train.a2e_train import training_clips

VAL_TAIL = 120  # train.val_fraction 0.1 of Ted Lieu's 1199 training frames


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("dataset")
  ap.add_argument("workdirs", nargs="+")
  ap.add_argument("--config", default="cpu")
  args = ap.parse_args()
  cfg = load_config(args.config)
  ds = open_data(args.dataset)
  (c,) = training_clips(ds, 0.2)
  clip = ds.clip(c.name)
  nt, n = c.usable_frames, c.num_frames
  audio = np.asarray(clip["audio"][:])
  fit = np.asarray(clip["expression"][:], np.float32)
  pose = np.asarray(clip["pose"][:], np.float64)
  env = _source_envelope(ds, c.name, n - nt, nt, cfg)

  def score(pred: np.ndarray, tag: str) -> None:
    part = HeldOut(c.name, nt, pred[nt:], fit[nt:], pose[nt:], env)
    r = heldout_figures([part], ds.face_model(), ds.image_size, ds.fps)
    print(
      f"| {tag} | {r['aperture_ratio']:.2f} | {r['aperture_corr']:.2f} | "
      f"{r['leading_mean_std_ratio']:.2f} | {r['leading_mean_corr']:.2f} | "
      f"{r.get('sync_offset_frames')} |"
    )

  print("| predictions | aperture ratio | aperture corr | lead-4 std ratio | lead-4 corr | sync |")
  print("|---|---|---|---|---|---|")
  raws, calibrated = [], []
  for w in args.workdirs:
    st = infer.restore_a2e_state(cfg, w)
    cal = model_io.load_a2e_calibration(w, int(st.step), cfg.data.expression_dim)
    raw = model_io.predict_a2e(cfg, st.params, st.data_stats, audio)
    raws.append(raw)
    calibrated.append(raw if cal is None else cal.apply(raw))
    score(raw, f"{w}, raw")
    score(calibrated[-1], f"{w}, calibrated")
  mean = np.mean(raws, axis=0)
  score(np.mean(calibrated, axis=0), "mean of the calibrated")
  val = slice(nt - VAL_TAIL, nt)
  gain = np.clip(fit[val].std(0) / np.maximum(mean[val].std(0), 1e-6), 1.0, 2.0)
  centre = mean[: nt - VAL_TAIL].mean(0)
  score(centre + gain * (mean - centre), "mean of the raw, gain refitted")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
