"""A linear reference for `jaxtalk bench a2e`: ridge regression from the standardised log-mel
windows (of the frame, optionally of frames t-4 and t+4 too, 20 pooled bands each) to the
mouth aperture and to the expressions, fitted on the training frames of a dataset's recorded
holdout split and scored on its held-out frames (aperture ratio/corr as jaxtalk.metrics.
articulation, correlation of the leading 4 components). It tells how much of the mouth motion
these audio features predict linearly on this little data.

  python scripts/a2e_linear_ceiling.py DATASET
"""

from __future__ import annotations

import sys

import numpy as np

from jaxtalk.data.pipeline import open_data
from jaxtalk.metrics.articulation import articulation, mouth_aperture


def ridge(f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray, lam: float) -> np.ndarray:
  m, ym = f_tr.mean(0), y_tr.mean(0)
  a = f_tr - m
  w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y_tr - ym))
  return (f_te - m) @ w + ym


def band_features(x_nwf: np.ndarray, shifts: list[int]) -> np.ndarray:
  """(N, len(shifts) * W * 20): each frame's log-mel window pooled to 20 bands, beside the
  windows of frames t + s for s in `shifts` (wrapping at the ends)."""
  n, w = x_nwf.shape[:2]
  bands = x_nwf.reshape(n, w, 20, -1).mean(-1)
  return np.concatenate([np.roll(bands, -s, 0).reshape(n, -1) for s in shifts], 1)


def heldout_scores(
  feats: np.ndarray, ap: np.ndarray, expr: np.ndarray, tr: int, lam: float
) -> tuple[dict, list[float]]:
  """Ridge fits on the first `tr` frames, scored on the rest: the aperture's articulation
  figures and the correlations of the leading 4 expression components."""
  pa = ridge(feats[:tr], ap[:tr, None], feats[tr:], lam)[:, 0]
  pe = ridge(feats[:tr], expr[:tr], feats[tr:], lam)
  lead = [np.corrcoef(pe[:, k], expr[tr:, k])[0, 1] for k in range(4)]
  return articulation(pa, ap[tr:]), lead


def main() -> None:
  ds = open_data(sys.argv[1])
  fm, size = ds.face_model(), ds.image_size
  for name in ds.clip_names:
    c = ds.clip(name)
    tr = ds.train_frames(name)
    audio = np.asarray(c["audio"], np.float64)
    expr = np.asarray(c["expression"], np.float64)
    pose = np.asarray(c["pose"], np.float64)
    ap = mouth_aperture(np.stack([fm.project(e, p, size) for e, p in zip(expr, pose)]))
    x = (audio - audio[:tr].mean((0, 1))) / audio[:tr].std((0, 1))
    for shifts in ([0], [-4, 0, 4]):
      feats = band_features(x, shifts)
      for lam in (3e2, 1e3):
        art, lead = heldout_scores(feats, ap, expr, tr, lam)
        print(
          f"{name}: frames {shifts}, lambda {lam:g}: aperture ratio {art['aperture_ratio']:.2f} "
          f"corr {art['aperture_corr']:.2f}; leading-4 corr {np.mean(lead):.2f} "
          f"({', '.join(f'{v:.2f}' for v in lead)})"
        )


if __name__ == "__main__":
  main()
