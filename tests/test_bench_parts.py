"""`jaxtalk bench model --per-module` times the renderer's parts apart: chained in the
renderer's order, with the renderer's own parameters, they must give the renderer's output
(otherwise the per-module rows would time something else than the model)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.bench.model import renderer_parts
from jaxtalk.config import load_config
from jaxtalk.models.renderer import renderer_from_config


def test_renderer_parts_chain_to_the_renderer():
  cfg = load_config("tiny")
  model = renderer_from_config(cfg)
  b, t, s = 1, 2, cfg.data.image_size
  w, f = cfg.data.audio_window, cfg.data.n_mels
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  bg = jax.random.uniform(k1, (b, t, s, s, 3), minval=-1.0, maxval=1.0)
  shape = jax.random.uniform(k2, (b, t, s, s, 3), minval=-1.0, maxval=1.0)
  audio = jax.random.normal(k3, (b, t, w, f))
  # jitted: op by op, the renderer's init and apply took 30 s
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), bg, shape, audio)
  expected = jax.jit(model.apply)(variables, bg, shape, audio)

  parts = renderer_parts(model, variables, s, b, t, w, f)
  names = [p[0] for p in parts]
  assert names == ["encoder", "audio fusion", "dependency", "bottleneck", "decoder"]
  fns = {name: (fn, params, inputs) for name, fn, params, inputs in parts}
  # every part's timing input has the shape the renderer feeds it
  x = jnp.concatenate([bg, shape], axis=-1).reshape(b * t, s, s, 6)
  h = fns["encoder"][0](fns["encoder"][1], x)
  assert h.shape == fns["bottleneck"][2][0].shape
  h = fns["audio fusion"][0](fns["audio fusion"][1], h, audio.reshape(b * t, w, f))
  h = fns["dependency"][0](fns["dependency"][1], h.reshape(b, t, *h.shape[1:]))
  assert h.shape == fns["dependency"][2][0].shape
  h = fns["bottleneck"][0](fns["bottleneck"][1], h.reshape(b * t, *h.shape[2:]))
  y = fns["decoder"][0](fns["decoder"][1], h).reshape(b, t, s, s, 3)
  np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)
