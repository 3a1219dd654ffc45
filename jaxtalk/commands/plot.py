"""`jaxtalk plot WORKDIR`: loss curves of a training run (WORKDIR/metrics.jsonl) to a PNG, and
after stage 2 the learned smoothing kernels (mean over frames and spread) to kernels.png."""

from __future__ import annotations

import argparse
import pathlib

from jaxtalk.errors import JaxtalkError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("workdir", help="a training workdir (or its metrics.jsonl)")
  parser.add_argument(
    "-o", "--output", default=None, help="PNG to write (default: WORKDIR/curves.png)"
  )


def run(args: argparse.Namespace) -> int:
  from jaxtalk.train.observe import kernel_records, plot_kernels, plot_metrics  # noqa: PLC0415

  src = pathlib.Path(args.workdir)
  metrics = src if src.is_file() else src / "metrics.jsonl"
  if not metrics.is_file():
    raise JaxtalkError(f"no metrics log at {metrics} (is {src} a training workdir?)")
  out = pathlib.Path(args.output) if args.output else metrics.parent / "curves.png"
  try:
    plot_metrics(metrics, out)
  except ValueError as e:
    raise JaxtalkError(str(e)) from e
  print(out)
  if kernel_records(metrics):
    print(plot_kernels(metrics, out.with_name("kernels.png")))
  return 0
