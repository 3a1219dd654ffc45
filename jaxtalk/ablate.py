"""The ablation study of StableFace Table V on a fixed training budget.

    jaxtalk ablate --data DATASET --config configs/tiny.py -o ablation/ [--steps N]

Variants (config switches, nothing else changes):
  full          everything on
  no_fusion     without the audio fusion module           model.renderer.audio_fusion=False
  no_smoothing  without adaptive smoothing                model.smoothing.kind=none
  no_erosion    without augmented erosion                 train.erosion=False
  no_dependency without dependency modeling               model.renderer.dependency=False
  baseline      all four off (Sec. III-A's renderer)

audio2expression does not depend on any switch, so it is trained once and shared. Each variant's
renderer trains for the same number of steps, then re-synthesises the evaluation clip (default:
the dataset's first source video) from its own audio; every result is evaluated against that
clip. Writes ablation.md / ablation.json (the table) and slices.png (real and every variant
side by side). Finished variants are skipped when the command is run again.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable, Sequence

import ml_collections

from jaxtalk import infer
from jaxtalk.config import apply_overrides
from jaxtalk.data.dataset import open_dataset
from jaxtalk.demo import budget_overrides
from jaxtalk.errors import JaxtalkError
from jaxtalk.metrics.evaluate import evaluate
from jaxtalk.metrics.slice import save_png
from jaxtalk.metrics.video_slice import slice_picture
from jaxtalk.train.a2e_train import train_a2e
from jaxtalk.train.train import train_renderer

VARIANTS: dict[str, tuple[str, ...]] = {
  "full": (),
  "no_fusion": ("model.renderer.audio_fusion=False",),
  "no_smoothing": ("model.smoothing.kind=none",),
  "no_erosion": ("train.erosion=False",),
  "no_dependency": ("model.renderer.dependency=False",),
  "baseline": (
    "model.renderer.audio_fusion=False",
    "model.smoothing.kind=none",
    "train.erosion=False",
    "model.renderer.dependency=False",
  ),
}
COLUMNS = ("ssim", "psnr", "lmd", "cpbd", "msi_lip", "msi_jaw")


def variant_config(base: ml_collections.ConfigDict, name: str, steps: int | None):
  cfg = ml_collections.ConfigDict(base.to_dict())  # a copy; the base stays untouched
  cfg.lock()
  apply_overrides(cfg, [*VARIANTS[name], *budget_overrides(steps, None)])
  return cfg


def _table(rows: list[dict]) -> str:
  head = "| variant | " + " | ".join(c.upper().replace("_", "-") for c in COLUMNS) + " |"
  lines = [head, "|---|" + "---:|" * len(COLUMNS)]
  for r in rows:
    cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else "–" for c in COLUMNS]
    lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def check_variants(names: Sequence[str]) -> None:
  """A clear error naming the choices when any of `names` is not a Table V variant."""
  unknown = [v for v in names if v not in VARIANTS]
  if unknown:
    raise JaxtalkError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")


def run_ablation(
  data: str | pathlib.Path,
  out_dir: str | pathlib.Path,
  cfg: ml_collections.ConfigDict,
  *,
  variants: Sequence[str] = tuple(VARIANTS),
  steps: int | None = None,
  video: str | pathlib.Path | None = None,
  progress: bool = True,
  say: Callable[[str], None] = print,
) -> list[dict]:

  check_variants(variants)
  ds = open_dataset(data)
  if video is None:
    sources = ds.manifest.get("sources", {})
    if not sources:
      raise JaxtalkError(f"{data}: the manifest names no source video; pass --video")
    video = next(iter(sources.values()))["path"]
  video = pathlib.Path(video)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  say(f"[ablate] a2e (shared by all variants) -> {out / 'a2e'}")
  train_a2e(cfg, data, out / "a2e", resume=True, show_progress=progress)

  rows, videos = [], []
  for name in variants:
    vcfg = variant_config(cfg, name, steps)
    folder = out / name
    result_path = folder / "eval.json"
    if result_path.is_file():
      say(f"[ablate] {name}: done before, reusing {result_path}")
      record = json.loads(result_path.read_text())
    else:
      say(f"[ablate] {name}: training ({' '.join(VARIANTS[name]) or 'all modules on'})")
      train_renderer(vcfg, data, folder / "renderer", resume=True, show_progress=progress)
      # The shared a2e checkpoint completes the model folder (the renderer run copied the
      # person's face model into its workdir).
      if not (folder / "a2e").exists():
        shutil.copytree(out / "a2e", folder / "a2e")
      models = infer.load_models(folder, vcfg)
      background = infer.prepare_background(video, models, say=say)
      infer.synthesize(models, background, video, folder / "out.mp4", progress=progress)
      record = evaluate(folder / "out.mp4", video, vcfg, align="trim")
      result_path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    rows.append({"variant": name, **{c: record.get(c) for c in COLUMNS}})
    videos.append(folder / "out.mp4")

  (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
  (out / "ablation.md").write_text(_table(rows) + "\n")
  picture = slice_picture([video, *videos], ["real", *variants], cfg)
  save_png(out / "slices.png", picture)
  say(_table(rows))
  return rows
