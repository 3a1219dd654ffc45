"""How much of the mouth motion it is given does the renderer draw? (issues 9, 13)

    python scripts/render_fitted.py RUN [--config cpu] [--expressions fitted|a2e]
                                    [--no-smoothing] [--gain G] [-o NAME] [--set KEY=VALUE]

RUN is a `jaxtalk bench quality ... -o RUN` folder. The held-out part (RUN/real.mp4) is
re-synthesised as the bench does, but from the expressions fitted to the real held-out frames
(a perfect audio2expression; `--expressions a2e` gives the bench's own video again), optionally
without the stage-2 smoothing, and scored with `jaxtalk eval` against the real frames. The
difference to the bench's figures is what the a2e loses; the difference to 1 is the renderer's
(and the measurement's: compare with real frames resampled at the crop size).
--gain G scales the a2e's output gain by G (`--expressions a2e`): does a mouth fed larger
expressions than the calibration gives open as much once rendered?
Writes RUN/NAME.mp4 and RUN/NAME.json; prints the headline figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

import numpy as np

from jaxtalk import infer
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import open_data
from jaxtalk.metrics.evaluate import evaluate

KEYS = ("aperture_ratio", "aperture_corr", "msi_lip_ratio", "mouth_lapvar_ratio", "lmd",
        "sync_offset_frames")  # fmt: skip


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run", type=pathlib.Path)
  ap.add_argument("--config", default="cpu")
  ap.add_argument("--expressions", choices=("fitted", "a2e"), default="fitted")
  ap.add_argument("--no-smoothing", action="store_true")
  ap.add_argument("--gain", type=float, default=1.0, help="times the a2e's output gain (a2e)")
  ap.add_argument("-o", "--name", default=None)
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="the run's config overrides, e.g. --set data.crop_scale=1.5")  # fmt: skip
  args = ap.parse_args()
  name = args.name or f"{args.expressions}{'_nosmooth' if args.no_smoothing else ''}"
  if args.gain != 1.0:
    if args.expressions != "a2e":
      raise SystemExit("--gain scales the a2e's output gain: use it with --expressions a2e")
    name += f"_gain{args.gain:g}"
  cfg = load_config(args.config, args.set)
  ds = open_data(str(args.run / "dataset"))
  (clip,) = ds.clip_names
  fitted = np.asarray(ds.clip(clip)["expression"][ds.train_frames(clip) :], np.float32)
  models = infer.load_models(args.run / "model", cfg)
  if args.gain != 1.0:
    cal = models.a2e_calibration
    if cal is None:
      raise SystemExit(f"{args.run}/model has no a2e calibration to scale")
    models.a2e_calibration = dataclasses.replace(cal, gain_e=cal.gain_e * args.gain)
  if args.no_smoothing:
    models.stage = 1  # smoothing_weights() then returns None: raw shape renders
  if args.expressions == "fitted":

    def fitted_expressions(_models, audio_nwf):
      if len(audio_nwf) != len(fitted):
        raise SystemExit(f"{len(audio_nwf)} audio frames for {len(fitted)} held-out frames")
      return fitted

    infer.predict_expressions = fitted_expressions  # synth_frames looks it up at call time
  real = args.run / "real.mp4"
  background = infer.prepare_background(real, models)
  out = args.run / f"{name}.mp4"
  infer.synthesize(models, background, real, out, progress=False)
  record = evaluate(out, real, cfg, align="trim", progress=False)
  (args.run / f"{name}.json").write_text(json.dumps(record, indent=1, default=float))
  print(name, " ".join(f"{k} {record.get(k)}" for k in KEYS))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
