"""`jaxtalk bench NAME`: benchmarks that print measured numbers (never timed tests).

Each benchmark is a module under `jaxtalk/bench/` with `add_arguments(parser)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import importlib

BENCHES: dict[str, str] = {
  "infer": "jaxtalk.bench.infer",
  "landmarks": "jaxtalk.bench.landmarks",
  "model": "jaxtalk.bench.model",
  "preprocess": "jaxtalk.bench.preprocess",
  "train": "jaxtalk.bench.train",
  "a2e": "jaxtalk.bench.a2e",
  "quality": "jaxtalk.bench.quality",
  "seq": "jaxtalk.bench.seq",
  "gpu-kernels": "jaxtalk.bench.gpu_kernels",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("bench", choices=sorted(BENCHES), metavar="NAME", help=", ".join(BENCHES))
  parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's own options")


def run(args: argparse.Namespace) -> int:
  # Only the chosen benchmark is imported: each pulls in heavy dependencies of its own.
  module = importlib.import_module(BENCHES[args.bench])
  sub = argparse.ArgumentParser(prog=f"jaxtalk bench {args.bench}", description=module.__doc__)
  module.add_arguments(sub)
  return int(module.run(sub.parse_args(args.bench_args)) or 0)
