"""Each member of an a2e ensemble scored alone, and their mean, on the held-out frames (issue 15).

    jaxtalk bench a2e DATASET --config cpu --steps 800 --set model.a2e.members=3 --workdir W
    python scripts/a2e_members.py DATASET W 3 [--config cpu] [--step N]

The workdir's best checkpoint (or `--step N`) predicts from the held-out audio as `jaxtalk bench
a2e` does, raw (no output gain): member k with its own slice of the parameters through a plain
Audio2Expression, then the members' mean and the ensemble itself (the two must agree).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from jaxtalk import model_io
from jaxtalk.bench.a2e import HeldOut, _source_envelope, heldout_figures
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import open_data
from jaxtalk.train.a2e_train import training_clips


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("dataset")
  ap.add_argument("workdir")
  ap.add_argument("members", type=int)
  ap.add_argument("--config", default="cpu")
  ap.add_argument("--step", type=int, default=None, help="this checkpoint instead of the best")
  args = ap.parse_args()
  cfg = load_config(args.config, [f"model.a2e.members={args.members}"])
  single = load_config(args.config)
  ds = open_data(args.dataset)
  (c,) = training_clips(ds, 0.2)
  clip = ds.clip(c.name)
  nt, n = c.usable_frames, c.num_frames
  audio = np.asarray(clip["audio"][nt:])
  fit = np.asarray(clip["expression"][nt:], np.float32)
  pose = np.asarray(clip["pose"][nt:], np.float64)
  env = _source_envelope(ds, c.name, n - nt, nt, cfg)
  st = model_io.restore_a2e(cfg, args.workdir, best=args.step is None, step=args.step)

  def score(pred: np.ndarray, tag: str) -> None:
    r = heldout_figures(
      [HeldOut(c.name, nt, pred, fit, pose, env)], ds.face_model(), ds.image_size, ds.fps
    )
    print(
      f"| {tag} | {r['aperture_ratio']:.2f} | {r['aperture_corr']:.3f} | "
      f"{r['leading_mean_std_ratio']:.2f} | {r['leading_mean_corr']:.3f} |"
    )

  print("| predictions | aperture ratio | aperture corr | lead-4 std ratio | lead-4 corr |")
  print("|---|---|---|---|---|")
  preds = []
  for k in range(args.members):
    member = jax.tree.map(lambda x, k=k: x[k], st.params["member"])
    preds.append(model_io.predict_a2e(single, member, st.data_stats, audio))
    score(preds[-1], f"member {k}")
  score(np.mean(preds, axis=0), "mean of the members")
  score(model_io.predict_a2e(cfg, st.params, st.data_stats, audio), "the ensemble")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
