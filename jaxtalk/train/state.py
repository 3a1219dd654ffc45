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

from typing import Any

import jax
import numpy as np
import optax

# The state pytrees, model builders and optimisers define what a checkpoint holds, so they live
# in the neutral jaxtalk.model_io (inference restores through it without importing train/);
# re-exported here for the training code.
from jaxtalk.model_io import (  # noqa: F401
  A2EState,
  RendererModels,
  RendererState,
  _adam,
  a2e_model,
  a2e_tx,
  default_data_stats,
  discriminator_tx,
  generator_tx,
  init_a2e_state,
  init_renderer_state,
  make_keys,
  perceptual_module,
  renderer_models,
  subtree_labels,
)

PyTree = Any


def reset_smoothing_opt(state: RendererState, g_tx: optax.GradientTransformation) -> RendererState:
  """A fresh Adam state for the smoothing subtree (entering stage 2: it took no step in stage 1,
  and its moment estimates and bias correction start from zero there)."""
  fresh = g_tx.init(state.g_params)
  inner = dict(state.g_opt.inner_states)
  inner["smoothing"] = fresh.inner_states["smoothing"]
  return state.replace(g_opt=state.g_opt._replace(inner_states=inner))


def param_count(tree: PyTree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
