"""What a training run shows and leaves behind besides checkpoints.

progress bar   tqdm: step, steps/s, ETA, the latest losses
WORKDIR/metrics.jsonl   one JSON object per line:
    {"event": "start", "kind": "renderer", "perceptual": false, "note": "...", ...}
    {"split": "train", "step": 50, "stage": 1, "time": ..., "loss_g": ..., "l1": ...}
    {"split": "val", "step": 1000, "stage": 1, "rec": ..., "psnr": ...}
    {"event": "end" | "diverged", "step": ...}
WORKDIR/samples/step_0001000.png   eroded input | shape input | output | target, one row per
                                   frame of the batch's first window
WORKDIR/kernels/step_0001000.npy   stage 2: the adaptive smoothing's per-frame kernels (B, T, K)
                                   on that sample batch, float32; metrics.jsonl gets a
    {"event": "kernels", "step": ..., "frames": B*T, "mean": [K], "std": [K], "min": [K],
     "max": [K], "frame_spread": ...}   record (kernel_summary)
`jaxtalk plot WORKDIR` draws metrics.jsonl as loss curves (plot_metrics) and, after stage 2,
the learned kernels as WORKDIR/kernels.png (plot_kernels): the mean kernel over frames with
its spread (std, min-max) at the last record, and how the spread grew over training.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

SAMPLE_COLUMNS = ("eroded", "shape", "output", "target")


class MetricsLog:
  """Appends JSON lines to WORKDIR/metrics.jsonl (flushed per line: a crash loses nothing)."""

  def __init__(self, path: str | pathlib.Path, enabled: bool = True):
    self.path = pathlib.Path(path)
    self.enabled = enabled
    if enabled:
      self.path.parent.mkdir(parents=True, exist_ok=True)

  def write(self, record: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    rec = {"time": round(time.time(), 3), **record}
    with self.path.open("a") as f:
      f.write(json.dumps(rec, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def read_metrics(path: str | pathlib.Path) -> list[dict]:
  """The records of a metrics.jsonl (a torn last line, from a killed run, is skipped)."""
  out = []
  for line in pathlib.Path(path).read_text().splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


def progress(total: int, initial: int, desc: str, enabled: bool = True):
  """A tqdm bar over steps (steps/s and ETA from tqdm itself)."""
  from tqdm.auto import tqdm  # noqa: PLC0415

  return tqdm(
    total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True,
    smoothing=0.1,
  )  # fmt: skip


def short(metrics: Mapping[str, float], keys: Iterable[str]) -> dict[str, str]:
  return {k: f"{metrics[k]:.4g}" for k in keys if k in metrics}


# ----------------------------------------------------------------------------------------------
# Sample grids.


def sample_grid(columns: Mapping[str, np.ndarray], gap: int = 2) -> np.ndarray:
  """(T*S + gaps, 4*S + gaps, 3) uint8: one row per frame, the columns side by side."""
  cols = [np.asarray(columns[k]) for k in SAMPLE_COLUMNS]
  t, s = cols[0].shape[0], cols[0].shape[1]
  h = t * s + (t - 1) * gap
  w = len(cols) * s + (len(cols) - 1) * gap
  grid = np.full((h, w, 3), 255, np.uint8)
  for j, col in enumerate(cols):
    for i in range(t):
      grid[i * (s + gap) : i * (s + gap) + s, j * (s + gap) : j * (s + gap) + s] = col[i]
  return grid


def save_sample_grid(path: str | pathlib.Path, columns: Mapping[str, np.ndarray]) -> pathlib.Path:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.image  # noqa: PLC0415

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  matplotlib.image.imsave(path, sample_grid(columns))
  return path


# ----------------------------------------------------------------------------------------------
# Loss curves.

# (title, [(split, key), ...]) panels; a panel with no data is left out.
PANELS = (
  ("generator loss (Eq. 8)", [("train", "loss_g")]),
  ("discriminator loss (Eq. 6)", [("train", "loss_d")]),
  ("L1 mask-weighted", [("train", "l1"), ("val", "l1")]),
  ("VGG perceptual", [("train", "perceptual"), ("val", "perceptual")]),
  ("G adversarial (Eq. 7)", [("train", "g_adv")]),
  ("D(real), D(fake)", [("train", "d_real"), ("train", "d_fake")]),
  ("validation reconstruction", [("val", "rec")]),
  ("validation PSNR (dB)", [("val", "psnr")]),
  ("a2e loss", [("train", "loss"), ("val", "loss")]),
  ("a2e L2", [("train", "l2"), ("val", "l2")]),
  ("a2e velocity", [("train", "velocity"), ("val", "velocity")]),
)


def plot_metrics(metrics_path: str | pathlib.Path, out_png: str | pathlib.Path) -> pathlib.Path:
  """Draws the loss curves of a metrics.jsonl to a PNG (matplotlib, Agg backend)."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  records = read_metrics(metrics_path)
  series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
  stage_starts = sorted({r["step"] for r in records if r.get("event") == "stage" and "step" in r})
  for r in records:
    split = r.get("split")
    if split is None or "step" not in r:
      continue
    for k, v in r.items():
      if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        xs, ys = series.setdefault((split, k), ([], []))
        xs.append(int(r["step"]))
        ys.append(float(v))
  panels = [(t, [s for s in lines if s in series]) for t, lines in PANELS]
  panels = [(t, lines) for t, lines in panels if lines]
  if not panels:
    raise ValueError(f"{metrics_path}: no train or val metrics to plot")
  n = len(panels)
  ncols = min(3, n)
  nrows = math.ceil(n / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.2 * nrows), squeeze=False)
  for ax, (title, lines) in zip(axes.flat, panels, strict=False):
    for split, key in lines:
      xs, ys = series[(split, key)]
      style = "-" if split == "train" else "o-"
      ax.plot(xs, ys, style, label=f"{split} {key}", markersize=3, linewidth=1)
    for s in stage_starts:
      ax.axvline(s, color="gray", linestyle=":", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  fig.tight_layout()
  out = pathlib.Path(out_png)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out


# ----------------------------------------------------------------------------------------------
# Adaptive smoothing kernels.


def kernel_summary(weights_btk: np.ndarray) -> dict[str, Any]:
  """Statistics over frames of per-frame smoothing kernels (B, T, K): per tap the mean, std,
  min and max, and `frame_spread`, the mean over taps of the std (0 when every frame uses the
  same kernel: the adaptive smoothing has not (yet) learned to adapt)."""
  w = np.asarray(weights_btk, np.float64).reshape(-1, np.shape(weights_btk)[-1])
  std = w.std(axis=0)
  return {
    "frames": int(w.shape[0]),
    "mean": [round(float(v), 6) for v in w.mean(axis=0)],
    "std": [round(float(v), 6) for v in std],
    "min": [round(float(v), 6) for v in w.min(axis=0)],
    "max": [round(float(v), 6) for v in w.max(axis=0)],
    "frame_spread": float(std.mean()),
  }


def save_kernels(workdir: str | pathlib.Path, step: int, weights_btk: np.ndarray) -> pathlib.Path:
  path = pathlib.Path(workdir) / "kernels" / f"step_{step:07d}.npy"
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, np.asarray(weights_btk, np.float32))
  return path


def kernel_records(metrics_path: str | pathlib.Path) -> list[dict]:
  return [r for r in read_metrics(metrics_path) if r.get("event") == "kernels" and "mean" in r]


def plot_kernels(metrics_path: str | pathlib.Path, out_png: str | pathlib.Path) -> pathlib.Path:
  """The learned smoothing kernels of a run (its "kernels" records) to a PNG: left, the mean
  kernel over frames at the last record, with +-1 std bars and the min-max range per tap;
  right, the spread over frames (mean std per tap) against the step."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  recs = kernel_records(metrics_path)
  if not recs:
    raise ValueError(f"{metrics_path}: no smoothing kernels recorded (stage 2 not reached?)")
  last = recs[-1]
  mean, std = np.asarray(last["mean"]), np.asarray(last["std"])
  lo, hi = np.asarray(last["min"]), np.asarray(last["max"])
  r = len(mean) // 2
  taps = np.arange(-r, r + 1)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
  ax1.bar(taps, mean, color="tab:blue", alpha=0.7, label="mean over frames")
  ax1.errorbar(taps, mean, yerr=std, fmt="none", ecolor="black", capsize=4, label="+-1 std")
  ax1.vlines(taps + 0.25, lo, hi, color="tab:red", label="min-max")
  ax1.set_xticks(taps)
  ax1.set_xlabel("tap k (frame offset)")
  ax1.set_title(f"kernel W_t,k at step {last['step']} ({last['frames']} frames)", fontsize=10)
  ax1.legend(fontsize=8)
  ax1.grid(alpha=0.3)
  ax2.plot([x["step"] for x in recs], [x["frame_spread"] for x in recs], "o-", markersize=3)
  ax2.set_xlabel("step")
  ax2.set_title("spread over frames (mean std of a tap)", fontsize=10)
  ax2.grid(alpha=0.3)
  fig.tight_layout()
  out = pathlib.Path(out_png)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out
