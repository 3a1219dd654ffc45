"""Each member of an a2e ensemble scored alone, and the ensemble, on the held-out frames (issue 15).

    jaxtalk bench a2e DATASET --config cpu --steps 800 --set model.a2e.members=3 --workdir W
    python scripts/a2e_members.py DATASET W 3 [--config cpu] [--step N]

The workdir's best checkpoint (or `--step N`) is scored as `jaxtalk bench a2e` scores an a2e
(`jaxtalk.bench.a2e.evaluate_heldout`: predictions from the held-out audio), raw (no output
gain): member k with its own slice of the parameters as a plain Audio2Expression, then the
ensemble (the members' mean, tests/test_a2e_train.py).
"""

from __future__ import annotations

import argparse

import jax

from jaxtalk import model_io
from jaxtalk.bench.a2e import evaluate_heldout
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import open_data


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("dataset")
  ap.add_argument("workdir")
  ap.add_argument("members", type=int)
  ap.add_argument("--config", default="cpu")
  ap.add_argument("--step", type=int, default=None, help="this checkpoint instead of the best")
  ap.add_argument("--holdout", type=float, default=0.2)
  args = ap.parse_args()
  cfg = load_config(args.config, [f"model.a2e.members={args.members}"])
  single = load_config(args.config)
  ds = open_data(args.dataset)
  st = model_io.restore_a2e(cfg, args.workdir, best=args.step is None, step=args.step)

  def score(c, state, tag: str) -> None:
    r = evaluate_heldout(c, ds, state, args.holdout)
    print(
      f"| {tag} | {r['aperture_ratio']:.2f} | {r['aperture_corr']:.3f} | "
      f"{r['leading_mean_std_ratio']:.2f} | {r['leading_mean_corr']:.3f} |"
    )

  print("| predictions | aperture ratio | aperture corr | lead-4 std ratio | lead-4 corr |")
  print("|---|---|---|---|---|")
  for k in range(args.members):
    member = jax.tree.map(lambda x, k=k: x[k], st.params["member"])
    score(single, st.replace(params=member), f"member {k}")
  score(cfg, st, "the ensemble")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
