"""The `jaxtalk` command: one entry point, one subcommand per job.

Each subcommand lives in its own module under `jaxtalk/commands/` with `add_arguments(parser)`
and `run(args) -> int`; modules are imported only when their subcommand runs, so `jaxtalk msi`
does not pay for importing JAX. User errors (`JaxtalkError`) print one clear line and exit
non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxtalk import caches
from jaxtalk.errors import JaxtalkError

# name -> (module, one-line help). Keep sorted by the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
  "preprocess": ("jaxtalk.commands.preprocess", "a person's videos -> a training dataset"),
  "dataset": ("jaxtalk.commands.dataset", "summary (info) or preview of a preprocessed dataset"),
  "train": ("jaxtalk.commands.train", "train the renderer (stages 1, 2) or audio2expression"),
  "plot": ("jaxtalk.commands.plot", "loss curves of a training run to a PNG"),
  "infer": ("jaxtalk.commands.infer", "talking-face videos from audio + a background video"),
  "landmarks": ("jaxtalk.commands.landmarks", "68-point landmarks of a video (npz, overlay)"),
  "msi": ("jaxtalk.commands.msi", "Motion Stability Index (lip, jaw, all) of videos"),
  "slice": ("jaxtalk.commands.slice", "vertical-slice jitter picture of videos"),
  "eval": ("jaxtalk.commands.eval", "SSIM, PSNR, NLMD, CPBD, MSI, Sync-C/D of generated videos"),
  "ablate": ("jaxtalk.commands.ablate", "train and evaluate the Table V ablation variants"),
  "demo": ("jaxtalk.commands.demo", "whole pipeline on one clip: train, resynthesise, evaluate"),
  "bench": ("jaxtalk.commands.bench", "benchmarks that print measured numbers"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
  """--config and --set, shared by every subcommand that reads a config."""
  parser.add_argument(
    "--config", default=None, help="config file or shipped name (tiny, grid); default: grid"
  )
  parser.add_argument(
    "--set",
    dest="overrides",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a config value, e.g. --set model.renderer.depth=2 (repeatable)",
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxtalk", description=__doc__.splitlines()[0])
  parser.add_argument("--version", action="store_true", help="print the version and exit")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module_name, help_text) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    # Arguments are added lazily in main() for the chosen command only; listing all commands in
    # --help must not import their dependencies.
    p.set_defaults(_module=module_name)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  if not argv or argv[0] in ("-h", "--help"):
    parser.print_help()
    return 0
  if argv[0] == "--version":
    from jaxtalk import __version__

    print(__version__)
    return 0
  name = argv[0]
  if name not in COMMANDS:
    parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
  try:
    # before the command imports JAX, which reads the cache's variables when it is imported
    caches.enable()
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"jaxtalk {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[1:])) or 0)
  except JaxtalkError as e:
    print(f"jaxtalk {name}: error: {e}", file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print(f"jaxtalk {name}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
