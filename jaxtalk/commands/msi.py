"""`jaxtalk msi VIDEO [VIDEO ...] [--json FILE]`: Motion Stability Index per video.

Prints one row per video (lip, jaw, all). A video that fails (no face, corrupt file) gets its
error in the table and the JSON, the others are still measured, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from tqdm import tqdm

from jaxtalk.commands.common import add_landmark_arguments, config_and_backend
from jaxtalk.errors import JaxtalkError
from jaxtalk.metrics.video_msi import video_msi


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("videos", nargs="+", metavar="VIDEO")
  parser.add_argument("--json", default=None, help="write the records to this JSON file")
  add_landmark_arguments(parser)


def format_table(records: list[dict]) -> str:
  width = max([len("video")] + [len(r["video"]) for r in records])
  lines = [f"{'video':<{width}}  {'frames':>6}  {'MSI lip':>9}  {'MSI jaw':>9}  {'MSI all':>9}"]
  for r in records:
    if "error" in r:
      lines.append(f"{r['video']:<{width}}  error: {r['error']}")
    else:
      lines.append(
        f"{r['video']:<{width}}  {r['frames']:>6}  {r['msi_lip']:>9.4f}  {r['msi_jaw']:>9.4f}"
        f"  {r['msi_all']:>9.4f}"
      )
  return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
  config, backend = config_and_backend(args)
  records = []
  for path in tqdm(args.videos, desc="msi", unit="video", disable=len(args.videos) < 2):
    try:
      records.append(
        video_msi(
          path,
          config,
          backend,
          cache_dir=args.cache_dir,
          use_cache=not args.no_cache,
          progress=len(args.videos) == 1,
        )
      )
    except JaxtalkError as e:
      records.append({"video": str(path), "error": str(e)})
  print(format_table(records))
  print(f"(landmarks: {backend}; MSI is higher for steadier motion, 1e5 = perfectly smooth)")
  if args.json:
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"backend": backend, "eps": config.msi.eps, "videos": records}
    out.write_text(json.dumps(payload, indent=2) + "\n")
  return 1 if any("error" in r for r in records) else 0
