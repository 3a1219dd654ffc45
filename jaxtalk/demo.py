"""The main job: one talking-face clip in, a trained person-specific model and its results out.

    jaxtalk demo clip.mpg [--audio2 other.wav] -o demo/ --config tiny

Stages (each skipped when its output is already complete, so an interrupted demo resumes):
  1. preprocess the clip into  demo/dataset
  2. train audio2expression    demo/model/a2e
  3. train the renderer        demo/model/renderer   (stage 1, then stage 2 with smoothing)
  4. re-synthesise the clip from its own audio (and from --audio2):
                               demo/out.mp4, demo/side_by_side.mp4 (real | generated | shape)
  5. the slice picture of real vs generated  demo/slice.png
  6. the evaluation report     demo/eval.json, demo/eval.md
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import ml_collections

from jaxtalk import infer
from jaxtalk.data.preprocess import preprocess
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.landmark3d import KIND
from jaxtalk.metrics.evaluate import evaluate, to_markdown
from jaxtalk.metrics.slice import save_png
from jaxtalk.metrics.video_slice import slice_picture
from jaxtalk.train.a2e_train import train_a2e
from jaxtalk.train.train import train_renderer


@dataclasses.dataclass
class DemoResult:
  out_dir: pathlib.Path
  artefacts: dict[str, pathlib.Path]
  seconds: dict[str, float]
  eval_record: dict


def budget_overrides(renderer_steps: int | None, a2e_steps: int | None) -> list[str]:
  """Config overrides for a training budget: the renderer's steps split as in the paper's
  schedule (100 + 20 epochs: 5/6 in stage 1, 1/6 with adaptive smoothing in stage 2)."""
  out = []
  if renderer_steps is not None:
    stage2 = renderer_steps // 6
    out += [f"train.stage1_steps={renderer_steps - stage2}", f"train.stage2_steps={stage2}"]
  if a2e_steps is not None:
    out.append(f"a2e_train.steps={a2e_steps}")
  return out


def run_demo(
  video: str | pathlib.Path,
  out_dir: str | pathlib.Path,
  cfg: ml_collections.ConfigDict,
  *,
  audio2: str | pathlib.Path | None = None,
  progress: bool = True,
  say: Callable[[str], None] = print,
) -> DemoResult:

  video = pathlib.Path(video)
  if not video.is_file():
    raise JaxtalkError(f"{video}: no such video file")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  dataset, model = out / "dataset", out / "model"
  seconds: dict[str, float] = {}

  def stage(name: str, fn: Callable[[], object]) -> object:
    say(f"[demo] {name}")
    t = time.perf_counter()
    result = fn()
    seconds[name] = round(time.perf_counter() - t, 2)
    return result

  stage("preprocess", lambda: preprocess([video], dataset, cfg, face_model=KIND, progress=progress))
  stage("train a2e", lambda: train_a2e(cfg, dataset, model / "a2e", resume=True,
                                       show_progress=progress))  # fmt: skip
  stage("train renderer", lambda: train_renderer(cfg, dataset, model / "renderer", resume=True,
                                                 show_progress=progress))  # fmt: skip

  models = infer.load_models(model, cfg)
  background = infer.prepare_background(video, models, say=say)
  generate = infer.make_generate(models)
  artefacts = {"dataset": dataset, "model": model}
  result = stage("synthesise", lambda: infer.synthesize(
    models, background, video, out / "out.mp4", generate=generate,
    side_by_side=out / "side_by_side.mp4", progress=progress,
  ))  # fmt: skip
  artefacts.update(video=result.output, side_by_side=result.side_by_side)
  if audio2 is not None:
    r2 = stage("synthesise audio2", lambda: infer.synthesize(
      models, background, audio2, out / "out_audio2.mp4", generate=generate, progress=progress,
    ))  # fmt: skip
    artefacts["video_audio2"] = r2.output

  picture = stage("slice", lambda: slice_picture(
    [video, result.output], ["real", "generated"], cfg))  # fmt: skip
  save_png(out / "slice.png", picture)
  artefacts["slice"] = out / "slice.png"

  record = stage("eval", lambda: evaluate(result.output, video, cfg, align="trim"))
  (out / "eval.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
  (out / "eval.md").write_text(to_markdown([record]) + "\n")
  artefacts.update(eval_json=out / "eval.json", eval_md=out / "eval.md")
  (out / "demo.json").write_text(json.dumps(
    {"video": str(video), "config": cfg.name, "seconds": seconds,
     "artefacts": {k: str(v) for k, v in artefacts.items()}}, indent=2) + "\n")  # fmt: skip
  return DemoResult(out, artefacts, seconds, record)
