"""`jaxtalk preprocess INPUT... -o DATASET`: a person's videos -> a training dataset.

Resumable (re-run the same command after an interruption), parallel over clips (--workers),
deterministic (same inputs and settings give byte-identical files). See
jaxtalk/data/preprocess.py for the passes and docs/dataset_format.md for the output.
"""

from __future__ import annotations

import argparse
import sys

from jaxtalk.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxtalk.cli import add_config_arguments

  parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or folders of them")
  parser.add_argument("-o", "--output", required=True, metavar="DATASET", help="dataset folder")
  add_config_arguments(parser)
  parser.add_argument(
    "--face-model",
    choices=("landmark3d", "deca"),
    default=None,
    help="3D face model: landmark3d (default, embedded) or deca (needs PyTorch, DECA, FLAME)",
  )
  parser.add_argument(
    "--holdout",
    type=float,
    default=None,
    metavar="FRACTION",
    help="hold out the last FRACTION of each video (by time) for evaluation, e.g. 0.2"
    " (default: data.holdout, 0 = no split)",
  )
  parser.add_argument("--workers", type=int, default=1, help="parallel processes (clips)")
  parser.add_argument("--cache-dir", default=None, help="landmark cache (default ~/.cache/jaxtalk)")
  parser.add_argument("--no-cache", action="store_true", help="always re-detect landmarks")
  parser.add_argument(
    "--skip-bad",
    action="store_true",
    help="leave out clips that cannot be used (listed in the manifest) instead of stopping",
  )
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  deca = parser.add_argument_group("DECA (--face-model deca)")
  deca.add_argument("--deca-dir", default=None, help="a checkout of github.com/yfeng95/DECA")
  deca.add_argument(
    "--deca-data",
    default=None,
    help="folder with DECA's deca_model.tar and FLAME's generic_model.pkl (default DECA_DIR/data)",
  )
  deca.add_argument("--deca-device", default="cpu", help="torch device for DECA (cpu, cuda)")


def run(args: argparse.Namespace) -> int:
  from jaxtalk.data.preprocess import preprocess

  overrides = list(args.overrides)
  if args.holdout is not None:
    overrides.append(f"data.holdout={args.holdout}")
  config = load_config(args.config, overrides)
  options = None
  if (args.face_model or config.data.face_model) == "deca":
    options = {"deca_dir": args.deca_dir, "data_dir": args.deca_data, "device": args.deca_device}
  manifest = preprocess(
    args.inputs,
    args.output,
    config,
    face_model=args.face_model,
    fitter_options=options,
    workers=max(1, args.workers),
    cache_dir=args.cache_dir,
    use_cache=not args.no_cache,
    skip_bad=args.skip_bad,
    progress=not args.quiet,
  )
  frames = sum(c["num_frames"] for c in manifest["clips"].values())
  held = sum(
    c["num_frames"] - c.get("train_frames", c["num_frames"]) for c in manifest["clips"].values()
  )
  skipped = len(manifest["skipped"])
  print(
    f"{args.output}: {len(manifest['clips'])} clips, {frames} frames"
    + (f" ({held} held out)" if "holdout" in manifest else "")
    + (f", {skipped} inputs skipped" if skipped else ""),
    file=sys.stdout,
  )
  return 0
