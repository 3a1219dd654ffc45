"""audio2expression articulation on held-out audio of the same person (issue 15).

    jaxtalk bench a2e DATASET [--holdout 0.2] [--minutes M] [--config C] [--set K=V]
                      [--json FILE] [--plot FILE] [--workdir W]

Trains audio2expression on the training frames of DATASET (the dataset's recorded holdout
split; `--holdout` splits each clip by time for a dataset made without one), for `--minutes`
of wall-clock time (or the config's a2e_train.steps), picks the checkpoint of the best
validation loss (validation windows come from the training frames too), then predicts the
expressions of the held-out frames from their audio exactly as inference does
(`jaxtalk.infer.predict_expressions`, with the output calibration training fitted on the
validation frames, jaxtalk/train/a2e_calibrate.py) and compares them with the expressions
fitted to the real held-out frames:

- per leading component: std ratio (predicted / fitted) and Pearson correlation;
- mouth aperture (inner-lip gap / mouth width, jaxtalk.metrics.articulation) of the face
  model's landmarks projected with the fitted head pose, predicted vs fitted: amplitude ratio
  and correlation;
- the weight-free lip-sync offset of the predicted aperture against the audio envelope, beside
  the same offset of the fitted (real) aperture: on real clips the mouth may lead the sound
  (see jaxtalk/metrics/articulation.py), so the generated offset is judged against the real one.

Prints a table, writes `--json` and `--plot` (predicted vs fitted aperture over time). The
figures without the calibration are in the JSON's "uncalibrated" entry, and printed beside.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import tempfile
import time
import types

import numpy as np

from jaxtalk import infer, model_io
from jaxtalk.bench.machine import describe
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import open_data
from jaxtalk.errors import JaxtalkError
from jaxtalk.io.audio import read_audio
from jaxtalk.metrics.articulation import articulation, audio_envelope, mouth_aperture, sync_offset
from jaxtalk.train.a2e_train import train_a2e, training_clips

LEADING = 4  # components whose mean correlation the target is stated on (issue 15)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("dataset", help="a dataset folder (jaxtalk preprocess)")
  parser.add_argument("--holdout", type=float, default=None,
                      help="hold out the last FRACTION of each clip when the dataset records no "
                      "split (default: the dataset's split)")  # fmt: skip
  parser.add_argument(
    "--minutes",
    type=float,
    default=None,
    help="wall-clock training budget (default: a2e_train.max_minutes / steps)",
  )
  parser.add_argument("--steps", type=int, default=None, help="step cap (default: a2e_train.steps"
                      ", or unlimited with --minutes)")  # fmt: skip
  parser.add_argument("--config", default="tiny", help="config file or shipped name")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      help="config override KEY=VALUE (repeatable)")  # fmt: skip
  parser.add_argument("--workdir", default=None, help="training workdir (default: a temp dir)")
  parser.add_argument("--json", default=None, help="write the figures here")
  parser.add_argument("--plot", default=None, help="write a PNG of predicted vs fitted aperture")
  parser.add_argument("--max-shift", type=int, default=10, help="sync offset search, frames")


def _component_stats(pred_ne: np.ndarray, fit_ne: np.ndarray) -> list[dict]:
  out = []
  for k in range(fit_ne.shape[1]):
    a = articulation(pred_ne[:, k], fit_ne[:, k])
    out.append({"component": k, "std_ratio": a["aperture_ratio"], "corr": a["aperture_corr"]})
  return out


def _source_envelope(ds, name: str, n_frames: int, start: int, cfg) -> np.ndarray | None:
  """The audio envelope of frames start .. start + n_frames - 1 of a clip, from its source
  file (None when the source is not where preprocessing found it)."""
  info = ds.manifest["clips"][name]
  path = ds.manifest.get("inputs", {}).get(info["source"], {}).get("path")
  if not path or not pathlib.Path(path).is_file():
    return None
  samples = read_audio(path, cfg.data.sample_rate)
  first = int(info.get("first_frame", 0)) + start
  skip = int(round(first / ds.fps * cfg.data.sample_rate))
  return audio_envelope(samples[skip:], cfg.data.sample_rate, ds.fps, n_frames)


def evaluate_heldout(
  cfg,
  ds,
  a2e_state,
  holdout: float | None,
  max_shift: int = 10,
  calibration: model_io.A2ECalibration | None = None,
) -> dict:
  """Figures of a trained a2e on the held-out frames of every clip of `ds`: its predictions
  from the held-out audio (as inference makes them) against the fitted expressions."""
  models = types.SimpleNamespace(config=cfg, a2e_state=a2e_state, a2e_calibration=calibration)
  parts = []
  for c in training_clips(ds, holdout):
    start, n = c.usable_frames, c.num_frames - c.usable_frames
    if n <= 0:
      continue
    clip = ds.clip(c.name)
    parts.append(
      HeldOut(
        clip=c.name,
        first_frame=start,
        pred_ne=infer.predict_expressions(models, np.asarray(clip["audio"][start:])),
        fit_ne=np.asarray(clip["expression"][start:], np.float32),
        pose_n6=np.asarray(clip["pose"][start:], np.float64),
        envelope_n=_source_envelope(ds, c.name, n, start, cfg),
      )
    )
  if not parts:
    raise JaxtalkError(
      f"{ds.path}: no held-out frames (the dataset records no split: give --holdout)"
    )
  return heldout_figures(parts, ds.face_model(), ds.image_size, ds.fps, max_shift)


@dataclasses.dataclass
class HeldOut:
  """One clip's held-out frames: predicted and fitted expressions, head pose, audio envelope
  (None when the source audio is not available)."""

  clip: str
  first_frame: int
  pred_ne: np.ndarray
  fit_ne: np.ndarray
  pose_n6: np.ndarray
  envelope_n: np.ndarray | None


def heldout_figures(
  parts: list[HeldOut], face_model, size: int, fps: float, max_shift: int = 10
) -> dict:
  """Component std ratio / correlation and aperture ratio / correlation over all clips'
  held-out frames (concatenated); the sync offsets per clip, then frame-weighted."""
  preds, fits, ap_pred, ap_fit, per_clip = [], [], [], [], []
  for h in parts:
    n = h.fit_ne.shape[0]
    lm_pred = np.stack([face_model.project(e, p, size) for e, p in zip(h.pred_ne, h.pose_n6)])
    lm_fit = np.stack([face_model.project(e, p, size) for e, p in zip(h.fit_ne, h.pose_n6)])
    a_pred, a_fit = mouth_aperture(lm_pred), mouth_aperture(lm_fit)
    entry = {"clip": h.clip, "first_heldout_frame": h.first_frame, "frames": n}
    if h.envelope_n is not None and n >= 2 * max_shift + 8:
      off, conf = sync_offset(a_pred, h.envelope_n, max_shift, fps)
      real_off, real_conf = sync_offset(a_fit, h.envelope_n, max_shift, fps)
      entry.update(
        sync_offset_frames=off, sync_confidence=conf,
        real_sync_offset_frames=real_off, real_sync_confidence=real_conf,
      )  # fmt: skip
    per_clip.append(entry)
    preds.append(h.pred_ne)
    fits.append(h.fit_ne)
    ap_pred.append(a_pred)
    ap_fit.append(a_fit)
  pred_ne, fit_ne = np.concatenate(preds), np.concatenate(fits)
  comps = _component_stats(pred_ne, fit_ne)
  art = articulation(np.concatenate(ap_pred), np.concatenate(ap_fit))
  synced = [e for e in per_clip if "sync_offset_frames" in e]
  out = {
    "heldout_frames": int(fit_ne.shape[0]),
    "components": comps,
    "leading_mean_corr": float(np.mean([c["corr"] for c in comps[:LEADING]])),
    "leading_mean_std_ratio": float(np.mean([c["std_ratio"] for c in comps[:LEADING]])),
    **art,
    "clips": per_clip,
    "aperture_pred": [float(v) for v in np.concatenate(ap_pred)],
    "aperture_fit": [float(v) for v in np.concatenate(ap_fit)],
  }
  if synced:
    w = np.array([e["frames"] for e in synced], np.float64)
    for key in ("sync_offset_frames", "real_sync_offset_frames"):
      out[key] = float(np.average([e[key] for e in synced], weights=w))
  return out


def _plot(result: dict, path: str, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fit = np.asarray(result["aperture_fit"])
  pred = np.asarray(result["aperture_pred"])
  fig, ax = plt.subplots(figsize=(12, 3.2), dpi=100)
  t = np.arange(fit.size)
  ax.plot(t, fit, label="fitted (real held-out frames)", color="0.2", lw=1.2)
  ax.plot(t, pred, label="predicted from held-out audio", color="tab:red", lw=1.2)
  if "uncalibrated" in result:
    raw = np.asarray(result["uncalibrated"]["aperture_pred"])
    ax.plot(t, raw, label="predicted, without the output gain", color="tab:red", lw=0.8, ls=":")
  ax.set_xlabel("held-out frame")
  ax.set_ylabel("mouth aperture (gap / width)")
  ax.set_title(
    f"{title}: aperture ratio {result['aperture_ratio']:.2f}, corr {result['aperture_corr']:.2f}"
  )
  ax.legend(loc="upper right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def run(args: argparse.Namespace) -> int:
  cfg = load_config(args.config, args.overrides)
  with cfg.unlocked():
    if args.minutes is not None:
      cfg.a2e_train.max_minutes = float(args.minutes)
      if args.steps is None:
        cfg.a2e_train.steps = 10**9  # the budget decides
    if args.steps is not None:
      cfg.a2e_train.steps = int(args.steps)
  ds = open_data(args.dataset)
  tmp = None
  if args.workdir is None:
    tmp = tempfile.TemporaryDirectory(prefix="jaxtalk-bench-a2e-")
    workdir = pathlib.Path(tmp.name)
  else:
    workdir = pathlib.Path(args.workdir)
  try:
    t0 = time.monotonic()
    res = train_a2e(cfg, ds.path, workdir, holdout=args.holdout, show_progress=False)
    train_s = time.monotonic() - t0
    state = infer.restore_a2e_state(cfg, workdir)
    cal = model_io.load_a2e_calibration(workdir, int(state.step), cfg.data.expression_dim)
    result = evaluate_heldout(cfg, ds, state, args.holdout, args.max_shift, cal)
    if cal is not None:
      raw = evaluate_heldout(cfg, ds, state, args.holdout, args.max_shift)
      result["uncalibrated"] = {k: v for k, v in raw.items() if k != "aperture_fit"}
      result["output_gain"] = [float(g) for g in cal.gain_e]
  finally:
    if tmp is not None:
      tmp.cleanup()
  result.update(
    dataset=str(ds.path),
    config=args.config,
    overrides=list(args.overrides),
    steps=int(res.step),
    selected_step=int(state.step),
    train_seconds=round(train_s, 1),
    machine=describe(),
  )
  print(f"machine: {describe()} (timings on a shared machine are noisy)")
  print(
    f"a2e trained {res.step} steps in {train_s:.0f} s (selected step {int(state.step)}); "
    f"held-out frames: {result['heldout_frames']}"
  )
  print("component  std ratio  corr")
  for c in result["components"][: max(LEADING, 6)]:
    print(f"  {c['component']:3d}      {c['std_ratio']:6.2f}  {c['corr']:6.2f}")
  print(
    f"leading {LEADING}: mean std ratio {result['leading_mean_std_ratio']:.2f}, "
    f"mean corr {result['leading_mean_corr']:.2f}"
  )
  print(f"mouth aperture: ratio {result['aperture_ratio']:.2f}, corr {result['aperture_corr']:.2f}")
  if "uncalibrated" in result:
    u = result["uncalibrated"]
    print(
      f"without the output gain ({' '.join(f'{g:.2f}' for g in result['output_gain'][:4])} on"
      f" components 0-3): aperture ratio {u['aperture_ratio']:.2f}, corr"
      f" {u['aperture_corr']:.2f}; leading {LEADING} std ratio"
      f" {u['leading_mean_std_ratio']:.2f}, corr {u['leading_mean_corr']:.2f}"
    )
  if "sync_offset_frames" in result:
    print(
      f"lip-sync offset (frames, + = mouth after sound): predicted "
      f"{result['sync_offset_frames']:+.1f}, real {result['real_sync_offset_frames']:+.1f}"
    )
  else:
    print("lip-sync offset: the source video is not available (or the held-out part is too short)")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  if args.plot:
    _plot(result, args.plot, pathlib.Path(ds.path).name)
  return 0
