"""The a2e's output calibration (issue 15), fitted once after training.

Even with the mouth-landmark, correlation and amplitude terms in its loss, the a2e predicts the
mouth with about half of its real amplitude on audio it has not trained on (scripts/
a2e_gain_study.py). On the frames it trained on it does not, so the gain must come from frames
it has not fitted: the validation frames, which already choose the best checkpoint.

    output = centre + gain * (prediction - centre),  centre = mean prediction (training frames)

`a2e_train.gain_mode` says which gain, each clipped to [1, a2e_train.gain_cap] (never lowers an
amplitude):
- "mouth" (default): ONE gain for every component, the ratio of the mouth's amplitude, real over
  predicted: sqrt(sum of the variances over the validation frames of the face model's mouth
  landmarks, real / predicted) (expressions through a2e_step.mouth_basis). One gain scales the
  predicted mouth without changing its shape, so the mouth aperture's correlation is kept.
- "component": a gain per expression component, std(fitted_k) / std(predicted_k). It brings
  every leading component to its real amplitude, but it also amplifies the components that carry
  noise rather than the mouth's motion: on Ted Lieu it cost 0.01-0.05 of aperture correlation
  that "mouth" keeps, at the same aperture amplitude (docs/benchmarks.md).

Held-out frames (the dataset's split) take no part: only the segments training already uses.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxtalk import model_io
from jaxtalk.data.pipeline import Segment
from jaxtalk.errors import ConfigError

GAIN_MODES = ("mouth", "component")


def _predict(cfg: Any, ds: Any, params: Any, stats: Any, segs: list[Segment]):
  pred, fit = [], []
  for s in segs:
    clip = ds.clip(s.clip)
    pred.append(
      model_io.predict_a2e(cfg, params, stats, np.asarray(clip["audio"][s.start : s.stop]))
    )
    fit.append(np.asarray(clip["expression"][s.start : s.stop], np.float32))
  return np.concatenate(pred), np.concatenate(fit)


def gain_mode(cfg: Any) -> str:
  """a2e_train.gain_mode, checked (training checks it when it starts, not after its minutes)."""
  mode = str(cfg.a2e_train.get("gain_mode", "mouth"))
  if mode not in GAIN_MODES:
    raise ConfigError(f"a2e_train.gain_mode must be one of {', '.join(GAIN_MODES)}, got {mode!r}")
  return mode


def fit_calibration(
  cfg: Any,
  ds: Any,
  params: Any,
  data_stats: Any,
  step: int,
  train_segs: list[Segment],
  val_segs: list[Segment],
  basis_ek: np.ndarray,
) -> tuple[model_io.A2ECalibration, dict] | None:
  """(calibration, what to record with it), or None when a2e_train.gain_cap <= 1 or there are
  no validation frames to fit it on. `basis_ek`: expressions -> mouth landmark offsets
  (a2e_step.mouth_basis), for gain_mode "mouth"."""
  a = cfg.a2e_train
  cap = float(a.get("gain_cap", 0.0) or 0.0)
  mode = gain_mode(cfg)
  if cap <= 1.0 or not val_segs:
    return None
  # host copies; jax.device_get also reads a replicated array spread over several processes
  params, data_stats = jax.device_get((params, data_stats))
  pred_train, _ = _predict(cfg, ds, params, data_stats, train_segs)
  pred_val, fit_val = _predict(cfg, ds, params, data_stats, val_segs)
  if mode == "mouth":
    basis = np.asarray(basis_ek, np.float64)
    var_fit = np.sum(np.var(fit_val @ basis, axis=0))
    var_pred = np.sum(np.var(pred_val @ basis, axis=0))
    raw = np.full(pred_val.shape[1], np.sqrt(var_fit / max(var_pred, 1e-12)))
  else:
    raw = fit_val.std(0) / np.maximum(pred_val.std(0), 1e-6)
  gain = np.clip(raw, 1.0, cap).astype(np.float32)
  cal = model_io.A2ECalibration(int(step), pred_train.mean(0).astype(np.float32), gain)
  note = {
    "gain_cap": cap,
    "gain_mode": mode,
    "fitted_on": f"{len(pred_val)} validation frames, centre on {len(pred_train)} training",
    "raw_gain": [round(float(v), 4) for v in raw],
  }
  return cal, note
