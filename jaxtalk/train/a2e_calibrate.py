"""The a2e's output calibration (issue 15), fitted once after training.

Even with the mouth-landmark, correlation and amplitude terms in its loss, the a2e predicts most
expression components with about half of their real amplitude on audio it has not trained on
(scripts/a2e_gain_study.py: components 1-3 need gains of 1.6-2.8 on the Ted Lieu clip). On the
frames it trained on it does not, so the gain must come from frames it has not fitted: the
validation frames, which already choose the best checkpoint. Per expression component k:

    gain_k   = clip(std(fitted_k) / std(predicted_k) over the validation frames, 1, gain_cap)
    centre_k = mean(predicted_k) over the training frames
    output   = centre + gain * (prediction - centre)

The gain only scales: it never lowers an amplitude (clip at 1) and never changes a correlation.
Held-out frames (the dataset's split) take no part: only the segments training already uses.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxtalk import model_io
from jaxtalk.data.pipeline import Segment


def _predict(cfg: Any, ds: Any, params: Any, stats: Any, segs: list[Segment]):
  pred, fit = [], []
  for s in segs:
    clip = ds.clip(s.clip)
    pred.append(
      model_io.predict_a2e(cfg, params, stats, np.asarray(clip["audio"][s.start : s.stop]))
    )
    fit.append(np.asarray(clip["expression"][s.start : s.stop], np.float32))
  return np.concatenate(pred), np.concatenate(fit)


def fit_calibration(
  cfg: Any,
  ds: Any,
  params: Any,
  data_stats: Any,
  step: int,
  train_segs: list[Segment],
  val_segs: list[Segment],
) -> tuple[model_io.A2ECalibration, dict] | None:
  """(calibration, what to record with it), or None when a2e_train.gain_cap <= 1 or there are
  no validation frames to fit it on."""
  cap = float(cfg.a2e_train.get("gain_cap", 0.0) or 0.0)
  if cap <= 1.0 or not val_segs:
    return None
  # host copies; jax.device_get also reads a replicated array spread over several processes
  params, data_stats = jax.device_get((params, data_stats))
  pred_train, _ = _predict(cfg, ds, params, data_stats, train_segs)
  pred_val, fit_val = _predict(cfg, ds, params, data_stats, val_segs)
  raw = fit_val.std(0) / np.maximum(pred_val.std(0), 1e-6)
  gain = np.clip(raw, 1.0, cap).astype(np.float32)
  cal = model_io.A2ECalibration(int(step), pred_train.mean(0).astype(np.float32), gain)
  note = {
    "gain_cap": cap,
    "fitted_on": f"{len(pred_val)} validation frames, centre on {len(pred_train)} training",
    "raw_gain": [round(float(v), 4) for v in raw],
  }
  return cal, note
