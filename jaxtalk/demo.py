"""The main job: one talking-face clip in, a trained person-specific model and its results out.

    jaxtalk demo [clip.mp4] [--audio2 other.wav] -o demo/ --config tiny

Without a clip it runs on the embedded one (jaxtalk/assets/obama_20s.mp4, public domain, credit
"The White House"). The person-specific protocol (ARCHITECTURE.md): the model trains on the
first 80 % of the clip (`--holdout 0.2`, recorded in the dataset) and re-synthesises the held-out
last 20 % from its own audio, over its own frames as background; the evaluation scores only that
unseen part, never frames the model trained on.

Stages (each skipped when its output is already complete, so an interrupted demo resumes):
  1. preprocess the clip into  demo/dataset       (split: train | held out, by time)
  2. train audio2expression    demo/model/a2e
  3. train the renderer        demo/model/renderer   (stage 1, then stage 2 with smoothing)
  4. the real held-out part    demo/heldout_real.mp4
     re-synthesised from its audio: demo/out.mp4, demo/side_by_side.mp4 (real | generated |
     shape render, labelled panels >= 256 px); with --audio2, the whole clip re-dubbed:
     demo/out_audio2.mp4
  5. the slice picture of real vs generated (held-out part)  demo/slice.png
  6. the evaluation of the held-out part   demo/eval.json, demo/eval.md
  7. loss curves demo/loss_renderer.png, demo/loss_a2e.png; demo/report.html (everything on one
     page) and demo/report.png (contact sheet)
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import itertools
import json
import pathlib
import time
from collections.abc import Callable

import ml_collections

from jaxtalk import infer
from jaxtalk.data.dataset import open_dataset
from jaxtalk.data.preprocess import holdout_cut, preprocess
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.landmark3d import KIND
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import iter_frames, write_video
from jaxtalk.metrics.evaluate import evaluate, to_markdown
from jaxtalk.metrics.slice import save_png
from jaxtalk.metrics.video_slice import slice_picture
from jaxtalk.report import contact_sheet, write_html
from jaxtalk.train.a2e_train import train_a2e
from jaxtalk.train.observe import plot_metrics
from jaxtalk.train.train import train_renderer


@dataclasses.dataclass
class DemoResult:
  out_dir: pathlib.Path
  artefacts: dict[str, pathlib.Path]
  seconds: dict[str, float]
  eval_record: dict


def budget_overrides(renderer_steps: int | None, a2e_steps: int | None) -> list[str]:
  """Config overrides for a training budget: the renderer's steps split as in the paper's
  schedule (100 + 20 epochs: 5/6 in stage 1, 1/6 with adaptive smoothing in stage 2), and the
  periodic work scaled to it. The tiny config validates, checkpoints and samples every 10 steps
  (right for tests that train 30); over a demo's hundreds of steps that bookkeeping cost more
  than the training itself (measured in docs/benchmarks.md): ~10 validations of each model
  (a2e keeps its best one, the loss curves get their points), 4 checkpoints, 2 sample sheets."""
  out = []
  steps = [n for n in (renderer_steps, a2e_steps) if n is not None]
  if renderer_steps is not None:
    stage2 = renderer_steps // 6
    out += [f"train.stage1_steps={renderer_steps - stage2}", f"train.stage2_steps={stage2}"]
    out += [f"train.ckpt_every={max(10, renderer_steps // 4)}",
            f"train.sample_every={max(10, renderer_steps // 2)}"]  # fmt: skip
  if a2e_steps is not None:
    out.append(f"a2e_train.steps={a2e_steps}")
  if steps:
    out.append(f"train.eval_every={max(10, min(steps) // 10)}")
  return out


DEFAULT_HOLDOUT = 0.2
CREDIT = "obama_20s.mp4: Barack Obama, Oval Office address, 15 June 2010. Credit: The White House"


def default_video() -> pathlib.Path:
  """The embedded demo clip (package data; see jaxtalk/assets/README.md)."""
  path = pathlib.Path(str(importlib.resources.files("jaxtalk") / "assets" / "obama_20s.mp4"))
  if not path.is_file():
    raise JaxtalkError(
      f"the embedded demo clip is missing ({path}): reinstall jaxtalk (pip install -e .) or pass"
      " a clip: jaxtalk demo VIDEO"
    )
  return path


def with_holdout(cfg: ml_collections.ConfigDict, holdout: float) -> ml_collections.ConfigDict:
  """A copy of cfg whose data.holdout is `holdout` (the split is part of the data config, so the
  dataset and the checkpoints record it)."""
  out = copy.deepcopy(cfg)
  with out.unlocked():
    out.data.holdout = float(holdout)
  return out


def write_heldout(
  video: pathlib.Path, cut: int, out: pathlib.Path, cfg: ml_collections.ConfigDict
) -> int:
  """The real held-out part, frames cut.. (at data.fps) with their audio, as an mp4; its frame
  count. The background and the reference of the re-synthesis."""
  fps, sr = cfg.data.fps, cfg.data.sample_rate
  samples = read_audio(video, sr)
  n_audio = int(len(samples) / sr * fps + 1e-6)  # whole frames of audio
  a0 = int(round(cut / fps * sr))
  a1 = int(round(n_audio / fps * sr))
  if n_audio - cut < 4:
    raise JaxtalkError(
      f"{video}: the held-out part has {max(0, n_audio - cut)} frames; a longer clip or a larger"
      " --holdout is needed (at least 4)"
    )
  tmp = out.with_suffix(".partial.mp4")
  frames = itertools.islice(iter_frames(video, fps), cut, n_audio)  # the held-out part
  count = write_video(tmp, frames, fps, samples[a0:a1], sr)
  tmp.replace(out)
  return count


def run_demo(
  video: str | pathlib.Path | None,
  out_dir: str | pathlib.Path,
  cfg: ml_collections.ConfigDict,
  *,
  audio2: str | pathlib.Path | None = None,
  holdout: float = DEFAULT_HOLDOUT,
  progress: bool = True,
  say: Callable[[str], None] = print,
) -> DemoResult:
  """Preprocess, train, re-synthesise the held-out part, evaluate it and write the report.

  video None: the embedded clip. holdout: the fraction of the clip held out at its end (taken
  from cfg.data.holdout when that is set).
  """
  embedded = video is None
  video = default_video() if embedded else pathlib.Path(video)
  if not video.is_file():
    raise JaxtalkError(f"{video}: no such video file")
  if not 0.0 < holdout < 1.0:
    raise JaxtalkError(f"--holdout must be in (0, 1), got {holdout}")
  if not cfg.data.get("holdout", 0.0):
    cfg = with_holdout(cfg, holdout)
  holdout = float(cfg.data.holdout)
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

  # The held-out part: where the dataset's split put it (its manifest), else the same rule.
  source = open_dataset(dataset).manifest.get("sources", {}).get(video.name, {})
  cut = source.get("holdout_cut")
  if cut is None:
    cut = holdout_cut(sum(1 for _ in iter_frames(video, cfg.data.fps)), holdout)
  real = out / "heldout_real.mp4"
  n_held = stage("held-out part", lambda: write_heldout(video, int(cut), real, cfg))
  say(f"[demo] trained on frames 0-{cut - 1}; re-synthesising the held-out frames {cut}-"
      f"{cut + n_held - 1} from their own audio")  # fmt: skip

  models = infer.load_models(model, cfg)
  background = infer.prepare_background(real, models, say=say)
  generate = infer.make_generate(models)
  artefacts = {"dataset": dataset, "model": model, "real": real}
  result = stage("synthesise", lambda: infer.synthesize(
    models, background, real, out / "out.mp4", generate=generate,
    side_by_side=out / "side_by_side.mp4", progress=progress,
  ))  # fmt: skip
  artefacts.update(video=result.output, side_by_side=result.side_by_side)
  if audio2 is not None:
    whole = infer.prepare_background(video, models, say=say)
    r2 = stage("synthesise audio2", lambda: infer.synthesize(
      models, whole, audio2, out / "out_audio2.mp4", generate=generate, progress=progress,
    ))  # fmt: skip
    artefacts["video_audio2"] = r2.output

  picture = stage("slice", lambda: slice_picture(
    [real, result.output], ["real (held out)", "generated"], cfg))  # fmt: skip
  save_png(out / "slice.png", picture)
  artefacts["slice"] = out / "slice.png"

  record = stage("eval", lambda: evaluate(result.output, real, cfg, align="trim"))
  (out / "eval.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
  (out / "eval.md").write_text(to_markdown([record]) + "\n")
  artefacts.update(eval_json=out / "eval.json", eval_md=out / "eval.md")

  def report() -> None:
    for kind in ("renderer", "a2e"):
      artefacts[f"loss_{kind}"] = plot_metrics(
        model / kind / "metrics.jsonl", out / f"loss_{kind}.png"
      )
    artefacts["report_png"] = contact_sheet(real, result.output, record, out / "report.png")
    videos = [
      ("generated: the held-out part re-synthesised from its own audio", result.output),
      ("side by side: real | generated | shape render", result.side_by_side),
      ("real held-out part (never seen in training)", real),
    ]
    if "video_audio2" in artefacts:
      videos.append((f"the whole clip re-dubbed with {pathlib.Path(audio2).name}",
                     artefacts["video_audio2"]))  # fmt: skip
    summary = [
      f"Clip {video.name}: trained on frames 0-{cut - 1} ({1 - holdout:.0%}); evaluated on the "
      f"held-out frames {cut}-{cut + n_held - 1} ({n_held} frames, unseen audio of the same "
      f"person). Config {cfg.name}.",
      "MSI (stability) is only meaningful beside articulation: a frozen mouth is perfectly stable.",
    ]
    if embedded:
      summary.append(CREDIT)
    artefacts["report"] = write_html(
      out, title=f"jaxtalk demo: {video.name}", summary=summary, videos=videos,
      images=[("report.png: frames, real vs generated", artefacts["report_png"]),
              ("slice picture (a vertical line through the mouth over time)", out / "slice.png"),
              ("loss curves: renderer", artefacts["loss_renderer"]),
              ("loss curves: audio2expression", artefacts["loss_a2e"])],
      record=record,
    )  # fmt: skip

  stage("report", report)
  (out / "demo.json").write_text(json.dumps(
    {"video": str(video), "config": cfg.name, "holdout": holdout, "holdout_cut": int(cut),
     "heldout_frames": n_held, "seconds": seconds,
     "artefacts": {k: str(v) for k, v in artefacts.items()}}, indent=2) + "\n")  # fmt: skip
  return DemoResult(out, artefacts, seconds, record)
