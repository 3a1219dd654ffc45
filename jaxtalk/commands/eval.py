"""`jaxtalk eval --pred P [P ...] [--ref R [R ...]] [--json F] [--markdown F] [--syncnet W]`.

Metrics of generated videos (StableFace Sec. IV): with `--ref`, SSIM, PSNR, LMD and NLMD against
the ground truth; always CPBD, MSI (lip, jaw) and, with `--syncnet`, Sync-C / Sync-D. `--ref`
takes one video (shared by every prediction) or one per prediction, in order. Prints a markdown
table. With one prediction, a problem (missing file, no face, different frame counts) is an
error; with several, the failing row records its error, the others are still measured and the
exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from jaxtalk.commands.common import add_landmark_arguments, config_and_backend
from jaxtalk.errors import JaxtalkError, WeightsError
from jaxtalk.metrics.evaluate import ALIGN_MODES, PSNR_CAP_DB, evaluate, to_markdown
from jaxtalk.metrics.sync import VSHIFT


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--pred", nargs="+", required=True, metavar="VIDEO", help="generated videos")
  parser.add_argument(
    "--ref",
    nargs="+",
    default=None,
    metavar="VIDEO",
    help="ground-truth video (one for all, or one per --pred); omit for reference-free metrics",
  )
  parser.add_argument("--json", default=None, help="write the records to this JSON file")
  parser.add_argument("--markdown", default=None, help="write the table to this markdown file")
  parser.add_argument(
    "--syncnet",
    default=None,
    metavar="WEIGHTS",
    help="syncnet_python weights (.npz from scripts/convert_syncnet.py, or .model with torch)",
  )
  parser.add_argument(
    "--align",
    choices=ALIGN_MODES,
    default="strict",
    help="different frame counts: strict = error (default), trim = compare the shorter length",
  )
  parser.add_argument(
    "--vshift", type=int, default=VSHIFT, help="SyncNet offsets searched, in frames (+-)"
  )
  parser.add_argument(
    "--seams",
    default=None,
    metavar="W,O",
    help="the predictions were inferred in W-frame windows overlapping by O (infer.window, "
    "infer.overlap): report the frame-to-frame jumps at the window seams and elsewhere",
  )
  add_landmark_arguments(parser)


def parse_seams(text: str) -> tuple[int, int]:
  try:
    window, overlap = (int(v) for v in text.split(","))
  except ValueError:
    raise JaxtalkError(f"--seams takes W,O (two integers), got {text!r}") from None
  if window < 1 or not 0 <= overlap < window:
    raise JaxtalkError(f"--seams: need W >= 1 and 0 <= O < W, got {window},{overlap}")
  return window, overlap


def run(args: argparse.Namespace) -> int:
  config, backend = config_and_backend(args)
  preds = list(args.pred)
  refs = list(args.ref) if args.ref else [None]
  if len(refs) == 1:
    refs = refs * len(preds)
  elif len(refs) != len(preds):
    raise JaxtalkError(f"--ref takes one video or one per --pred ({len(preds)}), got {len(refs)}")
  scorer = None
  if args.syncnet is not None:
    from jaxtalk.metrics.sync import SyncNetScorer

    if not pathlib.Path(args.syncnet).is_file():
      raise WeightsError(f"SyncNet weights not found: {args.syncnet}")
    scorer = SyncNetScorer.from_file(args.syncnet)

  windows = parse_seams(args.seams) if args.seams else None
  records = []
  for pred, ref in zip(preds, refs, strict=True):
    kwargs = dict(
      seam_windows=windows,
      syncnet_weights=scorer,
      backend=backend,
      align=args.align,
      cache_dir=args.cache_dir,
      use_cache=not args.no_cache,
      vshift=args.vshift,
      progress=len(preds) == 1,
    )
    if len(preds) == 1:
      records.append(evaluate(pred, ref, config, **kwargs))
    else:
      try:
        records.append(evaluate(pred, ref, config, **kwargs))
      except JaxtalkError as e:
        records.append({"pred": str(pred), "ref": ref, "error": str(e)})

  table = to_markdown(records)
  print(table)
  if args.markdown:
    out = pathlib.Path(args.markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
  if args.json:
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
      "backend": backend,
      "psnr_cap_db": PSNR_CAP_DB,
      "syncnet": args.syncnet,
      "videos": records,
    }
    out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
  return 1 if any("error" in r for r in records) else 0
