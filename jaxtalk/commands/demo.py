"""`jaxtalk demo [VIDEO] [--audio2 A] -o OUT [--config tiny]`: the whole pipeline on one clip
(the embedded Obama clip without VIDEO): train on its first 80 %, re-synthesise the held-out rest
from its own audio, evaluate that part, write report.html / report.png."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxtalk.cli import add_config_arguments

  parser.add_argument(
    "video",
    nargs="?",
    default=None,
    help="a talking-face clip with audio (default: the embedded obama_20s.mp4)",
  )
  parser.add_argument(
    "--holdout",
    type=float,
    default=0.2,
    help="fraction of the clip held out at its end and re-synthesised (default 0.2)",
  )
  parser.add_argument("--audio2", default=None, help="a second audio to drive the same face")
  parser.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
  parser.add_argument(
    "--renderer-steps",
    type=int,
    default=400,
    help="renderer training steps, stages 1 + 2 (default 400: ~2 min on a 2-core CPU)",
  )
  parser.add_argument(
    "--a2e-steps", type=int, default=300, help="audio2expression steps (default 300)"
  )
  parser.add_argument("--no-progress", dest="progress", action="store_false")
  add_config_arguments(parser)
  parser.set_defaults(config="tiny")


def run(args: argparse.Namespace) -> int:
  from jaxtalk.config import load_config
  from jaxtalk.demo import budget_overrides, run_demo
  from jaxtalk.metrics.evaluate import to_markdown

  # Explicit --set values win over the budget flags.
  budget = budget_overrides(args.renderer_steps, args.a2e_steps)
  cfg = load_config(args.config, [*budget, *args.overrides])
  result = run_demo(
    args.video, args.output, cfg, audio2=args.audio2, holdout=args.holdout, progress=args.progress
  )
  print(to_markdown([result.eval_record]))
  print("\nartefacts:")
  for name, path in result.artefacts.items():
    print(f"  {name:14s} {path}")
  print(f"\nopen {result.artefacts['report']} in a browser (report.png: contact sheet)")
  print("seconds: " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))
  return 0
