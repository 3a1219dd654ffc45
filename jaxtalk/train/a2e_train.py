"""Training audio2expression (StableFace Sec. III-A, IV-A: Transformer-S2A style), separately
from the renderer:

    jaxtalk train a2e --config configs/grid.py --data DATASET --workdir W [--resume]

Windows of a2e_train.seq_len frames of (audio, expression) only; loss = L2 on expressions +
a2e_train.velocity_weight * L2 on their frame-to-frame differences. Validation is held out by
clip (the tail of the clip when there is only one, see pipeline.split_segments). Logistics
(workers, log/eval/checkpoint intervals, keep, val_fraction, mesh, parallel) come from train.*.
Same checkpoints, metrics log and exact resume as the renderer.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax

from jaxtalk.data import pipeline as data_lib
from jaxtalk.model_io import restore_a2e as restore_a2e_params  # noqa: F401  (re-exported)
from jaxtalk.train import state as state_lib
from jaxtalk.train import step as step_lib
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
) -> RunResult:
  a, t = cfg.a2e_train, cfg.train
  maybe_initialize_distributed(cfg)
  primary = jax.process_index() == 0
  say = Say(primary, "jaxtalk train a2e")
  workdir = pathlib.Path(workdir)
  log = MetricsLog(workdir / "metrics.jsonl", enabled=primary)

  # -- mesh -------------------------------------------------------------------------------
  runner = Runner.create(cfg, parallel)
  runner.check_batch(a.batch_size, a.seq_len, "a2e_train")

  # -- data -------------------------------------------------------------------------------
  ds = data_lib.open_data(data_dir)
  check_dataset(ds, cfg)
  train_segs, val_segs, split_note = data_lib.split_segments(
    data_lib.list_clips(ds), t.val_fraction, a.seq_len
  )
  train_src = data_lib.WindowSource(ds, train_segs, a.seq_len, data_lib.A2E_KEYS)
  data_iter = iter(
    data_lib.train_dataset(
      train_src, global_batch=a.batch_size, seed=cfg.seed, workers=t.workers,
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
    mean, std = data_lib.audio_stats(ds, sorted({s.clip for s in train_segs}))
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
  say(
    f"data: {split_note}; {len(train_src)} training windows, {len(val_batches)} validation batches"
  )
  log.write({
    "event": "start", "kind": "a2e", "step": start, "end": end, "val_split": split_note,
    "devices": runner.n_devices, "processes": jax.process_count(), "mode": runner.mode,
  })  # fmt: skip

  # -- step -------------------------------------------------------------------------------
  ckey = (program_key(cfg_json), runner_key(runner))
  train_fn = functools.partial(
    step_lib.a2e_train_step, model=model, tx=tx, velocity_weight=a.velocity_weight,
    audio_norm=t.audio_norm,
  )  # fmt: skip
  eval_fn = functools.partial(
    step_lib.a2e_eval_step, model=model, velocity_weight=a.velocity_weight, audio_norm=t.audio_norm
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
    for b in val_batches:
      for k, v in fetch(eval_step(state, runner.put_batch(b), None)).items():
        sums[k] = sums.get(k, 0.0) + v
    val = {k: v / len(val_batches) for k, v in sums.items()}
    log.write({"split": "val", "step": step, **val})
    if ckpt.save_best(step, runner.get_state(state), meta(step), val["loss"]):
      say(f"step {step}: validation loss {val['loss']:.4g} (best so far)")

  def diverged(m: dict) -> None:
    stop_diverged(runner.get_state(state), m["bad_step"], ckpt, data_iter, meta, log, bar)

  # -- loop -------------------------------------------------------------------------------
  bar = progress(end, start, "a2e", enabled=show_progress and primary)
  step, metrics, last = start, None, {}
  try:
    while step < end:
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
    ckpt.close()
  finally:
    bar.close()
    data_iter.close()
  log.write({"event": "end", "step": step, "best_val": best})
  say(f"done at step {step}; checkpoints in {ckpt.workdir / 'checkpoints'}")
  return RunResult(step, workdir, best, False, last)
