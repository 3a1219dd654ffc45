"""The quality protocol on one person's clip: train on the first part, re-synthesise the held-out
rest from its own audio, and score it against the real held-out frames.

  jaxtalk bench quality VIDEO -o OUT [--holdout 0.2] [--minutes M] [--config C] [--variants [NAMES]]

Stages (each skipped when done, recorded in OUT/quality_state.json, so an interrupted run
resumes; a training stage that was cut off resumes from its last checkpoint with its whole
budget again):
  1. crop size  data.image_size from the face size (data.image_size_range, configs/cpu.py)
  2. preprocess VIDEO -> OUT/dataset with data.holdout = --holdout: the dataset records the
                split (the last fraction of the frames, by time) and the training pipeline
                reads only the frames before it (checked here before training)
  3. held out   OUT/real.mp4 = the held-out frames and their audio
  4. train      audio2expression (A2E_SHARE of the budget), then the renderer: stage 1 for 5/6
                of the rest, stage 2 (adaptive smoothing) for 1/6 (the paper's 100 + 20 epochs),
                each stopped by wall clock (train.max_seconds / a2e_train.max_minutes)
  5. synthesise OUT/generated.mp4: the held-out audio over the held-out frames as background
  6. score      OUT/slice.png, OUT/frames.png (face crops, real | generated), OUT/quality.json
                (jaxtalk.metrics.evaluate against OUT/real.mp4, plus the headline keys)
`--variants [NAMES]` then trains the Table V variants (jaxtalk/ablate.py; all, or a comma list
such as `baseline`) for the same renderer budget each, sharing the audio2expression model, and
writes OUT/variants.md / .json.

Default config: `cpu` when JAX runs on the CPU, `grid` (paper scale) on an accelerator.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np

from jaxtalk import infer, model_io
from jaxtalk.ablate import VARIANTS, check_variants, variant_config
from jaxtalk.cli import add_config_arguments
from jaxtalk.config import apply_overrides, load_config
from jaxtalk.data.dataset import open_dataset
from jaxtalk.data.pipeline import list_clips, split_segments
from jaxtalk.data.preprocess import preprocess
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.cache import video_track
from jaxtalk.face.crop import CropBox, config_crop_box, image_size_for
from jaxtalk.face.landmark3d import KIND
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import read_frames, write_video
from jaxtalk.metrics.evaluate import evaluate
from jaxtalk.metrics.sharpness import box_pixels
from jaxtalk.metrics.slice import save_png
from jaxtalk.metrics.video_slice import slice_picture
from jaxtalk.train.a2e_train import train_a2e
from jaxtalk.train.train import train_renderer

A2E_SHARE = 0.15  # audio2expression is ~100x cheaper per step than the renderer
STAGE2_SHARE = 1 / 6  # the paper's schedule: 100 epochs stage 1, 20 epochs stage 2
BIG = 10**7  # step counts "without end": the wall-clock budget stops the loops
# lower bounds of the periodic work's intervals in steps (eval_every is also a2e's validation,
# which keeps the best model)
PERIODIC_MIN = {"eval_every": 100, "ckpt_every": 500, "sample_every": 1000, "log_every": 25}
# quality.json headline keys -> evaluate()'s record keys
HEADLINE = {
  "msi_lip_ratio": "msi_lip_ratio",
  "msi_jaw_ratio": "msi_jaw_ratio",
  "aperture_ratio": "aperture_ratio",
  "aperture_corr": "aperture_corr",
  "lip_lmd": "lmd",
  "crop_ssim": "ssim",
  "crop_psnr": "psnr",
  "sync_offset_frames": "sync_offset_frames",
  "sync_confidence": "sync_confidence",
  "real_sync_offset_frames": "ref_sync_offset_frames",
  "mouth_lapvar_ratio": "mouth_lapvar_ratio",
  "mouth_cpbd_ratio": "mouth_cpbd_ratio",
  "msi_lip": "msi_lip",
  "msi_jaw": "msi_jaw",
  "real_msi_lip": "ref_msi_lip",
  "real_msi_jaw": "ref_msi_jaw",
  # LPIPS on the face crop and the mouth box (issue 14; lower is closer to the real frames)
  "lpips_vgg_face": "lpips_vgg_face",
  "lpips_vgg_mouth": "lpips_vgg_mouth",
  "lpips_alex_face": "lpips_alex_face",
  "lpips_alex_mouth": "lpips_alex_mouth",
}
VARIANT_COLUMNS = (
  "msi_lip_ratio", "msi_jaw_ratio", "aperture_ratio", "aperture_corr", "sync_offset_frames",
  "mouth_lapvar_ratio", "lip_lmd", "crop_ssim", "crop_psnr", "renderer_steps",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("video", help="one person's talking clip (video with audio)")
  parser.add_argument("-o", "--out", required=True, help="output folder (resumable)")
  parser.add_argument("--holdout", type=float, default=0.2, help="held-out fraction at the end")
  parser.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
  parser.add_argument(
    "--variants", nargs="?", const="all", default=None, metavar="NAMES",
    help="also the Table V variants: all, or a comma list (e.g. baseline,no_smoothing)",
  )  # fmt: skip
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  add_config_arguments(parser)


# ------------------------------------------------------------------------------ stages


class State:
  """Finished stages and their results, persisted after each stage."""

  def __init__(self, path: pathlib.Path, settings: dict):
    self.path = path
    self.data = json.loads(path.read_text()) if path.is_file() else {}
    old = self.data.get("settings")
    if old is not None and old != settings:
      diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
      raise JaxtalkError(
        f"{path.parent} holds a run with other settings ({', '.join(diff)}); use another -o"
      )
    self.data["settings"] = settings
    self.data.setdefault("done", {})

  def done(self, stage: str) -> bool:
    return stage in self.data["done"]

  def get(self, stage: str):
    return self.data["done"][stage]

  def finish(self, stage: str, result=True) -> None:
    self.data["done"][stage] = result
    self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def heldout_split(dataset: pathlib.Path) -> dict:
  """The holdout split the dataset recorded for its one source (data.holdout at preprocess):
  frames [0, cut) may train, [cut, frames) are held out (frames counted at data.fps)."""
  ds = open_dataset(dataset)
  sources = ds.manifest.get("sources", {})
  if len(sources) != 1 or not ds.holdout:
    raise JaxtalkError(f"{dataset}: expected one source with a holdout split")
  ((name, info),) = sources.items()
  cut, n = int(info["holdout_cut"]), int(info["frames"])
  return {"source": info.get("path", name), "fps": ds.fps, "frames": n, "holdout": ds.holdout,
          "train_frames": [0, cut], "heldout_frames": [cut, n]}  # fmt: skip


def write_heldout(video: pathlib.Path, out: pathlib.Path, split: dict, cfg) -> int:
  """out/real.mp4: the held-out frames [cut, frames) of `video` (at data.fps) and their audio,
  cut at the same instant; returns the frames written (the audio may end a little earlier)."""
  fps, sr = float(cfg.data.fps), int(cfg.data.sample_rate)
  cut, n = split["heldout_frames"]
  frames = read_frames(video, fps)
  samples = read_audio(video, sr)
  n = min(n, len(frames), int(len(samples) * fps / sr))
  if n - cut < 2 * int(cfg.infer.window):
    raise JaxtalkError(f"{video}: only {n - cut} held-out frames; raise --holdout")
  s0, s1 = int(round(cut * sr / fps)), int(round(n * sr / fps))
  return write_video(out / "real.mp4", frames[cut:n], fps, samples[s0:s1], sr)


def training_extent(dataset: pathlib.Path, seq_len: int, val_fraction: float) -> int:
  """One past the last source frame any training or validation window can read, from the
  dataset's own split as the training pipeline applies it (jaxtalk.data.pipeline)."""
  ds = open_dataset(dataset)
  train, val, _ = split_segments(list_clips(ds), val_fraction, seq_len)
  first = {n: int(ds.manifest["clips"][n]["first_frame"]) for n in ds.clip_names}
  return max(first[s.clip] + s.stop for s in [*train, *val])


def choose_image_size(video: pathlib.Path, cfg) -> int:
  """data.image_size for this clip by configs/cpu.py's rule (unchanged without a range)."""

  size_range = cfg.data.get("image_size_range")
  if not size_range:
    return int(cfg.data.image_size)
  track = video_track(video, cfg.data.landmark_backend, cfg.track, fps=cfg.data.fps)
  box = config_crop_box(track.boxes_t4, track.found_t, cfg.data)
  return image_size_for(box.side, tuple(size_range))


def train_models(cfg, dataset: pathlib.Path, model: pathlib.Path, seconds: float, state: State,
                 prefix: str, progress: bool, say: Callable[[str], None],
                 a2e: bool = True) -> dict:  # fmt: skip
  """a2e then the renderer's two stages, each stopped by its share of `seconds`."""

  # A budget of minutes buys thousands of small steps: periodic work at the tiny config's
  # every-10-steps (right for its 30-step tests) would cost more than the training.
  periodic = [f"train.{k}={max(int(cfg.train[k]), n)}" for k, n in PERIODIC_MIN.items()]

  def with_budget(overrides: list[str]):
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.lock()
    apply_overrides(c, [*periodic, *overrides])
    return c

  steps: dict = {}
  renderer_s = seconds * (1 - A2E_SHARE) if a2e else seconds
  if a2e:
    if not state.done(f"{prefix}a2e"):
      say(f"[quality] {prefix}train audio2expression for {seconds * A2E_SHARE:.0f} s")
      c = with_budget(
        [f"a2e_train.steps={BIG}", f"a2e_train.max_minutes={seconds * A2E_SHARE / 60.0}"]
      )
      r = train_a2e(c, dataset, model / "a2e", resume=True, show_progress=progress)
      cal = model / "a2e" / model_io.A2E_CALIBRATION
      gain = json.loads(cal.read_text())["gain"] if cal.is_file() else None
      state.finish(f"{prefix}a2e", {"steps": r.step, "output_gain": gain})
    steps["a2e_steps"] = state.get(f"{prefix}a2e")["steps"]
    steps["a2e_output_gain"] = state.get(f"{prefix}a2e").get("output_gain")
  s1_budget = renderer_s * (1 - STAGE2_SHARE)
  if not state.done(f"{prefix}renderer1"):
    say(f"[quality] {prefix}train the renderer, stage 1, for {s1_budget:.0f} s")
    c = with_budget(
      [f"train.stage1_steps={BIG}", "train.stage2_steps=0", f"train.max_seconds={s1_budget}"]
    )
    r = train_renderer(c, dataset, model / "renderer", resume=True, stage="1",
                       show_progress=progress)  # fmt: skip
    state.finish(f"{prefix}renderer1", {"steps": r.step})
  s1 = state.get(f"{prefix}renderer1")["steps"]
  if not state.done(f"{prefix}renderer2"):
    s2_budget = renderer_s * STAGE2_SHARE
    say(f"[quality] {prefix}train the renderer, stage 2 (smoothing), for {s2_budget:.0f} s")
    c = with_budget(
      [f"train.stage1_steps={s1}", f"train.stage2_steps={BIG}", f"train.max_seconds={s2_budget}"]
    )
    r = train_renderer(c, dataset, model / "renderer", resume=True, stage="all",
                       show_progress=progress)  # fmt: skip
    state.finish(f"{prefix}renderer2", {"steps": r.step})
  steps["renderer_stage1_steps"] = s1
  steps["renderer_steps"] = state.get(f"{prefix}renderer2")["steps"]
  return steps


def frame_grid(real: pathlib.Path, generated: pathlib.Path, box: list[int], n: int = 4,
               min_size: int = 256) -> np.ndarray:  # fmt: skip
  """n evenly spaced frames' face crops: real on top, generated below (RGB uint8), each crop at
  least `min_size` pixels (whole-factor pixel replication, nothing resampled)."""

  a, b = read_frames(real), read_frames(generated)
  m = min(len(a), len(b))
  picks = np.linspace(0, m - 1, n + 2).round().astype(int)[1:-1]
  crop = CropBox(*box)
  k = max(1, -(-min_size // crop.side))

  def cell(f):
    c = box_pixels(f, crop)
    return np.repeat(np.repeat(c, k, axis=0), k, axis=1)

  top = np.concatenate([cell(a[i]) for i in picks], axis=1)
  bottom = np.concatenate([cell(b[i]) for i in picks], axis=1)
  return np.concatenate([top, bottom], axis=0)


def synthesise_and_score(cfg, model: pathlib.Path, out: pathlib.Path, real: pathlib.Path,
                         progress: bool, say: Callable[[str], None]) -> dict:  # fmt: skip
  """out/generated.mp4 from real.mp4's audio over real.mp4's frames; its evaluation record."""

  generated = out / "generated.mp4"
  models = infer.load_models(model, cfg)
  background = infer.prepare_background(real, models, say=say)
  infer.synthesize(models, background, real, generated, progress=progress)
  say(f"[quality] scoring {generated} against {real}")
  return evaluate(generated, real, cfg, align="trim", progress=progress)


def headline(record: dict) -> dict:
  return {k: record.get(src) for k, src in HEADLINE.items()}


def _cell(v) -> str:
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.3f}"
  return str(v)


def table(rows: list[dict], first: str = "variant") -> str:
  lines = [f"| {first} | " + " | ".join(VARIANT_COLUMNS) + " |",
           "|---|" + "---:|" * len(VARIANT_COLUMNS)]  # fmt: skip
  for r in rows:
    lines.append(f"| {r[first]} | " + " | ".join(_cell(r.get(c)) for c in VARIANT_COLUMNS) + " |")
  return "\n".join(lines)


# ------------------------------------------------------------------------------ command


def default_config_name() -> str:

  return "cpu" if jax.default_backend() == "cpu" else "grid"


def run_quality(video, out_dir, cfg, *, holdout: float = 0.2, minutes: float = 20.0,
                variants: bool | str | Sequence[str] = False, progress: bool = True,
                say: Callable[[str], None] = print) -> dict:  # fmt: skip
  """The whole protocol (see the module docstring); returns quality.json's content.
  `variants`: True or "all" for every Table V variant, or their names (a list or a comma
  string); "full" is the run itself."""

  video = pathlib.Path(video)
  variant_names = chosen_variants(variants)
  if not video.is_file():
    raise JaxtalkError(f"{video}: no such video file")
  if not minutes > 0:
    raise JaxtalkError(f"--minutes must be > 0, got {minutes}")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  settings = {"video": str(video.resolve()), "holdout": holdout, "minutes": minutes,
              "config": cfg.to_dict()}  # fmt: skip
  state = State(out / "quality_state.json", json.loads(json.dumps(settings, default=list)))
  dataset, model, real = out / "dataset", out / "model", out / "real.mp4"
  seconds = minutes * 60.0
  timings: dict[str, float] = dict(state.data.get("seconds", {}))

  def stage(name: str, fn: Callable[[], object]) -> object:
    t = time.perf_counter()
    result = fn()
    timings[name] = round(time.perf_counter() - t, 1)
    state.data["seconds"] = timings
    return result

  if not state.done("image_size"):
    state.finish("image_size", choose_image_size(video, cfg))
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.data.image_size = int(state.get("image_size"))
  cfg.data.holdout = float(holdout)
  cfg.lock()
  say(f"[quality] crop size {cfg.data.image_size} (config {cfg.name})")

  if not state.done("preprocess"):
    say(f"[quality] preprocess {video.name}, the last {holdout:.0%} held out")
    stage("preprocess", lambda: preprocess([video], dataset, cfg, face_model=KIND,
                                           progress=progress))  # fmt: skip
    state.finish("preprocess", heldout_split(dataset))
  split = state.get("preprocess")
  extent = training_extent(dataset, int(cfg.train.seq_len), float(cfg.train.val_fraction))
  if extent > split["heldout_frames"][0]:  # the pipeline's guarantee, checked before training
    raise JaxtalkError(f"{dataset}: training would read frame {extent - 1}, past the holdout cut")
  say(f"[quality] train frames {split['train_frames']}, held-out frames {split['heldout_frames']}")
  if not state.done("real"):
    state.finish("real", write_heldout(video, out, split, cfg))

  steps = stage("train", lambda: train_models(cfg, dataset, model, seconds, state, "",
                                              progress, say))  # fmt: skip
  if not state.done("score"):
    say("[quality] re-synthesise the held-out part from its own audio")
    record = stage("synthesise+score", lambda: synthesise_and_score(cfg, model, out, real,
                                                                    progress, say))  # fmt: skip
    (out / "eval.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    save_png(out / "slice.png", slice_picture([real, out / "generated.mp4"],
                                              ["real (held out)", "generated"], cfg))  # fmt: skip
    save_png(out / "frames.png", frame_grid(real, out / "generated.mp4", record["face_crop_box"]))
    state.finish("score")
  record = json.loads((out / "eval.json").read_text())
  result = {
    **headline(record), **steps, "config": cfg.name, "image_size": int(cfg.data.image_size),
    "minutes": minutes, "holdout": holdout, "split": split, "seconds": timings,
  }  # fmt: skip
  (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")

  if variant_names:
    result["variants"] = run_variants(cfg, out, dataset, model, real, seconds, state, result,
                                      variant_names, progress, say)  # fmt: skip
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
  return result


def chosen_variants(variants: bool | str | Sequence[str]) -> tuple[str, ...]:
  """The Table V variants to train besides the full model, checked before any work."""
  if variants is True or variants == "all":
    return tuple(v for v in VARIANTS if v != "full")
  if not variants:
    return ()
  names = variants.split(",") if isinstance(variants, str) else list(variants)
  names = [n.strip() for n in names if n.strip()]
  check_variants(names)
  return tuple(dict.fromkeys(n for n in names if n != "full"))


def run_variants(cfg, out: pathlib.Path, dataset: pathlib.Path, model: pathlib.Path,
                 real: pathlib.Path, seconds: float, state: State, full: dict,
                 names: Sequence[str], progress: bool,
                 say: Callable[[str], None]) -> list[dict]:  # fmt: skip
  """Table V variants `names` at the full model's renderer budget, sharing its
  audio2expression."""

  renderer_s = seconds * (1 - A2E_SHARE)
  rows = [{"variant": "full", **full}]
  for name in names:
    folder = out / "variants" / name
    vcfg = variant_config(cfg, name, None)
    train_models(vcfg, dataset, folder, renderer_s, state, f"{name}/", progress, say, a2e=False)
    if not (folder / "a2e").exists():
      shutil.copytree(model / "a2e", folder / "a2e")
    key = f"{name}/score"
    if not state.done(key):
      say(f"[quality] variant {name}: re-synthesise and score")
      record = synthesise_and_score(vcfg, folder, folder, real, progress, say)
      state.finish(
        key, {**headline(record), "renderer_steps": state.get(f"{name}/renderer2")["steps"]}
      )
    rows.append({"variant": name, **state.get(key)})
  text = table(rows)
  (out / "variants.md").write_text(text + "\n")
  (out / "variants.json").write_text(json.dumps(rows, indent=2) + "\n")
  say(text)
  return rows


def run(args: argparse.Namespace) -> int:

  name = args.config or default_config_name()
  cfg = load_config(name, args.overrides)
  result = run_quality(args.video, args.out, cfg, holdout=args.holdout, minutes=args.minutes,
                       variants=args.variants, progress=not args.quiet)  # fmt: skip
  print(json.dumps({k: v for k, v in result.items() if k not in ("split", "variants")}, indent=2))
  print(f"wrote {pathlib.Path(args.out) / 'quality.json'}")
  return 0
