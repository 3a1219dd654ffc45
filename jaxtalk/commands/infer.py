"""`jaxtalk infer --audio A [A ...] --video V --checkpoints W -o OUT`.

One audio writes `OUT` (a file name ending in .mp4, or a folder); several audios (or a folder of
them) write `OUT/<audio name>.mp4`. The models are loaded and compiled once for the whole batch.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from jaxtalk.errors import JaxtalkError

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".mp4", ".mpg", ".mov", ".mkv"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxtalk.cli import add_config_arguments

  parser.add_argument("--audio", nargs="+", required=True, help="audio files or a folder of them")
  parser.add_argument("--video", required=True, help="background video of the trained person")
  parser.add_argument("--checkpoints", required=True, help="model folder (renderer/, a2e/)")
  parser.add_argument("-o", "--output", required=True, help="out.mp4, or a folder")
  parser.add_argument(
    "--side-by-side", action="store_true", help="also write crop | output | shape"
  )
  parser.add_argument(
    "--no-cache", action="store_true", help="re-detect the background's landmarks"
  )
  add_config_arguments(parser)


def collect_audio(items: list[str]) -> list[pathlib.Path]:
  paths: list[pathlib.Path] = []
  for item in items:
    p = pathlib.Path(item)
    if p.is_dir():
      found = sorted(q for q in p.iterdir() if q.suffix.lower() in AUDIO_SUFFIXES)
      if not found:
        raise JaxtalkError(f"{p}: no audio files (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
      paths.extend(found)
    elif p.is_file():
      paths.append(p)
    else:
      raise JaxtalkError(f"{p}: no such audio file or folder")
  return paths


def output_paths(audios: list[pathlib.Path], output: str) -> list[pathlib.Path]:
  out = pathlib.Path(output)
  if len(audios) == 1 and out.suffix.lower() == ".mp4":
    return [out]
  names = [a.stem for a in audios]
  if len(set(names)) != len(names):
    names = [f"{i:03d}_{a.stem}" for i, a in enumerate(audios)]
  return [out / f"{name}.mp4" for name in names]


def run(args: argparse.Namespace) -> int:
  from jaxtalk import infer

  audios = collect_audio(args.audio)
  outputs = output_paths(audios, args.output)
  models = infer.load_models(args.checkpoints, args.config, args.overrides)
  background = infer.prepare_background(args.video, models, use_cache=not args.no_cache)
  generate = infer.make_generate(models)
  for audio, out in zip(audios, outputs):
    t = time.perf_counter()
    sbs = out.with_name(out.stem + "_side_by_side.mp4") if args.side_by_side else None
    result = infer.synthesize(models, background, audio, out, generate=generate, side_by_side=sbs)
    dt = time.perf_counter() - t
    print(
      f"{audio} -> {result.output} ({result.frames} frames, {result.seconds:.2f} s of audio,"
      f" {result.frames / dt:.1f} frames/s)"
    )
  return 0
