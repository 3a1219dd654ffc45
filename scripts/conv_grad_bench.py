"""Forward, input-gradient and weight-gradient time of the renderer's convolutions: XLA's own
(`lax.conv_general_dilated` and its autodiff) against jaxtalk.models.conv.conv, same process,
same inputs, alternating; also checks that both give the same numbers.

    python scripts/conv_grad_bench.py [--frames 8] [--size 128] [--repeats 3]
                                      [--baseline OLD_CHECKOUT] [--only NAME,NAME]

The layers are the paper config's (configs/grid.py) at a `--size` crop, with `--frames` frames:
encoder 7x7 6->64 (reflect-padded map), the two 4x4 stride-2 downsamplers, a bottleneck 3x3
256->256 (reflect-padded map), the decoder's sub-pixel 2x2 convs and its 7x7 64->3 output conv,
and the PatchGAN's first 4x4 stride-2 conv; then VGG16's 3x3 convs at each width (zero padded),
which jaxtalk runs as Winograd. The bottleneck row compares the two forms each side runs: XLA's
SAME conv of the reflect-padded map cropped by one pixel (the fast form for XLA's own kernels)
and jaxtalk's VALID conv of the same map (Winograd). Prints seconds (best of --repeats after a
compiling call) and the speed-up of each part. --baseline times an older checkout's
models/conv.py too (loaded from its file, same process, same inputs), for a before/after;
--only keeps the layers whose name contains one of the given strings.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.bench.train import _best  # compile once, then the best of `repeats` calls
from jaxtalk.models.conv import conv

DN = ("NHWC", "HWIO", "NHWC")


def layers(size: int, base: int):
  """(name, input map size, kernel, stride, C, F, XLA's padding, XLA's crop, jaxtalk's padding) of
  the renderer with `base` channels (64: the paper config; 8: tiny and cpu), its PatchGAN's first
  conv and VGG16's 3x3 convs."""
  q, e, b = size // 4, size // 2, base
  one = ((1, 1), (1, 1))
  rows = [
    (f"encoder 7x7 6->{b}", size + 6, 7, 1, 6, b, "SAME"),
    (f"encoder 4x4 s2 {b}->{2 * b}", size, 4, 2, b, 2 * b, one),
    (f"encoder 4x4 s2 {2 * b}->{4 * b}", e, 4, 2, 2 * b, 4 * b, one),
    (f"decoder 2x2 {4 * b}->4x{2 * b}", q, 2, 1, 4 * b, 8 * b, one),
    (f"decoder 2x2 {2 * b}->4x{b}", e, 2, 1, 2 * b, 4 * b, one),
    (f"decoder 7x7 {b}->3", size + 6, 7, 1, b, 3, "SAME"),
    (f"PatchGAN 4x4 s2 3->{b}", size, 4, 2, 3, b, one),
  ]
  rows = [(*r, 0, r[-1]) for r in rows]
  rows.insert(
    3, (f"bottleneck 3x3 {4 * b}->{4 * b}", q + 2, 3, 1, 4 * b, 4 * b, "SAME", 1, "VALID")
  )
  for width, scale in ((64, 1), (128, 2), (256, 4), (512, 8)):
    rows.append((f"VGG16 3x3 {width}->{width}", size // scale, 3, 1, width, width, one, 0, one))
  return rows


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--frames", type=int, default=8)
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--base", type=int, default=64, help="renderer base channels (tiny, cpu: 8)")
  ap.add_argument("--baseline", type=pathlib.Path, default=None, help="older checkout to time")
  ap.add_argument("--only", default="", help="layers whose name contains one of these (a,b)")
  args = ap.parse_args()
  old_conv = None
  if args.baseline is not None:
    spec = importlib.util.spec_from_file_location(
      "baseline_conv", args.baseline / "jaxtalk" / "models" / "conv.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old_conv = module.conv
  only = [s for s in args.only.split(",") if s]
  print(
    f"# {jax.devices()[0].device_kind}, {args.frames} frames, crop {args.size}, base {args.base}"
  )
  extra = " baseline fwd / dx / dw s |" if old_conv else ""
  print(f"| layer | XLA fwd / dx / dw s | jaxtalk fwd / dx / dw s | fwd, dx, dw speed-up |{extra}")
  print("|---|---|---|---|" + ("---|" if old_conv else ""))
  for name, h, k, s, c, f, pad, crop, pad_ours in layers(args.size, args.base):
    if only and not any(o in name for o in only):
      continue
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (args.frames, h, h, c))
    w = jax.random.normal(kk, (k, k, c, f)) * 0.05

    def xla(x, w, s=s, pad=pad, crop=crop):
      y = jax.lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=DN)
      return y[:, crop : y.shape[1] - crop, crop : y.shape[2] - crop]

    def ours(x, w, s=s, pad=pad_ours):
      return conv(x, w, (s, s), pad, dimension_numbers=DN)

    def baseline(x, w, s=s, pad=pad_ours):
      return old_conv(x, w, (s, s), pad, dimension_numbers=DN)

    g = jax.random.normal(kg, xla(x, w).shape)
    ref = jax.jit(lambda x, w, g: jax.vjp(xla, x, w)[1](g))(x, w, g)
    got = jax.jit(lambda x, w, g: jax.vjp(ours, x, w)[1](g))(x, w, g)
    for a, b in zip(got, ref, strict=True):
      scale = float(jnp.max(jnp.abs(b)))
      np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-4)
    row = {}
    for label, fn in (("xla", xla), ("ours", ours), ("baseline", baseline)):
      if label == "baseline" and old_conv is None:
        continue
      row[label] = (
        _best(fn, (x, w), args.repeats),
        _best(
          lambda x, w, g, fn=fn: jax.vjp(lambda x: fn(x, w), x)[1](g)[0], (x, w, g), args.repeats
        ),
        _best(
          lambda x, w, g, fn=fn: jax.vjp(lambda w: fn(x, w), w)[1](g)[0], (x, w, g), args.repeats
        ),
      )
    a, b = row["xla"], row["ours"]
    print(
      f"| {name} | {a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f} | {b[0]:.3f} / {b[1]:.3f} / {b[2]:.3f} |"
      f" {a[0] / b[0]:.1f}x, {a[1] / b[1]:.1f}x, {a[2] / b[2]:.1f}x |"
      + (" {:.3f} / {:.3f} / {:.3f} |".format(*row["baseline"]) if old_conv else ""),
      flush=True,
    )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
