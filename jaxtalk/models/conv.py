"""A 2-D convolution whose gradients XLA's CPU backend computes fast; the same math as
`lax.conv_general_dilated`, passed to Flax as `nn.Conv(..., conv_general_dilated=conv)`.

Why: XLA CPU runs a convolution fast only in its "forward" form (small window, padded input:
its YNNPACK kernels). A convolution's *weight* gradient is a convolution whose window is the
whole output map (a 3x3 conv's at 32x32 is a 32x32 window), and a strided convolution's *input*
gradient convolves a zero-dilated map; XLA runs both in its generic convolution: the weight
gradients of the paper config's layers at 128² take 4-200x their forward, the strided input
gradients 2x (`python scripts/conv_grad_bench.py`, docs/benchmarks.md, issue 10). PyTorch's
oneDNN has dedicated backward kernels; here the backward is re-expressed in the forms XLA runs
fast, on the CPU only (other backends keep XLA's own gradients; `on_cpu`):

- weight gradient of a stride-1 conv over the padded input xp (N, Hp, Wp, C): with every image
  flattened to rows (row = y * Wp + x) and the output cotangent g zero-padded to (N, Hp, Wp, F),
  tap (a, b) of the kernel is `xp_rows[a Wp + b : a Wp + b + L]^T @ g_rows`: each tap is a
  *contiguous* row shift (the rows that wrap past an image's right edge or into the next image
  meet zeros of g), so each tap is one matrix product on a row range of x (no im2col; XLA
  still copies each range, a contiguous copy, before its product: when g has fewer channels, g
  is the one shifted, a smaller copy); where
  one side has few channels (the first and last convs), the shifted copies of that side are
  stacked instead (im2col, channel-major, in chunks of rows of about `CHUNK_BYTES` that stay in
  cache) and one product per chunk reads the wide side once;
- stride s with s dividing the kernel: space-to-depth turns the conv into a stride-1 conv with an
  (k/s x k/s) kernel over s*s*C channels, for both gradients;
- input gradient of a stride-1 conv with unequal or even padding: the conv of the padded
  cotangent with the flipped kernel, computed in the padded form (`_valid`); XLA's own is used
  for the odd-kernel, equal-padding ("SAME") case where it is already fast.

The forward is XLA's, except for wide 3x3 stride-1 float32 convs (the bottleneck's, VGG16's
256-wide): on the CPU those run as Winograd F(4x4, 3x3) (`winograd_conv3x3`, Lavin & Gray
2016, an algorithm cuDNN also uses for such layers): each 6x6 input tile and each
kernel is moved by a fixed linear map into a domain where the convolution is 36 independent
matrix products over channels, then mapped back to a 4x4 output tile: 2.25 multiplies per output
instead of 9. Its custom VJP stays in that form: the input gradient is again a Winograd conv
(of the cotangent with the flipped kernel), the weight gradient one matrix product per tile
position. At the paper config's bottleneck (256 -> 256, 8 maps of 34x34) the forward is 1.3x
XLA's and the weight gradient 2.8x the per-tap one below (`python scripts/conv_grad_bench.py`,
docs/benchmarks.md). The same sums in another order: outputs differ from the direct convolution
by float32 rounding (~1e-5 of the output's scale, tests/test_conv.py). Other backends keep
their own convolution (`on_cpu`).

On a GPU the weight gradient of even stride-1 kernels (the UpConv's 2x2) is taken by matrix
products, per tap and frame (`gpu_weight_grad`; measured faster on the H200). Two studies for
the GPU, off by default (docs/benchmarks.md, issue 10): on any backend, JAXTALK_CONV_CHANNELS=N
zero-pads the channels of the convs handled here to multiples of N (`channel_multiple`); off
the CPU, JAXTALK_CONV_BLOCKS=r runs the narrow stride-1 convs (a side under 8 channels) on r x r
pixel blocks, space to depth (`block_factor`, `blocked_conv`). JAXTALK_CONV_FORMS=xla traces
the model as written on any backend, every form and study off (`model_forms`): what the MFU's
FLOPs are counted on.

Anything else (dilation, groups, other layouts or ranks, a stride that does not divide the
kernel) goes to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxtalk.models.platform import forms_platform

NHWC = ("NHWC", "HWIO", "NHWC")
# the weight gradient's im2col is built and multiplied in chunks of about this many bytes
CHUNK_BYTES = 8 * 2**20
# below this many channels on either side the weight gradient uses im2col (weight_grad_valid)
MIN_CHANNELS_PER_TAP = 32

# 3x3 stride-1 convs with at least this many channels on both sides run as Winograd on the CPU
WINOGRAD_MIN_CHANNELS = 256

Pads = tuple[tuple[int, int], tuple[int, int]]

# Winograd F(4, 3) (interpolation points 0, 1, -1, 2, -2, inf; Lavin & Gray 2016): for a 6-tap
# input tile d and a 3-tap kernel g, the 4 outputs of their correlation are
# AT @ ((G @ g) * (BT @ d)).
_BT = np.array(
  [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
  ],
  np.float64,
)
_G = np.array(
  [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
  ],
  np.float64,
)
_AT = np.array(
  [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64
)
_TILE_OUT, _TILE_IN = _AT.shape


FORMS_VARIABLE = "JAXTALK_CONV_FORMS"


def model_forms() -> bool:
  """Whether the model is traced as written, read from JAXTALK_CONV_FORMS when the program is
  traced: `auto` (the default) gives each backend its fast forms (the CPU's above, the GPU's
  `gpu_weight_grad`) and lets the studies' variables apply; `xla` gives XLA's convolutions and
  their autodiff on every backend, jnp.pad's reflect pads and every study off. The FLOPs the
  MFU counts are those of the `xla` forms (jaxtalk/bench/train.step_model_gflops): the CPU's
  SAME reflect convs compute ~3 % more outputs in the renderer, a study's padded channels or
  zero taps more again."""
  return _env_choice(FORMS_VARIABLE, ("auto", "xla"), "auto") == "xla"


def _env_choice(name: str, choices: Sequence[str], default: str) -> str:
  """The environment variable `name` (case and spaces ignored), one of `choices`; `default`
  when unset."""
  chosen = os.environ.get(name, "").strip().lower() or default
  if chosen not in choices:
    raise ValueError(f"{name}={chosen!r}: expected one of {tuple(choices)}")
  return chosen


def on_cpu() -> bool:
  """Whether the CPU forms apply: decided when the program is traced, by JAX's default backend
  (as attention.make_attention_fn picks its kernel; `platform.traced_for` names another), unless
  `model_forms()`. `lax.platform_dependent` would defer the choice to lowering, but it traces
  both forms of every conv and leaves XLA a conditional per conv to fold: the tiny config's
  train step compiled in ~19.5 s that way against ~15 s (2-core CPU, 2026-11-26). Lowering for
  another platform than the default one (jax.export) therefore keeps the default backend's
  forms, unless traced within `platform.traced_for`."""
  return forms_platform() == "cpu" and not model_forms()


def on_gpu() -> bool:
  """Whether a GPU's default forms apply (`gpu_weight_grad`, layers.reflect_pad_form,
  layers.interleave_form): traced for a GPU, unless `model_forms()`."""
  return forms_platform() == "gpu" and not model_forms()


def _study_factor(name: str) -> int:
  """A study's positive integer from the environment variable `name`; 1 (off) when unset or
  under `model_forms()`."""
  raw = os.environ.get(name, "").strip()
  if not raw or model_forms():
    return 1
  if not raw.isdigit() or int(raw) < 1:
    raise ValueError(f"{name}={raw!r}: expected a positive integer (1: off)")
  return int(raw)


def study_choice(name: str, choices: Sequence[str], default: str) -> str:
  """A study's form from the environment variable `name` (case and spaces ignored), one of
  `choices`; `default` when unset or under `model_forms()`."""
  return default if model_forms() else _env_choice(name, choices, default)


def channel_multiple() -> int:
  """The multiple every conv's input and output channels are zero-padded to (1: none), read
  from JAXTALK_CONV_CHANNELS when the program is traced. A study for the GPU (issue 10,
  docs/benchmarks.md): on the H200 the paper config's convs with a 3- or 6-channel side (the
  renderer's first and last 7x7s, D's and VGG's first) ran as single-launch sm80 kernels, about
  15 % of the bf16 train step for a small share of its FLOPs, where the wide convs got sm90
  kernels. A likely cause: a 3- or 6-channel bf16 row is not 16-byte aligned. XLA pads f16
  convs to multiples of 8 for the tensor cores itself (its cudnn_pad_for_convolutions pass),
  but not bf16 ones. The padded channels are zeros in both x and k, so they add exact zeros to
  every sum, and the extra output channels are sliced off: outputs and gradients are the
  unpadded conv's, to the order of summation (tests/test_conv.py); the parameters keep their
  shapes. The FLOPs the MFU counts are the unpadded model's (scripts/device_check.py)."""
  return _study_factor("JAXTALK_CONV_CHANNELS")


WEIGHT_GRAD_MODES = ("xla", "taps")


def gpu_weight_grad() -> str:
  """How a conv's weight gradient is taken off the CPU, read from JAXTALK_CONV_WGRAD when the
  program is traced: `taps` (the default on a GPU): for stride-1 convs with an even kernel, one
  matrix product per tap and frame, the frames summed after (`weight_grad_frames`); or `xla`
  (XLA's, cuDNN's on a GPU; the default elsewhere off the CPU, where it is unmeasured). On the
  H200, cuDNN took the UpConv's 2x2 weight gradients as forward kernels of 64 and 128 thread
  blocks for its 132 SMs, the sum over all 4.3 M output pixels unsplit: 17.2 and 4.8 ms of the
  537 ms B = 32 train step, ~65 and ~237 TFLOP/s (the third session's trace). By taps the B = 16
  bf16 train step took 0.198 s against 0.202 s, side by side on one H200 (fourth session,
  docs/benchmarks.md). The input gradient stays XLA's. Same sums in another order
  (tests/test_conv.py)."""
  default = "taps" if on_gpu() else "xla"
  return study_choice("JAXTALK_CONV_WGRAD", WEIGHT_GRAD_MODES, default)


def taps_weight_grad_applies(kh: int, kw: int, strides: Sequence[int]) -> bool:
  """Whether `weight_grad_frames` takes the weight gradient of a (kh, kw) conv with `strides`
  under JAXTALK_CONV_WGRAD=taps: stride 1 and an even kernel side."""
  return tuple(strides) == (1, 1) and (kh % 2 == 0 or kw % 2 == 0)


# a conv side with fewer channels than this is "narrow" (`block_factor`)
NARROW_CHANNELS = 8


def block_factor() -> int:
  """The block size r of the space-to-depth form of narrow convs (1: off), read from
  JAXTALK_CONV_BLOCKS when the program is traced. A study for the GPU (issue 10,
  docs/benchmarks.md): on the H200 the paper config's decoder's last conv (7x7, 64 -> 3, 256²)
  took ~22 ms of the 0.198 s B = 16 bf16 train step (forward 6.6 ms, gradients 15.3, cuDNN's
  sm80 kernels) for ~0.5 TFLOP, and the encoder's first (7x7, 6 -> 64) ~6 ms. Channel padding
  to 8 barely helped (fourth session). Off the CPU, a stride-1 conv with a side of fewer than
  NARROW_CHANNELS channels and a kernel of at least r x r taps then runs as the stride-1 conv
  of its r x r pixel blocks (`blocked_conv`): r² C -> r² F channels (r = 4: 64 -> 3 becomes
  1024 -> 48) with a ceil((r + k - 1) / r)-tap kernel, at ~3x the FLOPs (zero taps) on shapes
  tensor cores fill."""
  return _study_factor("JAXTALK_CONV_BLOCKS")


def blocked_conv_applies(k_shape: Sequence[int], strides: Sequence[int], out_hw, r: int) -> bool:
  """Whether `blocked_conv` on r x r blocks takes a conv with kernel (kh, kw, C, F), `strides`
  and output (H, W) off the CPU: r > 1, stride 1, a side of fewer than NARROW_CHANNELS channels,
  a kernel of at least r x r, and an output whose H and W are multiples of r."""
  kh, kw, c, f = k_shape
  return (
    r > 1 and tuple(strides) == (1, 1) and min(c, f) < NARROW_CHANNELS and min(kh, kw) >= r
    and out_hw[0] % r == 0 and out_hw[1] % r == 0
  )  # fmt: skip


def blocked_conv(x_nhwc: jax.Array, k_hwio: jax.Array, pads: Pads, r: int) -> jax.Array:
  """The stride-1 conv of x padded by `pads`, computed on r x r pixel blocks (`block_factor`):
  with xs[a, b, (p, q, c)] = xp[r a + p, r b + q, c] (space to depth) and output phase (i, j),
  y[r a + i, r b + j] = sum over taps (m, n) of xs[a + m, b + n] @ K[m, n, :, (i, j)], where
  K[m, n, (p, q, c), (i, j, f)] = k[r m + p - i, r n + q - j, c, f] (zero outside the kernel).
  The output's H and W must be multiples of r. The same products as the direct conv plus exact
  zeros, summed in another order (tests/test_conv.py)."""
  kh, kw, c, f = k_hwio.shape
  xp = _pad(x_nhwc, pads)
  n, hp, wp, _ = xp.shape
  ho, wo = hp - kh + 1, wp - kw + 1
  mh, mw = -(-(r + kh - 1) // r), -(-(r + kw - 1) // r)
  hn, wn = ho + r * (mh - 1), wo + r * (mw - 1)  # >= hp, wp: zero rows the zero taps meet
  xp = lax.pad(
    xp, jnp.zeros((), xp.dtype), ((0, 0, 0), (0, hn - hp, 0), (0, wn - wp, 0), (0, 0, 0))
  )
  xs = xp.reshape(n, hn // r, r, wn // r, r, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(n, hn // r, wn // r, r * r * c)
  zero = jnp.zeros((), k_hwio.dtype)
  phases = [
    _regroup_kernel(
      lax.pad(
        k_hwio, zero, ((i, r * mh - kh - i, 0), (j, r * mw - kw - j, 0), (0, 0, 0), (0, 0, 0))
      ),
      r,
    )
    for i in range(r)
    for j in range(r)
  ]  # each (mh, mw, r² C, F): phase (i, j)'s kernel over the blocks
  ys = _conv(xs, jnp.concatenate(phases, axis=3), (1, 1), ((0, 0), (0, 0)))
  y = ys.reshape(n, ho // r, wo // r, r, r, f).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, ho, wo, f)


def pad_channels(
  x_nhwc: jax.Array, k_hwio: jax.Array, multiple: int
) -> tuple[jax.Array, jax.Array]:
  """x and k with the input channels C (x's and k's) and the output channels F (k's) zero-padded
  up to multiples of `multiple`; the conv's output then has the padded F, its first F the
  unpadded conv's."""
  c, f = k_hwio.shape[2:]
  cp, fp = -(-c // multiple) * multiple, -(-f // multiple) * multiple
  if cp != c:
    x_nhwc = jnp.pad(x_nhwc, ((0, 0), (0, 0), (0, 0), (0, cp - c)))
  if (cp, fp) != (c, f):
    k_hwio = jnp.pad(k_hwio, ((0, 0), (0, 0), (0, cp - c), (0, fp - f)))
  return x_nhwc, k_hwio


def _lax_conv(x: jax.Array, k: jax.Array, strides: Sequence[int], pads) -> jax.Array:
  return lax.conv_general_dilated(x, k, tuple(strides), pads, dimension_numbers=NHWC)


def _valid(xp: jax.Array, k: jax.Array) -> jax.Array:
  """The VALID stride-1 conv of xp, computed as a padded conv and cropped: XLA CPU runs the
  padded form 2-10x faster (the same taps in the same order, so the same numbers)."""
  kh, kw = k.shape[:2]
  ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  lh, lw = (kh - 1) // 2, (kw - 1) // 2
  y = _lax_conv(xp, k, (1, 1), ((lh, kh - 1 - lh), (lw, kw - 1 - lw)))
  return y[:, lh : lh + ho, lw : lw + wo]


def _im2col_product(
  narrow_cl: jax.Array, starts: Sequence[int], wide_lw: jax.Array, length: int
) -> jax.Array:
  """(len(starts) * Cn, Cw): sum over rows l < length of narrow_cl[:, s + l] wide_lw[l], for each
  start s (tap), stacked tap-major. The narrow side's shifted copies (im2col) are built and
  multiplied a chunk of rows at a time (`lax.scan`), so each chunk of the copies, about
  CHUNK_BYTES, is still in cache when its product reads it: the whole im2col of the encoder's
  first conv (294 rows of 156,000 columns, 183 MB) went to memory and back, 178 ms against 106
  for its weight gradient (paper config, 128², 8 frames). Each chunk's copies are a gather,
  which XLA CPU copies 2-3x faster than a concatenation of the same static slices."""
  cn, cw = narrow_cl.shape[0], wide_lw.shape[1]
  item = jnp.dtype(narrow_cl.dtype).itemsize
  chunks = -(-length * len(starts) * cn * item // CHUNK_BYTES)  # equal chunks, little padding
  r = -(-length // chunks)
  wide = jnp.pad(wide_lw[:length], ((0, chunks * r - length), (0, 0)))  # zero rows add nothing
  need = max(starts) + chunks * r
  narrow = jnp.pad(narrow_cl, ((0, 0), (0, max(0, need - narrow_cl.shape[1]))))
  idx = jnp.asarray(starts, jnp.int32)

  def chunk(acc, i):
    s0 = i * r
    cols = jax.vmap(lambda s: lax.dynamic_slice_in_dim(narrow, s0 + s, r, axis=1))(idx)
    part = lax.dynamic_slice_in_dim(wide, s0, r, axis=0)
    return acc + jnp.dot(cols.reshape(-1, r), part, preferred_element_type=jnp.float32), None

  acc = jnp.zeros((len(starts) * cn, cw), jnp.float32)
  acc, _ = lax.scan(chunk, acc, jnp.arange(chunks))
  return acc.astype(jnp.result_type(narrow_cl, wide_lw))


def weight_grad_valid(xp_nhwc: jax.Array, g_nhwf: jax.Array, kh: int, kw: int) -> jax.Array:
  """(kh, kw, C, F) gradient of the stride-1 VALID conv of xp (N, Hp, Wp, C) for output
  cotangent g (N, Hp-kh+1, Wp-kw+1, F), by row shifts and matrix products (module docstring)."""
  n, hp, wp, c = xp_nhwc.shape
  _, ho, wo, f = g_nhwf.shape
  rows = n * hp * wp
  offsets = [a * wp + b for a in range(kh) for b in range(kw)]
  # g's last `extra` rows are padding (zero), so x rows past the end are never needed
  extra = offsets[-1]
  used = rows - extra
  g_lf = jnp.pad(g_nhwf, ((0, 0), (0, hp - ho), (0, wp - wo), (0, 0))).reshape(rows, f)[:used]
  x_lc = xp_nhwc.reshape(rows, c)
  if min(c, f) >= MIN_CHANNELS_PER_TAP:
    # one matrix product per tap on a contiguous row range (no im2col). Each shifted operand is
    # a copy, so the narrower side is the one shifted: x's rows o.. against g, or all of x
    # against g moved down by o rows (x row m meets g row m - o; zeros elsewhere)
    if f < c:
      taps = [
        jnp.einsum("lc,lf->cf", x_lc, jnp.pad(g_lf, ((o, extra - o), (0, 0)))) for o in offsets
      ]
    else:
      taps = [jnp.einsum("lc,lf->cf", x_lc[o : o + used], g_lf) for o in offsets]
    return jnp.stack(taps).reshape(kh, kw, c, f)
  # few channels on one side: per-tap products would be thin and re-read the wide side once
  # per tap, so the narrow side's shifted copies are stacked channel-major (im2col) and one
  # product per chunk of rows reads the wide side once
  if c <= f:
    dk = _im2col_product(x_lc.T, offsets, g_lf, used)  # (taps * C, F)
    return dk.reshape(kh, kw, c, f)
  # tap t pairs x row l + o_t with g row l, i.e. x row m with g row m - o_t: shifted copies of
  # g (zero-padded on both sides so every shift stays in range), each meeting all of x
  g_fl = jnp.pad(g_lf.T, ((0, 0), (extra, extra)))
  dk = _im2col_product(g_fl, [extra - o for o in offsets], x_lc, rows)  # (taps * F, C)
  return dk.reshape(-1, f, c).transpose(0, 2, 1).reshape(kh, kw, c, f)


def weight_grad_frames(xp_nhwc: jax.Array, g_nhwf: jax.Array, kh: int, kw: int) -> jax.Array:
  """(kh, kw, C, F) gradient of the stride-1 VALID conv of xp (N, Hp, Wp, C) for the output
  cotangent g (N, Ho, Wo, F), for a GPU (`gpu_weight_grad`): per tap, one matrix product per
  frame, batched (the frames are independent thread blocks, and the dimension a data-parallel
  mesh shards), then the frames summed, in float32. The barrier keeps XLA from folding that
  sum back into the product as one long contraction, the form cuDNN ran on too few blocks.

  Each tap's (N, C, F) products are summed on their own: stacked first, they were copied into
  one (taps, N, C, F) array, for D's 4x4 256 -> 512 conv 1.07 GB of float32 per application
  at B = 16, by XLA's concatenate at one element per thread (a deviceless compile for the H200,
  docs/benchmarks.md)."""
  _, ho, wo, _ = g_nhwf.shape
  taps = [
    jnp.einsum("nhwc,nhwf->ncf", xp_nhwc[:, a : a + ho, b : b + wo], g_nhwf,
               preferred_element_type=jnp.float32)
    for a in range(kh) for b in range(kw)
  ]  # fmt: skip
  per_frame = lax.optimization_barrier(taps)  # taps x (N, C, F)
  return jnp.stack([t.sum(0) for t in per_frame]).reshape(kh, kw, *taps[0].shape[1:])


def _pad(x_nhwc: jax.Array, pads: Pads) -> jax.Array:
  return jnp.pad(x_nhwc, ((0, 0), pads[0], pads[1], (0, 0)))


def _tile_counts(hp: int, wp: int) -> tuple[int, int]:
  """Winograd output tiles (4x4) along H and W for the VALID 3x3 conv of an (Hp, Wp) map."""
  return -(-(hp - 2) // _TILE_OUT), -(-(wp - 2) // _TILE_OUT)


def winograd_applies(
  xp_shape: Sequence[int], k_shape: Sequence[int], strides: Sequence[int], dtype
) -> bool:
  """Whether `conv` runs the VALID conv of a padded map of shape xp_shape (N, Hp, Wp, C) with a
  kernel of k_shape (kh, kw, C, F) as Winograd on the CPU: 3x3, stride 1, float32 (the
  transforms' 1/24 .. 8 coefficients cost bf16 too much precision), both sides >=
  WINOGRAD_MIN_CHANNELS (VGG16's 64- and 128-wide layers ran 0.8-0.9x XLA's forward: the tile
  transforms, linear in the channels, cost more than the multiplies saved) and
  at least max(C, F) / 2 output tiles over the batch (fewer, the kernel transform, 36 C F values,
  costs more: a 512->512 conv over 8 maps of 16x16, 128 tiles, took 1.6x XLA's forward +
  backward). Measured per shape: docs/benchmarks.md, `python scripts/conv_grad_bench.py`."""
  n, hp, wp, c = xp_shape
  kh, kw, _, f = k_shape
  th, tw = _tile_counts(hp, wp)
  tiles = n * th * tw
  return (
    (kh, kw) == (3, 3)
    and tuple(strides) == (1, 1)
    and jnp.dtype(dtype) == jnp.float32
    and min(c, f) >= WINOGRAD_MIN_CHANNELS
    and tiles >= max(c, f) // 2
  )


def _combine(mat: np.ndarray, parts: Sequence[jax.Array]) -> list[jax.Array]:
  """[sum_j mat[i, j] parts[j] for each row i], skipping zero coefficients: elementwise sums XLA
  fuses into one pass (a dot with a 6-long contraction would not)."""
  out = []
  for row in mat:
    terms = [(float(c), p) for c, p in zip(row, parts) if c != 0]
    acc = None
    for c, p in terms:
      t = p if c == 1 else -p if c == -1 else p * jnp.asarray(c, p.dtype)
      acc = t if acc is None else acc + t
    out.append(acc)
  return out


def _input_tiles(xp_nhwc: jax.Array, th: int, tw: int) -> jax.Array:
  """(36, N * th * tw, C): BT d B of every 6x6 tile d of xp, tiles every 4 pixels, position
  p = 6 a_x + a_y. Tap j of every tile along an axis is the strided slice starting at j."""
  m, a = _TILE_OUT, _TILE_IN
  n, c = xp_nhwc.shape[0], xp_nhwc.shape[-1]
  rows = _combine(_BT, [xp_nhwc[:, j : j + m * (th - 1) + 1 : m] for j in range(a)])
  rows_ynhwc = jnp.stack(rows)  # (a_y, N, th, Wp, C)
  cols = _combine(_BT, [rows_ynhwc[:, :, :, j : j + m * (tw - 1) + 1 : m] for j in range(a)])
  return jnp.stack(cols).reshape(a * a, n * th * tw, c)


def _output_tiles(prod_pnf: jax.Array, n: int, th: int, tw: int) -> jax.Array:
  """(N, 4 th, 4 tw, F): AT m A of every transformed tile m (the inverse of _input_tiles' layout).
  Output tiles do not overlap."""
  m, a = _TILE_OUT, _TILE_IN
  f = prod_pnf.shape[-1]
  prod = prod_pnf.reshape(a, a, n, th, tw, f)
  out_x = jnp.stack(_combine(_AT, list(prod)))  # (m_x, a_y, N, th, tw, F)
  out_xy = jnp.stack(_combine(_AT, [out_x[:, j] for j in range(a)]), 1)  # (m_x, m_y, ...)
  return out_xy.transpose(2, 3, 1, 4, 0, 5).reshape(n, th * m, tw * m, f)


def _output_tiles_t(g_nhwf: jax.Array, th: int, tw: int) -> jax.Array:
  """(36, N * th * tw, F): the transpose of `_output_tiles` (A g AT of every 4x4 tile of g
  (N, 4 th, 4 tw, F), tiles not overlapping), written as `_input_tiles` is: elementwise sums of
  strided slices. The weight gradient needs it; jax.linear_transpose of `_output_tiles` gave the
  same map as scatter-like fusions that XLA CPU ran 3.5x slower (15 ms against 4.3 at the
  paper config's bottleneck, 8 maps of 32x32x256)."""
  m, a = _TILE_OUT, _TILE_IN
  n, f = g_nhwf.shape[0], g_nhwf.shape[-1]
  at_t = _AT.T  # (6 positions, 4 pixels)
  rows_ynhwf = jnp.stack(_combine(at_t, [g_nhwf[:, j::m] for j in range(m)]))  # (a_y, N, th, W, F)
  cols = _combine(at_t, [rows_ynhwf[:, :, :, j::m] for j in range(m)])  # a_x of (a_y, N, th, tw, F)
  return jnp.stack(cols).reshape(a * a, n * th * tw, f)


# kernel transform G g GT as one (36 positions x 9 taps) matrix: position (x, y), tap (i, j)
_GG = np.einsum("yi,xj->xyij", _G, _G).reshape(_TILE_IN**2, 9)


def _kernel_tiles(k_hwio: jax.Array) -> jax.Array:
  """(36, C, F): G g GT per (C, F) kernel, one product of the (36, 9) transform with the 9 taps
  (4x faster than elementwise sums of the taps, 60x faster than a 3-operand einsum)."""
  _, _, c, f = k_hwio.shape
  gg = jnp.asarray(_GG, k_hwio.dtype)
  return jnp.einsum("pt,tcf->pcf", gg, k_hwio.reshape(9, c, f), precision=lax.Precision.HIGHEST)


def _kernel_tiles_t(du_pcf: jax.Array) -> jax.Array:
  """(3, 3, C, F): the transpose of `_kernel_tiles`, one product with the transposed (36, 9)
  matrix (jax.linear_transpose of the einsum ran 6.7x slower on XLA CPU: 5.3 ms against 0.8)."""
  _, c, f = du_pcf.shape
  gg = jnp.asarray(_GG, du_pcf.dtype)
  dk = jnp.einsum("pt,pcf->tcf", gg, du_pcf, precision=lax.Precision.HIGHEST)
  return dk.reshape(3, 3, c, f)


def _winograd_forward(
  xp_nhwc: jax.Array, u_pcf: jax.Array, spec: str = "pnc,pcf->pnf"
) -> tuple[jax.Array, jax.Array]:
  """The VALID 3x3 conv of xp with the transformed kernel u (`_kernel_tiles`; `spec` contracts
  the tiles with it: "pnf,pcf->pnc" convolves with the channel-swapped kernel without
  transposing u), and the transformed input tiles (kept for the weight gradient)."""
  n, hp, wp, _ = xp_nhwc.shape
  th, tw = _tile_counts(hp, wp)
  m = _TILE_OUT
  # zero rows/columns past the end complete the last tiles; their outputs are cropped
  xt = jnp.pad(xp_nhwc, ((0, 0), (0, th * m + 2 - hp), (0, tw * m + 2 - wp), (0, 0)))
  v_pnc = _input_tiles(xt, th, tw)
  prod_pnf = jnp.einsum(spec, v_pnc, u_pcf)
  y = _output_tiles(prod_pnf, n, th, tw)[:, : hp - 2, : wp - 2]
  return y, v_pnc


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _winograd(x_nhwc: jax.Array, k_hwio: jax.Array, pads: Pads) -> jax.Array:
  return _winograd_forward(_pad(x_nhwc, pads), _kernel_tiles(k_hwio))[0]


def _winograd_fwd(x_nhwc, k_hwio, pads):
  y, v_pnc = _winograd_forward(_pad(x_nhwc, pads), _kernel_tiles(k_hwio))
  return y, (v_pnc, k_hwio, x_nhwc.shape)


def _winograd_bwd(pads, res, g_nhwf):
  """dx: the correlation of g zero-padded by (2 - pad) (a negative pad crops: only the pixels of
  x itself, not of its padding) with the flipped, channel-swapped kernel, itself a Winograd VALID
  conv, as fast as the forward (autodiff through the tile transforms would scatter-add
  overlapping 6x6 tiles instead). dk: per tile position, the saved input tiles times the
  cotangent moved into the tile domain (the transpose of the output transform: output tiles do
  not overlap), then the transpose of the kernel transform."""
  v_pnc, k_hwio, (_, h, w, _) = res
  (lh, hh), (lw, hw) = pads
  hp, wp = h + lh + hh, w + lw + hw
  th, tw = _tile_counts(hp, wp)
  m = _TILE_OUT
  zero = jnp.zeros((), g_nhwf.dtype)
  gp = lax.pad(g_nhwf, zero, ((0, 0, 0), (2 - lh, 2 - hh, 0), (2 - lw, 2 - hw, 0), (0, 0, 0)))
  # the flipped kernel's transform, contracted over F: no (C, F) transpose of the kernel, which
  # XLA CPU ran as 36 strided copies of 11 ms each at 256 channels
  dx, _ = _winograd_forward(gp, _kernel_tiles(jnp.flip(k_hwio, (0, 1))), "pnf,pcf->pnc")
  g_full = jnp.pad(g_nhwf, ((0, 0), (0, th * m - (hp - 2)), (0, tw * m - (wp - 2)), (0, 0)))
  du_pcf = jnp.einsum("pnc,pnf->pcf", v_pnc, _output_tiles_t(g_full, th, tw))
  return dx, _kernel_tiles_t(du_pcf).astype(k_hwio.dtype)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def winograd_conv3x3(x_nhwc: jax.Array, k_hwio: jax.Array, pads: Pads) -> jax.Array:
  """The 3x3 stride-1 conv of x (N, H, W, C) zero-padded by `pads` with k (3, 3, C, F), as
  Winograd F(4x4, 3x3) (module docstring): input tiles of 6x6 every 4 pixels, BT d B per tile,
  G g GT per kernel, 36 matrix products (tiles x C) @ (C x F), AT m A back to 4x4 outputs."""
  return _winograd(x_nhwc, k_hwio.astype(x_nhwc.dtype), pads)


def _input_grad_s1(g_nhwf: jax.Array, k_hwio: jax.Array, pads: Pads) -> jax.Array:
  """dx of the stride-1 conv with padding `pads`: the VALID conv of g padded by (k-1-lo,
  k-1-hi) (a negative pad crops) with the kernel flipped and its channels swapped."""
  kh, kw = k_hwio.shape[:2]
  (lh, hh), (lw, hw) = pads
  config = ((0, 0, 0), (kh - 1 - lh, kh - 1 - hh, 0), (kw - 1 - lw, kw - 1 - hw, 0), (0, 0, 0))
  gp = lax.pad(g_nhwf, jnp.zeros((), g_nhwf.dtype), config)
  return _valid(gp, jnp.flip(k_hwio, (0, 1)).transpose(0, 1, 3, 2))


def _space_to_depth(xp_nhwc: jax.Array, s: int, kh: int, kw: int) -> jax.Array:
  """(N, H', W', s*s*C) with channel (ry, rx, c) = xp[s y + ry, s x + rx, c], cropped to the rows
  and columns a stride-s (kh, kw) VALID conv reads (so the stride-1 conv with the regrouped
  kernel gives the same output map)."""
  n, hp, wp, c = xp_nhwc.shape
  ho, wo = (hp - kh) // s + 1, (wp - kw) // s + 1
  hn, wn = s * (ho - 1 + kh // s), s * (wo - 1 + kw // s)
  x = xp_nhwc[:, :hn, :wn].reshape(n, hn // s, s, wn // s, s, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, hn // s, wn // s, s * s * c)


def _regroup_kernel(k_hwio: jax.Array, s: int) -> jax.Array:
  """(kh, kw, C, F) -> (kh/s, kw/s, s*s*C, F): tap (s a + ry, s b + rx) -> (a, b, (ry, rx, c))."""
  kh, kw, c, f = k_hwio.shape
  k = k_hwio.reshape(kh // s, s, kw // s, s, c, f).transpose(0, 2, 1, 3, 4, 5)
  return k.reshape(kh // s, kw // s, s * s * c, f)


def own_weight_grad(c: int, f: int, kh: int, kw: int, stride: int) -> bool:
  """Whether `weight_grad_valid` beats XLA's own weight gradient for a conv with C -> F
  channels, kernel (kh, kw) and `stride`, as measured per layer (scripts/conv_grad_bench.py at
  the paper config and at 8 base channels, docs/benchmarks.md). XLA's generic convolution is
  fine for narrow layers (a 7x7 6->8 weight gradient: 20 ms, against 220 ms for the im2col
  copies), slow for wide ones and for every even stride-1 kernel (a 2x2 16->32: 60 ms against
  10; 256->512: 13.7 s against 0.16)."""
  if stride > 1:  # judged as the stride-1 conv after space-to-depth
    c, kh, kw = c * stride * stride, kh // stride, kw // stride
    even = False
  else:
    even = kh % 2 == 0 or kw % 2 == 0
  return min(c, f) >= MIN_CHANNELS_PER_TAP or max(c, f) >= 64 or even


def _cpu_grads(x, k, strides, pads: Pads, g):
  kh, kw, c, f = k.shape
  s = strides[0]
  own_dk = own_weight_grad(c, f, kh, kw, s)
  if not own_dk:
    (dk,) = jax.linear_transpose(lambda k: _lax_conv(x, k, strides, pads), k)(g)
  if s == 1:
    odd_same = kh % 2 == kw % 2 == 1 and pads == (((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2)
    if odd_same:  # XLA's own input gradient is a padded conv already
      (dx,) = jax.linear_transpose(lambda x: _lax_conv(x, k, strides, pads), x)(g)
    else:
      dx = _input_grad_s1(g, k, pads)
    if own_dk:
      dk = weight_grad_valid(_pad(x, pads), g, kh, kw)
    return dx, dk
  ks = _regroup_kernel(k, s)

  def s2d_conv(x):
    y = _valid(_space_to_depth(_pad(x, pads), s, kh, kw), ks)
    return y[:, : g.shape[1], : g.shape[2]]

  (dx,) = jax.linear_transpose(s2d_conv, x)(g)
  if own_dk:
    dks = weight_grad_valid(_space_to_depth(_pad(x, pads), s, kh, kw), g, kh // s, kw // s)
    dk = dks.reshape(kh // s, kw // s, s, s, c, f).transpose(0, 2, 1, 3, 4, 5).reshape(k.shape)
  return dx, dk


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, k: jax.Array, strides: tuple[int, int], pads: Pads) -> jax.Array:
  return _lax_conv(x, k, strides, pads)


def _conv_fwd(x, k, strides, pads):
  return _lax_conv(x, k, strides, pads), (x, k)


def _conv_bwd(strides, pads, res, g):
  x, k = res

  def xla(x, k, g):
    _, vjp = jax.vjp(lambda x, k: _lax_conv(x, k, strides, pads), x, k)
    return vjp(g)

  kh, kw = k.shape[:2]
  if on_cpu():
    dx, dk = _cpu_grads(x, k, strides, pads, g)
  elif taps_weight_grad_applies(kh, kw, strides) and gpu_weight_grad() == "taps":
    (dx,) = jax.linear_transpose(lambda x: _lax_conv(x, k, strides, pads), x)(g)
    dk = weight_grad_frames(_pad(x, pads), g, kh, kw)
  else:
    dx, dk = xla(x, k, g)
  return dx.astype(x.dtype), dk.astype(k.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  precision=None,
  **kwargs,
) -> jax.Array:
  """`lax.conv_general_dilated` with CPU-fast gradients for 2-D NHWC/HWIO convs with equal
  strides that divide the kernel (module docstring); every other case is passed through.
  For 4-D operands `dimension_numbers` defaults to NHWC / HWIO (not lax's NCHW); Flax passes
  its own."""
  if dimension_numbers is None and lhs.ndim == 4:
    dimension_numbers = NHWC
  plain = functools.partial(
    lax.conv_general_dilated,
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    precision=precision,
    **kwargs,
  )
  if lhs.ndim != 4 or rhs.ndim != 4 or kwargs or precision is not None:
    return plain()
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc:
    return plain()
  kh, kw = rhs.shape[:2]
  strides = tuple(window_strides)
  if (
    any(d != 1 for d in (lhs_dilation or (1, 1)))
    or any(d != 1 for d in (rhs_dilation or (1, 1)))
    or feature_group_count != 1
    or strides[0] != strides[1]
    or kh % strides[0]
    or kw % strides[0]
  ):
    return plain()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(p < 0 for pair in pads for p in pair):
    return plain()
  f = rhs.shape[3]
  lhs, rhs = pad_channels(lhs, rhs, channel_multiple())
  n, h, w, c = lhs.shape
  xp_shape = (n, h + sum(pads[0]), w + sum(pads[1]), c)
  r = block_factor()
  out_hw = (xp_shape[1] - kh + 1, xp_shape[2] - kw + 1)  # at stride 1, the only one blocked
  if on_cpu() and winograd_applies(xp_shape, rhs.shape, strides, lhs.dtype):
    y = winograd_conv3x3(lhs, rhs, pads)
  elif not on_cpu() and blocked_conv_applies(rhs.shape, strides, out_hw, r):
    y = blocked_conv(lhs, rhs, pads, r)
  else:
    y = _conv(lhs, rhs, strides, pads)
  return y if y.shape[3] == f else y[..., :f]
