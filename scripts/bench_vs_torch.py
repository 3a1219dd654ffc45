"""jaxtalk against the PyTorch reference (../shared/bench/torch_ref.py), interleaved in one sitting.

  python scripts/bench_vs_torch.py --torch-python /work/venvs/torchref/bin/python \
      [--sizes 128,256] [--rounds 3] [--train] [--baseline /path/to/older/jaxtalk/checkout]

The development machines are shared and noisy, so absolute times drift by 2x within minutes;
only runs taken side by side mean anything. Each round runs, per size, the PyTorch reference,
then jaxtalk (then the --baseline checkout, if given), each in a fresh process: A B A B ...
Each process reports its best of a few timed calls after a warm-up (compile excluded); the
summary gives, over the rounds, the median and the minimum of those, and jaxtalk's speed as
PyTorch time / jaxtalk time (> 1: jaxtalk faster). B=1, T=8, float32, 2 threads for PyTorch.
The train step's perceptual network is the reference's VGG19 (to relu5_1) on both sides unless
--perceptual vgg16 times jaxtalk's default network instead (not the same FLOPs).

This script never imports torch: PyTorch lives in its own virtual environment (see
../shared/bench/README.md) and is run as a subprocess. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
  if out.returncode != 0:
    sys.exit(
      f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
    )
  return out.stdout


def torch_times(args: argparse.Namespace, size: int) -> dict[str, float]:
  cmd = [args.torch_python, args.torch_ref, "--sizes", str(size), "--quick", "--no-modules"]
  cmd += ["--frames", str(args.frames), "--batch", "1", "--threads", str(args.threads)]
  if not args.train:
    cmd.append("--no-train")
  res = json.loads(_run(cmd).strip().splitlines()[-1])["results"][0]
  out = {"infer": res["infer"]["min_s"]}
  if args.train:
    out["train"] = res["train"]["min_s"]
  return out


def jaxtalk_times(args: argparse.Namespace, size: int, root: Path | None) -> dict[str, float]:
  env = dict(os.environ)
  if root is not None:  # an older checkout of jaxtalk, imported instead of the installed one
    env["PYTHONPATH"] = str(root)
  # `python -c` puts the working directory first on sys.path: run where no other jaxtalk
  # package shadows the one meant (from the repository root, the checkout itself would be
  # timed as the baseline)
  cwd = root if root is not None else REPO
  py = [sys.executable, "-c", "import sys; from jaxtalk.cli import main; sys.exit(main())"]
  cmd = py + ["bench", "model", "--sizes", str(size), "--modules", "renderer"]
  cmd += ["--frames", str(args.frames), "--batch", "1", "--repeats", "3"]
  text = _run(cmd, env, cwd)
  m = re.search(rf"^\s+renderer\s+{size}\s+[\d,]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", text, re.M)
  if m is None:
    sys.exit(f"no renderer row in:\n{text}")
  out = {"infer": float(m.group(1))}
  if args.train:
    cmd = py + ["bench", "train", "--sizes", str(size), "--frames", str(args.frames)]
    cmd += ["--batch", "1", "--steps", "2", "--vgg", "--no-pipeline"]
    if args.perceptual == "vgg19":  # the reference's network (random weights: same cost)
      cmd += ["--set", "train.vgg_weights=random"]
    text = _run(cmd, env, cwd)
    m = re.search(
      rf"^\s*{size}\s+1\s+{args.frames}\s+\d\s+yes\s+[\d,]+\s+[\d,]+\s+[\d.]+\s+([\d.]+)",
      text,
      re.M,
    )
    if m is None:
      sys.exit(f"no train row in:\n{text}")
    out["train"] = float(m.group(1))
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--torch-python", required=True, help="python of the PyTorch venv")
  ap.add_argument("--torch-ref", default=str(REPO.parent / "shared" / "bench" / "torch_ref.py"))
  ap.add_argument("--sizes", default="128")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--frames", type=int, default=8)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--train", action="store_true", help="also the train step (stage 1, VGG)")
  ap.add_argument(
    "--perceptual",
    choices=("vgg19", "vgg16"),
    default="vgg19",
    help="jaxtalk's perceptual network in the train step: vgg19 to relu5_1, the reference's "
    "(the same layers and FLOPs), or vgg16, jaxtalk's default (LPIPS weights, ~10%% fewer FLOPs)",
  )
  ap.add_argument("--baseline", type=Path, default=None, help="older jaxtalk checkout to time too")
  args = ap.parse_args()
  sizes = [int(s) for s in args.sizes.split(",") if s]
  runs: dict[str, dict[int, list[dict[str, float]]]] = {"torch": {}, "jaxtalk": {}, "baseline": {}}
  for r in range(args.rounds):
    for size in sizes:
      for name in ("torch", "jaxtalk", "baseline"):
        if name == "baseline" and args.baseline is None:
          continue
        if name == "torch":
          t = torch_times(args, size)
        else:
          t = jaxtalk_times(args, size, args.baseline if name == "baseline" else None)
        runs[name].setdefault(size, []).append(t)
        print(
          f"round {r + 1} {size}: {name:8s} " + "  ".join(f"{k} {v:.3f} s" for k, v in t.items()),
          flush=True,
        )
  summary = {}
  print(
    "\n| size | what | PyTorch median (min) s | jaxtalk median (min) s | jaxtalk speed |"
    + (" baseline median (min) s | baseline speed |" if args.baseline else "")
  )
  for size in sizes:
    for kind in runs["torch"][size][0]:
      row = {}
      for name in runs:
        if size in runs[name]:
          xs = [t[kind] for t in runs[name][size]]
          row[name] = {"median_s": statistics.median(xs), "min_s": min(xs), "all_s": xs}
      # ratio per round (side by side), then the median of the ratios
      for name in ("jaxtalk", "baseline"):
        if name in row:
          ratios = [
            a[kind] / b[kind] for a, b in zip(runs["torch"][size], runs[name][size], strict=True)
          ]
          row[name]["speed_vs_torch"] = statistics.median(ratios)
      summary[f"{kind} {size}"] = row
      line = (
        f"| {size}² | {kind} | {row['torch']['median_s']:.2f} ({row['torch']['min_s']:.2f}) | "
        f"{row['jaxtalk']['median_s']:.2f} ({row['jaxtalk']['min_s']:.2f}) | "
        f"{row['jaxtalk']['speed_vs_torch']:.2f}x |"
      )
      if "baseline" in row:
        line += (
          f" {row['baseline']['median_s']:.2f} ({row['baseline']['min_s']:.2f}) | "
          f"{row['baseline']['speed_vs_torch']:.2f}x |"
        )
      print(line)
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
