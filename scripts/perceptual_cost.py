"""Issue 14, item 3: the perceptual term alone (value_and_grad of losses.perceptual with the
shipped VGG16 weights) for the full crop, the mouth-centred half, a resized view and both;
tiny-config shapes (B 2 x T 4 x 64²), the variants interleaved.

  python scripts/perceptual_cost.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.io.lpips_weights import load_vgg16_params
from jaxtalk.models.vgg import VGG16Features
from jaxtalk.train import losses as L

p = load_vgg16_params()
m = VGG16Features()
rng = np.random.default_rng(0)
S = 64  # the tiny config's crop
pred = jnp.asarray(rng.uniform(-1, 1, (2, 4, S, S, 3)), jnp.float32)
tgt = jnp.asarray(rng.uniform(-1, 1, (2, 4, S, S, 3)), jnp.float32)
mask = jnp.zeros((2, 4, S, S)).at[:, :, S * 5 // 8 : S * 7 // 8, S // 4 : S * 3 // 4].set(1.0)
fns = {}
for name, kw in [
  ("full", {}),
  ("mouth_half", {"region": "mouth_half"}),
  ("size32", {"size": 32}),
  ("half+32", {"region": "mouth_half", "size": 32}),
]:
  f = jax.jit(
    jax.value_and_grad(
      lambda x, kw=kw: L.perceptual(
        lambda im: m.apply({"params": p}, im), x, tgt, mask_bthw=mask, mouth_weight=2.0, **kw
      )
    )
  )
  f(pred)[0].block_until_ready()
  fns[name] = f
ts = {k: [] for k in fns}
for _ in range(4):
  for k, f in fns.items():
    t0 = time.perf_counter()
    jax.block_until_ready(f(pred))
    ts[k].append(time.perf_counter() - t0)
for k, v in ts.items():
  print(f"{k} min {min(v):.3f} median {np.median(v):.3f}")
