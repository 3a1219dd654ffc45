"""Training audio2expression (StableFace Sec. III-A, IV-A: Transformer-S2A style), separately
from the renderer:

    jaxtalk train a2e --config configs/grid.py --data DATASET --workdir W [--resume]

Windows of a2e_train.seq_len frames of (audio, expression) only; the loss and the audio
augmentation are in jaxtalk/train/a2e_step.py (L2 on expressions and their velocity, plus the
mouth-landmark, correlation and amplitude terms that keep it from predicting the mean).
Only each clip's training frames take part (the dataset's holdout split, or `holdout=` for a
dataset made without one): validation, hence the best checkpoint, comes from the training
frames too (held out by clip, or the tail of the training part when there is one clip, see
pipeline.split_segments); an ensemble (model.a2e.members > 1) keeps each member at its own best
validation step (MemberSelection). `a2e_train.max_minutes` (> 0) stops at a wall-clock budget.
At the end the output calibration is fitted to the checkpoint inference will use (the best one)
on the validation frames and written to `W/calibration.json` (jaxtalk/train/a2e_calibrate.py).
Logistics (workers, log/eval/checkpoint intervals, keep, val_fraction, mesh, parallel) come from
train.*.
Same checkpoints, metrics log and exact resume as the renderer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import model_io
from jaxtalk.data import pipeline as data_lib
from jaxtalk.data.dataset import DatasetError
from jaxtalk.model_io import restore_a2e as restore_a2e_params  # noqa: F401  (re-exported)
from jaxtalk.train import a2e_step
from jaxtalk.train import state as state_lib
from jaxtalk.train.a2e_calibrate import fit_calibration, gain_mode
from jaxtalk.train.checkpoint import Checkpoints, check_compatible
from jaxtalk.train.observe import MetricsLog, progress, short
from jaxtalk.train.parallel import Runner, fetch, maybe_initialize_distributed
from jaxtalk.train.train import (
  RunResult,
  Say,
  check_dataset,
  compiled,
  config_json,
  open_workdir,
  program_key,
  runner_key,
  stop_diverged,
)


def train_a2e(
  cfg: Any,
  data_dir: str | pathlib.Path,
  workdir: str | pathlib.Path,
  *,
  resume: bool = False,
  show_progress: bool = True,
  parallel: str | None = None,
  holdout: float | None = None,
) -> RunResult:
  """Trains audio2expression on the training frames of `data_dir` into `workdir`.

  `holdout`: for a dataset preprocessed without a holdout split, hold out the last fraction of
  each clip here (a dataset's recorded split always wins; the two must agree when both are
  given)."""
  a, t = cfg.a2e_train, cfg.train
  maybe_initialize_distributed(cfg)
  primary = jax.process_index() == 0
  say = Say(primary, "jaxtalk train a2e")
  workdir = pathlib.Path(workdir)
  log = MetricsLog(workdir / "metrics.jsonl", enabled=primary)

  # -- mesh -------------------------------------------------------------------------------
  runner = Runner.create(cfg, parallel)
  runner.check_batch(a.batch_size, a.seq_len, "a2e_train")
  gain_mode(cfg)
  members = int(cfg.model.a2e.get("members", 1))  # each member its own a2e_train.batch_size

  # -- data -------------------------------------------------------------------------------
  ds = data_lib.open_data(data_dir)
  check_dataset(ds, cfg)
  clips = training_clips(ds, holdout)
  train_segs, val_segs, split_note = data_lib.split_segments(clips, t.val_fraction, a.seq_len)
  train_src = data_lib.WindowSource(ds, train_segs, a.seq_len, data_lib.A2E_KEYS)
  data_iter = iter(
    data_lib.train_dataset(
      train_src, global_batch=a.batch_size * members, seed=cfg.seed, workers=t.workers,
      process_index=jax.process_index(), process_count=jax.process_count(),
    )
  )  # fmt: skip
  val_src = data_lib.WindowSource(ds, val_segs, a.seq_len, data_lib.A2E_KEYS, stride=a.seq_len // 2)
  val_batches = data_lib.eval_batches(
    val_src, global_batch=a.batch_size, max_batches=t.eval_batches,
    process_index=jax.process_index(), process_count=jax.process_count(),
  )  # fmt: skip

  # -- model and optimiser ----------------------------------------------------------------
  token_sharding = runner.model_shardings()["token_sharding"]
  model = state_lib.a2e_model(cfg, token_sharding=token_sharding)
  tx = state_lib.a2e_tx(cfg)
  init_key, run_key = state_lib.make_keys(cfg.seed)
  if t.audio_norm:
    mean, std = training_audio_stats(ds, train_segs)
    data_stats = {"audio_mean": mean, "audio_std": std}
  else:
    data_stats = state_lib.default_data_stats(cfg.data.n_mels)
  init_fn = functools.partial(
    state_lib.init_a2e_state, model=model, tx=tx, seq_len=a.seq_len,
    audio_window=cfg.data.audio_window, n_mels=cfg.data.n_mels,
  )  # fmt: skip
  end = int(a.steps)

  # -- restore ----------------------------------------------------------------------------
  ckpt = Checkpoints(workdir, t.keep)
  cfg_json = config_json(cfg)
  latest = open_workdir(ckpt, resume, say)
  if primary:  # refitted at the end: never left describing a checkpoint it was not fitted to
    (workdir / model_io.A2E_CALIBRATION).unlink(missing_ok=True)
  abstract = runner.abstract_state(init_fn, init_key, run_key, data_stats)
  found = None
  if latest is not None:
    # the newest checkpoint that reads back; damaged ones are reported and set aside
    found = ckpt.restore_newest_readable(
      abstract,
      data_iter,
      lambda m: check_compatible(m.get("config", {}), cfg_json, ("model", "data")),
      say,
    )
    if found is None:
      say(f"no readable checkpoint left in {ckpt.workdir / 'checkpoints'}; starting from scratch")
  if found is not None:
    restored, _, latest = found
    if int(restored.bad_step) >= 0:
      say(f"the checkpoint stopped on a non-finite step ({int(restored.bad_step)}); continuing")
      restored = restored.replace(bad_step=jax.numpy.full_like(restored.bad_step, -1))
    state = runner.put_state(restored) if runner.mode == "pmap" else restored
    say(f"resumed from step {latest}")
  else:
    init = compiled(
      ("a2e_init", program_key(cfg_json), runner_key(runner)),
      lambda: runner.init_fn(init_fn, init_key, run_key, data_stats),
    )
    state = init(init_key, run_key, data_stats)
  start = int(runner.get_state(state).step)
  # An ensemble keeps every member at its own best validation step, as K separate runs would be
  # selected (docs/benchmarks.md, issue 15); a resumed run takes the selection from its best
  # checkpoint.
  selection = MemberSelection(members)
  if members > 1 and found is not None and ckpt.best_loss() is not None:
    best_state, best_meta = ckpt.restore_best(abstract)
    selection.restore(best_state.params, best_meta)
  say(
    f"data: {split_note}; {len(train_src)} training windows, {len(val_batches)} validation batches"
  )
  log.write({
    "event": "start", "kind": "a2e", "step": start, "end": end, "val_split": split_note,
    "devices": runner.n_devices, "processes": jax.process_count(), "mode": runner.mode,
  })  # fmt: skip

  # -- step -------------------------------------------------------------------------------
  ckey = (program_key(cfg_json), runner_key(runner))
  face_model = ds.face_model() if ds.face_model_kind == "landmark3d" else None
  basis = jnp.asarray(a2e_step.mouth_basis(face_model, cfg.data.expression_dim))
  hp = loss_params(a)
  train_fn = functools.partial(
    a2e_step.a2e_train_step, model=model, tx=tx, hp=hp, basis_ek=basis, audio_norm=t.audio_norm
  )
  eval_fn = functools.partial(
    a2e_step.a2e_eval_step, model=model, hp=hp, basis_ek=basis, audio_norm=t.audio_norm
  )
  train_step = compiled(
    ("a2e_step", *ckey),
    lambda: runner.step(
      lambda s, b, r, f, axis_name=None: train_fn(s, b, r, axis_name=axis_name), abstract
    ),
  )
  eval_step = compiled(
    ("a2e_eval", *ckey),
    lambda: runner.eval_fn(lambda s, b, f, axis_name=None: eval_fn(s, b, axis_name=axis_name)),
  )

  def meta(step: int, **extra) -> dict:
    return {"kind": "a2e", "step": step, "config": cfg_json, "val_split": split_note, **extra}

  def evaluate(step: int) -> None:
    if not val_batches:
      return
    sums: dict[str, float] = {}
    member_sum = np.zeros(members)
    for b in val_batches:
      out = jax.device_get(eval_step(state, runner.put_batch(b), None))  # one transfer
      if members > 1:
        member_sum += np.asarray(out.pop("member_loss"), np.float64)
      for k, v in fetch(out).items():
        sums[k] = sums.get(k, 0.0) + v
    val = {k: v / len(val_batches) for k, v in sums.items()}
    if members == 1:
      log.write({"split": "val", "step": step, **val})
      if ckpt.save_best(step, runner.get_state(state), meta(step), val["loss"]):
        say(f"step {step}: validation loss {val['loss']:.4g} (best so far)")
      return
    member_val = member_sum / len(val_batches)
    log.write({"split": "val", "step": step, **val, "member_loss": member_val.tolist()})
    improved = member_val < selection.loss_k
    if improved.any():
      current = runner.get_state(state)
      selection.update(improved, member_val, step, current.params)
      best_state = current.replace(params=selection.params)
      if ckpt.save_best(step, best_state, meta(step, **selection.meta()), selection.loss):
        say(
          f"step {step}: members {' '.join(str(int(k)) for k in np.flatnonzero(improved))} "
          f"improved; their best validation losses average {selection.loss:.4g}"
        )

  def diverged(m: dict) -> None:
    stop_diverged(runner.get_state(state), m["bad_step"], ckpt, data_iter, meta, log, bar)

  # -- loop -------------------------------------------------------------------------------
  bar = progress(end, start, "a2e", enabled=show_progress and primary)
  step, metrics, last = start, None, {}
  budget_s = 60.0 * float(a.get("max_minutes", 0.0) or 0.0)
  started = time.monotonic()
  try:
    while step < end:
      if budget_s and step > start and time.monotonic() - started > budget_s:
        say(f"wall-clock budget of {budget_s / 60:g} min reached at step {step}")
        evaluate(step)
        break
      batch = runner.put_batch(next(data_iter))
      prev = metrics
      state, metrics = train_step(state, batch, None)
      if prev is not None and int(prev["bad_step"]) >= 0:
        diverged(fetch(prev))
      step += 1
      bar.update(1)
      if (t.log_every and step % t.log_every == 0) or step == end:
        last = fetch(metrics)
        if last["bad_step"] >= 0:
          diverged(last)
        log.write({"split": "train", "step": step, **last})
        bar.set_postfix(short(last, ("loss", "l2", "velocity")))
      if (t.eval_every and step % t.eval_every == 0) or step == end:
        evaluate(step)
      if (t.ckpt_every and step % t.ckpt_every == 0) or step == end:
        ckpt.save(step, runner.get_state(state), data_iter, meta(step))
    if metrics is not None:
      last = fetch(metrics)
      if last["bad_step"] >= 0:
        diverged(last)
    ckpt.save(step, runner.get_state(state), data_iter, meta(step))
    best = ckpt.best_loss()
    # -- output calibration, on the checkpoint inference restores (the best, else the last)
    chosen = ckpt.restore_best(abstract)[0] if best is not None else runner.get_state(state)
    fitted = fit_calibration(
      cfg, ds, chosen.params, chosen.data_stats, int(chosen.step), train_segs, val_segs, basis
    )
    if fitted is not None and primary:
      model_io.save_a2e_calibration(workdir, *fitted)
      gains = fitted[0].gain_e
      say(
        f"output gain {gains[0]:.2f} (every component: the mouth's amplitude)"
        if fitted[1]["gain_mode"] == "mouth"
        else f"output gains of components 0-3: {' '.join(f'{g:.2f}' for g in gains[:4])}"
      )
    ckpt.close()
  finally:
    bar.close()
    data_iter.close()
  log.write({"event": "end", "step": step, "best_val": best})
  say(f"done at step {step}; checkpoints in {ckpt.workdir / 'checkpoints'}")
  return RunResult(step, workdir, best, False, last)


class MemberSelection:
  """Each ensemble member's best parameters and validation loss so far. Parameters have the
  members on their leading axis (Audio2ExpressionEnsemble); `params` combines, member by
  member, the parameters of each one's best step. `loss` (the mean of the members' best
  losses) falls whenever a member improves: the best-checkpoint manager keeps the newest
  combination."""

  def __init__(self, members: int):
    self.loss_k = np.full(members, np.inf)
    self.step_k = np.full(members, -1, np.int64)
    self.params: Any = None

  @property
  def loss(self) -> float:
    return float(np.mean(self.loss_k))

  def update(self, improved_k: np.ndarray, loss_k: np.ndarray, step: int, params: Any) -> None:
    keep = jnp.asarray(improved_k)
    best = params if self.params is None else self.params
    # jnp.where makes new buffers: the train step donates `params` right after
    self.params = jax.tree.map(
      lambda b, p: jnp.where(keep.reshape(-1, *[1] * (p.ndim - 1)), p, b), best, params
    )
    self.loss_k = np.where(improved_k, loss_k, self.loss_k)
    self.step_k = np.where(improved_k, step, self.step_k)

  def meta(self) -> dict:
    return {"member_val_loss": self.loss_k.tolist(), "member_step": self.step_k.tolist()}

  def restore(self, params: Any, meta: dict) -> None:
    """From the best checkpoint's parameters and meta (what `meta()` wrote)."""
    if "member_val_loss" not in meta:  # written by a jaxtalk that selected members jointly
      return
    self.params = params
    self.loss_k = np.asarray(meta["member_val_loss"], np.float64)
    self.step_k = np.asarray(meta["member_step"], np.int64)


@dataclasses.dataclass(frozen=True)
class LossParams:
  """The a2e_train weights the step reads (hashable: a static argument of the jitted step)."""

  l2_weight: float = 1.0
  velocity_weight: float = 1.0
  mouth_weight: float = 0.0
  corr_weight: float = 0.0
  std_weight: float = 0.0
  aug_gain_db: float = 0.0
  aug_noise_prob: float = 0.0
  aug_noise_snr_db: float = 20.0
  aug_stretch: float = 0.0


def loss_params(a2e_train: Any) -> LossParams:
  """LossParams from a config's a2e_train section (keys it lacks keep the defaults: the loss
  of configs written before issue 15 is L2 + velocity)."""
  return LossParams(
    **{f.name: float(a2e_train.get(f.name, f.default)) for f in dataclasses.fields(LossParams)}
  )


def training_clips(ds: Any, holdout: float | None = None) -> list[data_lib.ClipInfo]:
  """The dataset's clips with their training frame counts: the recorded holdout split, or the
  first 1 - `holdout` of each clip when the dataset has none."""
  clips = data_lib.list_clips(ds)
  if holdout is None or holdout <= 0:
    return clips
  if not 0 < holdout < 1:
    raise DatasetError(f"holdout must be in [0, 1), got {holdout}")
  if ds.holdout > 0:
    if abs(ds.holdout - holdout) > 1e-9:
      raise DatasetError(
        f"{ds.path}: the dataset records a holdout of {ds.holdout:g}, not {holdout:g}; "
        "leave --holdout out or preprocess again"
      )
    return clips
  return [
    dataclasses.replace(c, train_frames=c.num_frames - math.ceil(holdout * c.num_frames))
    for c in clips
  ]


def training_audio_stats(ds: Any, train_segs: list) -> tuple[Any, Any]:
  """Log-mel mean/std per bin over the training segments' frames only (their audio windows):
  no held-out frame (the dataset's split or `holdout=`) enters the standardisation."""
  total = total_sq = None
  count = 0
  for s in train_segs:
    x = np.asarray(ds.clip(s.clip)["audio"][s.start : s.stop], np.float64)
    x = x.reshape(-1, x.shape[-1])
    total = x.sum(0) if total is None else total + x.sum(0)
    total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
    count += x.shape[0]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
  return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)
