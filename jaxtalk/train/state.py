"""Train states, optimisers and model bundles of both trainings. What a checkpoint holds (the
state pytrees, model builders, optimisers; their layout is documented there) lives in the
neutral `jaxtalk.model_io`, re-exported below; this module adds what only training needs."""

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
