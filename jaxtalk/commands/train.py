"""`jaxtalk train renderer|a2e`: train the StableFace renderer (stage 1 then stage 2) or the
audio2expression model on a preprocessed dataset (see docs/training.md)."""

from __future__ import annotations

import argparse

from jaxtalk.cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
  for name, help_text in (
    ("renderer", "the renderer: stage 1 (renderer alone), then stage 2 (with adaptive smoothing)"),
    ("a2e", "audio2expression (expression + mouth-landmark losses, audio augmentation)"),
  ):
    p = sub.add_parser(name, help=help_text, description=help_text)
    add_config_arguments(p)
    p.add_argument("--data", required=True, help="dataset folder written by jaxtalk preprocess")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, samples/ go here")
    p.add_argument(
      "--resume", action="store_true", help="continue the run in --workdir from its last checkpoint"
    )
    p.add_argument(
      "--no-progress", dest="progress", action="store_false", help="no progress bar (logs only)"
    )
    if name == "renderer":
      p.add_argument(
        "--stage",
        choices=("all", "1", "2"),
        default="all",
        help="all: stage 1 then 2 (default); 1: stop at the stage boundary; 2: continue a "
        "finished stage 1 (with --resume)",
      )


def run(args: argparse.Namespace) -> int:
  from jaxtalk.config import load_config  # noqa: PLC0415 (JAX is imported only when training)

  cfg = load_config(args.config, args.overrides)
  if args.what == "renderer":
    from jaxtalk.train.train import train_renderer  # noqa: PLC0415

    train_renderer(
      cfg, args.data, args.workdir, resume=args.resume, stage=args.stage,
      show_progress=args.progress,
    )  # fmt: skip
  else:
    from jaxtalk.train.a2e_train import train_a2e  # noqa: PLC0415

    train_a2e(cfg, args.data, args.workdir, resume=args.resume, show_progress=args.progress)
  return 0
