"""`jaxtalk ablate --data DATASET -o OUT [--steps N] [--variants ...]`: StableFace Table V."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxtalk.ablate import VARIANTS
  from jaxtalk.cli import add_config_arguments

  parser.add_argument("--data", required=True, help="dataset folder written by jaxtalk preprocess")
  parser.add_argument("-o", "--output", required=True, help="output folder")
  parser.add_argument("--steps", type=int, default=None, help="renderer steps per variant")
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--video", default=None, help="evaluation clip (default: first source)")
  parser.add_argument("--no-progress", dest="progress", action="store_false")
  add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
  from jaxtalk.ablate import run_ablation
  from jaxtalk.config import load_config

  cfg = load_config(args.config, args.overrides)
  run_ablation(args.data, args.output, cfg, variants=args.variants, steps=args.steps,
               video=args.video, progress=args.progress)  # fmt: skip
  print(f"table: {args.output}/ablation.md; slices: {args.output}/slices.png")
  return 0
