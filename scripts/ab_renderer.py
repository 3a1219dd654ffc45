"""Old against new convolution paths of the renderer, in ONE process, calls interleaved (A B A B):
the fairest before/after figure on a shared, noisy machine.

  python scripts/ab_renderer.py [--size 128] [--frames 8] [--rounds 4] [--grad]

"old" is the renderer with the modules as they were before issue 10 (reflect pad + VALID conv,
nn.ConvTranspose), swapped in while tracing; "new" is jaxtalk as it is. Both run the same
parameters (the trees are identical). --grad times forward + backward (gradient of a sum of the
output with respect to the parameters) instead of the forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxtalk.config import load_config  # noqa: E402
from jaxtalk.models import layers, renderer  # noqa: E402
from jaxtalk.models.layers import Dtype, leaky_relu, reflect_pad  # noqa: E402


class OldConvNormAct(nn.Module):
  features: int
  kernel: int
  stride: int = 1
  reflect: bool = False
  norm: bool = True
  act: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.stride == 1:
      pad = (self.kernel - 1) // 2
      pads = ((pad, self.kernel - 1 - pad),) * 2
    else:
      pad = (self.kernel - self.stride) // 2
      pads = ((pad, pad),) * 2
    if self.reflect:
      x = reflect_pad(x, pads[0][0])
      pads = "VALID"
    x = nn.Conv(
      self.features,
      (self.kernel, self.kernel),
      strides=(self.stride, self.stride),
      padding=pads,
      dtype=self.dtype,
      use_bias=not self.norm,
    )(x)
    if self.norm:
      x = nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype)(x)
    return leaky_relu(x) if self.act else x


# Flax names unnamed submodules after their class: the stand-in must keep the old name so the
# parameter tree is the same
OldConvNormAct.__name__ = "ConvNormAct"


class OldDecoder(nn.Module):
  base_channels: int = 64
  n_down: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in reversed(range(self.n_down)):
      x = nn.ConvTranspose(
        self.base_channels * 2**i, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
        dtype=self.dtype,
      )(x)  # fmt: skip
      x = leaky_relu(nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype)(x))
    x = nn.Conv(3, (7, 7), padding="VALID", dtype=self.dtype)(reflect_pad(x, 3))
    return jnp.tanh(x)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="grid")
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--frames", type=int, default=8)
  ap.add_argument("--rounds", type=int, default=4)
  ap.add_argument("--grad", action="store_true")
  args = ap.parse_args()
  cfg = load_config(args.config)
  cfg.data.image_size = args.size
  model = renderer.renderer_from_config(cfg)
  key = jax.random.PRNGKey(0)
  t, s = args.frames, args.size
  x = jax.random.uniform(key, (1, t, s, s, 3), minval=-1.0, maxval=1.0)
  a = jax.random.normal(key, (1, t, cfg.data.audio_window, cfg.data.n_mels))
  v = jax.jit(model.init)(key, x, x, a)

  def fwd(v, x, a):
    return model.apply(v, x, x, a)

  def make_fn():
    # a fresh function object per variant: jax.jit caches traces by function, and the two
    # variants differ only in the module classes swapped in while tracing
    def f(v, x, a):
      return fwd(v, x, a)

    return jax.grad(lambda v, x, a: jnp.sum(f(v, x, a))) if args.grad else f

  compiled = {}
  saved = (renderer.ConvNormAct, renderer.Decoder, layers.ConvNormAct)
  renderer.ConvNormAct, renderer.Decoder, layers.ConvNormAct = (
    OldConvNormAct, OldDecoder, OldConvNormAct
  )  # fmt: skip
  try:
    compiled["old"] = jax.jit(make_fn()).lower(v, x, a).compile()
  finally:
    renderer.ConvNormAct, renderer.Decoder, layers.ConvNormAct = saved
  compiled["new"] = jax.jit(make_fn()).lower(v, x, a).compile()
  outs = {k: jax.block_until_ready(c(v, x, a)) for k, c in compiled.items()}
  diff = max(
    float(jnp.max(jnp.abs(p - q)) / (jnp.max(jnp.abs(q)) + 1e-12))
    for p, q in zip(jax.tree.leaves(outs["new"]), jax.tree.leaves(outs["old"]), strict=True)
  )
  print(f"{args.config} {s}² B=1 T={t} {'fwd+bwd' if args.grad else 'forward'}: "
        f"max relative difference new vs old {diff:.2e}", flush=True)  # fmt: skip
  times = {k: [] for k in compiled}
  for r in range(args.rounds):
    for k, c in compiled.items():
      t0 = time.perf_counter()
      jax.block_until_ready(c(v, x, a))
      times[k].append(time.perf_counter() - t0)
      print(f"  round {r + 1} {k}: {times[k][-1]:.3f} s", flush=True)
  ratios = [o / n for o, n in zip(times["old"], times["new"], strict=True)]
  for k in times:
    print(f"{k}: median {statistics.median(times[k]):.3f} s, min {min(times[k]):.3f} s")
  print(f"speed-up new vs old: median of per-round ratios {statistics.median(ratios):.2f}x, "
        f"ratio of minima {min(times['old']) / min(times['new']):.2f}x")  # fmt: skip
  return 0


if __name__ == "__main__":
  sys.exit(main())
