"""`jaxtalk dataset info|preview DATASET`: look at a preprocessed dataset.

info: clips, frames, fps, size, face-model fit quality, dropped frames, disk size.
preview: a picture (.png) or video (.mp4) with one row per sample:
frame | shape render | mask overlay | landmarks drawn, each panel the stored crop at its full
resolution enlarged by a whole factor (pixel replication) to at least --min-size (256) pixels.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
  info = sub.add_parser("info", help="summary of a dataset")
  info.add_argument("dataset")
  preview = sub.add_parser("preview", help="frame | shape | mask | landmarks rows (.png or .mp4)")
  preview.add_argument("dataset")
  preview.add_argument("-o", "--output", required=True, help="preview.png or preview.mp4")
  preview.add_argument("--per-clip", type=int, default=3, help="samples per clip (png)")
  preview.add_argument("--max-clips", type=int, default=8, help="clips shown")
  preview.add_argument("--frames", type=int, default=50, help="frames per clip (mp4)")
  preview.add_argument(
    "--min-size",
    type=int,
    default=MIN_PANEL,
    help=f"panels shown at least this many pixels wide (default {MIN_PANEL})",
  )


# Each panel shows every stored crop pixel, enlarged by a whole factor (nearest neighbour, so no
# detail is invented or lost) until it is at least this wide: a 64 px crop is unreadable as is.
MIN_PANEL = 256


def panel_scale(image_size: int, min_size: int = MIN_PANEL) -> int:
  """The whole enlargement factor that shows an `image_size` crop at >= `min_size` pixels."""
  return max(1, -(-int(min_size) // int(image_size)))


def _disk_size(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _human(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return f"{n:.1f} GiB"


def info_lines(path: str | os.PathLike) -> list[str]:
  from jaxtalk.data.dataset import open_dataset

  ds = open_dataset(path, allow_incomplete=True)
  m = ds.manifest
  lines = [
    f"dataset      {ds.path}  (format {m['format']} v{m['version']}, {m.get('status', '?')})",
    f"clips        {len(ds)} from {len(m.get('sources', {}))} videos, {ds.total_frames} frames"
    f" ({ds.total_frames / ds.fps:.1f} s at {ds.fps:g} fps)",
    f"frames       {ds.image_size}x{ds.image_size}, expression {ds.expression_dim},"
    f" audio window {ds.audio_window} x {ds.n_mels} mel",
    f"face model   {m['face_model']}, landmarks {m.get('landmark_backend', '?')}",
  ]
  fit = m.get("face_model_fit", {})
  if "explained_variance" in fit:
    lines.append(
      f"expression   {fit['components']} components from {fit['frames']} frames explain"
      f" {100 * fit['explained_variance']:.2f}% of mouth/jaw motion"
    )
  quality = [c["fit"] for c in m["clips"].values() if "reproj_mean_px" in c.get("fit", {})]
  if quality:
    mean = np.mean([q["reproj_mean_px"] for q in quality])
    worst = max(q["reproj_max_px"] for q in quality)
    lines.append(
      f"reprojection mean {mean:.2f} px, max {worst:.2f} px (at 256: mean"
      f" {np.mean([q['reproj_mean_px_at_256'] for q in quality]):.2f} px)"
    )
  dropped = [(s, d) for s, e in m.get("sources", {}).items() for d in e.get("dropped", [])]
  n_dropped = sum(d["stop"] - d["start"] for _, d in dropped)
  lines.append(f"dropped      {n_dropped} frames in {len(dropped)} ranges")
  for s, d in dropped[:10]:
    lines.append(f"               {s}: frames {d['start']}-{d['stop'] - 1} ({d['reason']})")
  resampled = [s for s, e in m.get("sources", {}).items() if e.get("resampled")]
  if resampled:
    lines.append(
      f"resampled    {len(resampled)} videos to {ds.fps:g} fps: {', '.join(resampled[:5])}"
    )
  for name, reason in sorted(m.get("skipped", {}).items()):
    lines.append(f"skipped      {name}: {reason}")
  lines.append(f"disk         {_human(_disk_size(ds.path))}")
  return lines


def _draw_points(image: np.ndarray, points_n2: np.ndarray, color) -> np.ndarray:
  import cv2

  out = image.copy()
  scale = max(1, image.shape[0] // 128)
  for x, y in np.asarray(points_n2, np.float64):
    if np.isfinite(x) and np.isfinite(y):
      # Crop coordinates are continuous (pixel centre at +0.5); cv2 draws at integer centres.
      cv2.circle(out, (int(round(x - 0.5)), int(round(y - 0.5))), scale, color, -1, cv2.LINE_AA)
  return out


def sample_row(clip, t: int, scale: int = 1) -> np.ndarray:
  """frame | shape render | mask overlay | landmarks, side by side (uint8 RGB), each panel the
  full-resolution crop enlarged `scale` times (pixel replication)."""

  def big(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(np.asarray(x), scale, axis=0), scale, axis=1)

  frame = big(clip["frames"][t])
  shape = big(clip["shape"][t])
  mask = big(clip["mask"][t]).astype(bool)
  overlay = frame.copy()
  overlay[mask] = (0.5 * overlay[mask] + 0.5 * np.array([255, 0, 255])).astype(np.uint8)
  # Crop coordinates are continuous (pixel centre at +0.5): x -> x * scale in the enlarged panel.
  marks = _draw_points(frame, np.asarray(clip["landmarks"][t], np.float64) * scale, (0, 255, 0))
  return np.concatenate([frame, shape, overlay, marks], axis=1)


def write_preview(
  path: str | os.PathLike,
  output: str | os.PathLike,
  per_clip: int = 3,
  max_clips: int = 8,
  frames: int = 50,
  min_size: int = MIN_PANEL,
) -> int:
  """Writes the preview; returns the number of rows (png) or frames (mp4)."""
  import cv2

  from jaxtalk.data.dataset import open_dataset
  from jaxtalk.errors import JaxtalkError
  from jaxtalk.io.video import write_video

  ds = open_dataset(path, allow_incomplete=True)
  names = ds.clip_names[:max_clips]
  if not names:
    raise JaxtalkError(f"{path}: no finished clips to preview")
  scale = panel_scale(ds.image_size, min_size)
  output = pathlib.Path(output)
  suffix = output.suffix.lower()
  if suffix == ".mp4":

    def rows():
      for name in names:
        clip = ds.clip(name)
        for t in range(min(frames, clip.num_frames)):
          yield sample_row(clip, t, scale)

    return write_video(output, rows(), ds.fps)
  if suffix != ".png":
    raise JaxtalkError(f"{output}: preview must be .png or .mp4")
  rows = []
  for name in names:
    clip = ds.clip(name)
    picks = np.unique(np.linspace(0, clip.num_frames - 1, max(1, per_clip)).round().astype(int))
    rows.extend(sample_row(clip, int(t), scale) for t in picks)
  output.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(output), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
    raise JaxtalkError(f"{output}: could not be written")
  return len(rows)


def run(args: argparse.Namespace) -> int:
  if args.action == "info":
    print("\n".join(info_lines(args.dataset)))
    return 0
  n = write_preview(
    args.dataset, args.output, args.per_clip, args.max_clips, args.frames, args.min_size
  )
  unit = "frames" if str(args.output).lower().endswith(".mp4") else "rows"
  print(f"{args.output}: {n} {unit} (frame | shape | mask | landmarks)")
  return 0
