"""A 2-D convolution whose gradients XLA's CPU backend computes fast; the same math as
`lax.conv_general_dilated`, passed to Flax as `nn.Conv(..., conv_general_dilated=conv)`.

Why: XLA CPU runs a convolution fast only in its "forward" form (small window, padded input:
its YNNPACK kernels). A convolution's *weight* gradient is a convolution whose window is the
whole output map (a 3x3 conv's at 32x32 is a 32x32 window), and a strided convolution's *input*
gradient convolves a zero-dilated map; XLA runs both in its generic convolution: the weight
gradients of the paper config's layers at 128² take 4-200x their forward, the strided input
gradients 2x (`python scripts/conv_grad_bench.py`, docs/benchmarks.md, issue 10). PyTorch's
oneDNN has dedicated backward kernels; here the backward is re-expressed in the forms XLA runs
fast, on the CPU only (other backends keep XLA's own gradients through `lax.platform_dependent`):

- weight gradient of a stride-1 conv over the padded input xp (N, Hp, Wp, C): with every image
  flattened to rows (row = y * Wp + x) and the output cotangent g zero-padded to (N, Hp, Wp, F),
  tap (a, b) of the kernel is `xp_rows[a Wp + b : a Wp + b + L]^T @ g_rows`: each tap is a
  *contiguous* row shift (the rows that wrap past an image's right edge or into the next image
  meet zeros of g), so each tap is one matrix product on a row range of x (no im2col; XLA
  still copies each range, a contiguous copy, before its product); where
  one side has few channels (the first and last convs), the shifted copies of that side are
  stacked instead (im2col, channel-major, in blocks of at most `COLS_BYTES`) and one product
  per block reads the wide side once;
- stride s with s dividing the kernel: space-to-depth turns the conv into a stride-1 conv with an
  (k/s x k/s) kernel over s*s*C channels, for both gradients;
- input gradient of a stride-1 conv with unequal or even padding: the conv of the padded
  cotangent with the flipped kernel, computed in the padded form (`_valid`); XLA's own is used
  for the odd-kernel, equal-padding ("SAME") case where it is already fast.

The forward is always XLA's. Anything else (dilation, groups, other layouts or ranks, a stride
that does not divide the kernel) goes to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
# largest im2col block the weight gradient materialises at once (bytes)
COLS_BYTES = 256 * 2**20
# below this many channels on either side the weight gradient uses im2col (weight_grad_valid)
MIN_CHANNELS_PER_TAP = 32

Pads = tuple[tuple[int, int], tuple[int, int]]


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


def _shifted_rows(a_cl: jax.Array, starts: Sequence[int], length: int) -> jax.Array:
  """(len(starts) * C, length): a_cl[:, s : s + length] for each start s, stacked. A gather, which
  XLA CPU copies 2-3x faster than a concatenation of the same static slices."""
  idx = jnp.asarray(starts, jnp.int32)
  out = jax.vmap(lambda s: lax.dynamic_slice_in_dim(a_cl, s, length, axis=1))(idx)
  return out.reshape(-1, length)


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
    # one matrix product per tap on a contiguous row range of x (no im2col)
    taps = [jnp.einsum("lc,lf->cf", x_lc[o : o + used], g_lf) for o in offsets]
    return jnp.stack(taps).reshape(kh, kw, c, f)
  # few channels on one side: per-tap products would be thin and re-read the wide side once
  # per tap, so the narrow side's shifted copies are stacked channel-major (im2col) and one
  # product per block of taps reads the wide side once
  item = jnp.dtype(xp_nhwc.dtype).itemsize
  blocks = []
  if c <= f:
    x_cl = x_lc.T
    per = max(1, COLS_BYTES // (used * c * item))
    for i in range(0, len(offsets), per):
      cols = _shifted_rows(x_cl, offsets[i : i + per], used)  # (taps * C, used)
      blocks.append(jnp.einsum("kl,lf->kf", cols, g_lf).reshape(-1, c, f))
  else:
    # tap t pairs x row l + o_t with g row l, i.e. x row m with g row m - o_t: shifted copies of
    # g (zero-padded on both sides so every shift stays in range), each meeting all of x
    g_fl = jnp.pad(g_lf.T, ((0, 0), (extra, extra)))
    per = max(1, COLS_BYTES // (rows * f * item))
    for i in range(0, len(offsets), per):
      cols = _shifted_rows(g_fl, [extra - o for o in offsets[i : i + per]], rows)
      blocks.append(jnp.einsum("kl,lc->kc", cols, x_lc).reshape(-1, f, c).transpose(0, 2, 1))
  return jnp.concatenate(blocks, 0).reshape(kh, kw, c, f)


def _pad(x_nhwc: jax.Array, pads: Pads) -> jax.Array:
  return jnp.pad(x_nhwc, ((0, 0), pads[0], pads[1], (0, 0)))


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

  dx, dk = lax.platform_dependent(
    x, k, g, cpu=lambda x, k, g: _cpu_grads(x, k, strides, pads, g), default=xla
  )
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
  return _conv(lhs, rhs, strides, pads)
