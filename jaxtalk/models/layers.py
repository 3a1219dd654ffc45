"""Building blocks shared by the StableFace networks: conv stacks, the per-frame audio encoder,
pre-norm transformer blocks, and the dtype / sharding plumbing they all use.

Every module takes `dtype` (compute) and keeps `param_dtype` float32, so `model.dtype =
"bfloat16"` halves activation memory while optimiser state and updates stay in f32.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models import conv as conv_lib
from jaxtalk.models.conv import conv, winograd_applies

Dtype = Any
# A PartitionSpec (resolved against the mesh set with `jax.set_mesh`) or a full Sharding such as
# a NamedSharding; None means "no constraint". Defined by role in jaxtalk/sharding.py.
ShardingLike = Any

LEAKY_SLOPE = 0.2


def compute_dtype(name: str | Dtype) -> Dtype:
  """Maps a config string ("float32", "bfloat16") to a jnp dtype; dtypes pass through."""
  if isinstance(name, str):
    try:
      return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
    except KeyError:
      raise ValueError(f"model.dtype must be float32, bfloat16 or float16, got {name!r}") from None
  return name


def constrain(x: jax.Array, sharding: ShardingLike | None) -> jax.Array:
  """Sharding hint for XLA's partitioner; a no-op when no sharding is given."""
  if sharding is None:
    return x
  return jax.lax.with_sharding_constraint(x, sharding)


def leaky_relu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


REFLECT_PAD_FORMS = ("concat", "padsum")


def reflect_pad_form() -> str:
  """How `reflect_pad` builds the padded map, read from JAXTALK_REFLECT_PAD when the program is
  traced:

    concat  jnp.pad's (the default off a GPU): per axis, x between its reversed edge slices,
            concatenated;
    padsum  the default on a GPU: per axis, x and its two reversed edge slices each zero-padded
            to the padded length, and summed. On the H200 the pads and their gradients ran as
            XLA "concatenate" fusions, one bf16 element per thread: 0.63-0.65 ms each on the
            res blocks' 64² x 256 maps, ~0.55 GB moved (~0.85 TB/s of ~4.8), and ~27 ms of the
            0.197 s B = 16 train step in all (fourth session's trace, docs/benchmarks.md). Pads
            and adds, and their gradients (slices and adds), make elementwise ("loop")
            fusions instead, which XLA vectorises: compiled for the H200 without a device
            (`jaxtalk bench gpu-kernels`), this form and the UpConv's (`interleave_form`) leave
            no concatenate in the B = 16 step; the 22 loop fusions in their place handle 4
            elements per thread and move 19 GB, where the 39 concatenates (one element per
            thread) and 3 loop fusions they replace moved 34. Estimated ~24 ms less per step;
            not yet timed on a GPU.

  The same values: each padded cell is one of x's plus exact zeros (a -0.0 comes out +0.0)."""
  default = "padsum" if conv_lib.on_gpu() else "concat"
  return conv_lib.study_choice("JAXTALK_REFLECT_PAD", REFLECT_PAD_FORMS, default)


def reflect_pad(x_nhwc: jax.Array, pad: int) -> jax.Array:
  # Reflection padding (as in the ResNet generator of [61]) avoids the dark border artefacts that
  # zero padding leaves at the image edge of large-kernel convs.
  if pad == 0:
    return x_nhwc
  if reflect_pad_form() == "padsum" and min(x_nhwc.shape[1:3]) > pad:
    return _reflect_pad_by_sum(_reflect_pad_by_sum(x_nhwc, pad, 1), pad, 2)
  return jnp.pad(x_nhwc, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _reflect_pad_by_sum(x: jax.Array, pad: int, axis: int) -> jax.Array:
  """x reflect-padded by `pad` (< its length) along `axis`, as a sum of zero-padded pieces."""
  n = x.shape[axis]
  zero = jnp.zeros((), x.dtype)

  def widen(piece: jax.Array, before: int, after: int) -> jax.Array:
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (before, after, 0)
    return jax.lax.pad(piece, zero, config)

  # padded cell i < pad is x[pad - i]; cell pad + n + i is x[n - 2 - i]
  first = jax.lax.rev(jax.lax.slice_in_dim(x, 1, pad + 1, axis=axis), (axis,))
  last = jax.lax.rev(jax.lax.slice_in_dim(x, n - pad - 1, n - 1, axis=axis), (axis,))
  return widen(x, pad, pad) + widen(first, 0, n + pad) + widen(last, n + pad, 0)


def crop_border(x_nhwc: jax.Array, pad: int) -> jax.Array:
  """Drops `pad` pixels on each side of H and W."""
  if pad == 0:
    return x_nhwc
  return x_nhwc[:, pad:-pad, pad:-pad, :]


REFLECT_MODES = ("same", "pad", "fold")


def reflect_mode() -> str:
  """How `reflect_conv` computes a reflect-padded conv, decided when the program is traced:

    same  the SAME conv of the reflect-padded map, its border cropped: the CPU's (see
          reflect_conv);
    pad   the VALID conv of the reflect-padded map: elsewhere (a GPU's kernels take it as it
          is; the SAME form computed ~6 % more outputs on the 64x64 bottleneck, and a crop);
    fold  the SAME (zero-padded) conv of the map itself plus the conv of what reflection adds,
          on border strips only: no padded copy of the map. A study: on the H200 the pads'
          concatenates took ~10 % of the train step (docs/benchmarks.md, issue 10).

  JAXTALK_REFLECT_CONV=same|pad|fold overrides the default (scripts/device_check.py measures
  the modes against each other). Same math in every mode, to float rounding."""
  default = "same" if conv_lib.on_cpu() else "pad"
  return conv_lib.study_choice("JAXTALK_REFLECT_CONV", REFLECT_MODES, default)


def reflect_padding() -> str:
  """The padding a conv under `reflect_conv` is built with (`reflect_mode`)."""
  return "VALID" if reflect_mode() == "pad" else "SAME"


def reflect_conv(layer: nn.Module, x_nhwc: jax.Array, pad: int) -> jax.Array:
  """`layer` (an odd-kernel, stride-1 nn.Conv built with padding=reflect_padding()) over the
  input reflect-padded by `pad`: the VALID conv of the padded input.

  Why SAME on the CPU: XLA CPU's convolution kernels (YNNPACK) run an unpadded conv 2-10x
  slower than a padded one of the same size (a 7x7 64->3 conv at 128x128: 4.2 s VALID against
  0.38 s SAME for 8 frames, `jaxtalk bench model --per-module`, docs/benchmarks.md). The SAME
  conv of the padded map computes (1 + 2 pad / H)^2 more outputs; its centre is exactly the
  VALID result (same taps, same order), so the extra border is cropped.
  """
  h, w = x_nhwc.shape[1:3]
  if reflect_mode() == "fold" and min(h, w) > 2 * pad:
    y = layer(x_nhwc)  # SAME: the zero-padded conv
    kernel = layer.variables["params"]["kernel"]
    dtype = layer.dtype or jnp.result_type(x_nhwc.dtype, kernel.dtype)
    border = reflect_border(x_nhwc.astype(dtype), kernel.astype(dtype), pad)
    return add_border(y, border, pad)
  y = layer(reflect_pad(x_nhwc, pad))
  return crop_border(y, pad) if layer.padding == "SAME" else y


def reflect_border(
  x_nhwc: jax.Array, k_hwio: jax.Array, pad: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """What reflection adds to the zero-padded conv of x (kernel 2 pad + 1, stride 1): the VALID
  conv of reflect_pad(x) - zero_pad(x), nonzero only within `pad` of the output's edges. Four
  strips, each the conv of an edge slice of x, 2 pad + 1 wide, reflect-padded, with the cells
  zero padding also takes from x set to 0: top and bottom `(N, pad, W, F)`, then left and right
  `(N, H - 2 pad, pad, F)` (the rows between)."""
  p, k = pad, 2 * pad + 1
  h, w = x_nhwc.shape[1:3]
  valid = functools.partial(conv, rhs=k_hwio, window_strides=(1, 1), padding="VALID")

  def reflected(xs: jax.Array, rows: bool) -> jax.Array:
    hw = ((p, p) if rows else (0, 0), (p, p))
    xp = jnp.pad(xs, ((0, 0), *hw, (0, 0)), mode="reflect")
    keep = np.ones(xp.shape[1:3], bool)
    if rows:
      keep[p : p + k, p : p + w] = False  # x's own cells
    else:
      keep[:, p : p + k] = False
    return jnp.where(keep[None, :, :, None], xp, jnp.zeros((), xp.dtype))

  return (
    valid(reflected(x_nhwc[:, :k], True)[:, : 3 * p]),  # padded rows 0 .. 3p - 1
    valid(reflected(x_nhwc[:, h - k :], True)[:, -3 * p :]),  # the last 3p
    valid(reflected(x_nhwc[:, :, :k], False)[:, :, : 3 * p]),
    valid(reflected(x_nhwc[:, :, w - k :], False)[:, :, -3 * p :]),
  )


def add_border(
  y_nhwf: jax.Array, border: tuple[jax.Array, jax.Array, jax.Array, jax.Array], pad: int
) -> jax.Array:
  """y with `reflect_border`'s four strips added where they belong."""
  top, bottom, left, right = border
  p = pad
  h, w = y_nhwf.shape[1:3]
  y_nhwf = y_nhwf.at[:, :p].add(top).at[:, h - p :].add(bottom)
  return y_nhwf.at[:, p : h - p, :p].add(left).at[:, p : h - p, w - p :].add(right)


class ConvNormAct(nn.Module):
  """Conv (reflect or zero padded) -> instance norm -> leaky ReLU, on (N, H, W, C)."""

  features: int
  kernel: int
  stride: int = 1
  reflect: bool = False
  norm: bool = True
  act: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    if self.stride == 1:
      pad = (self.kernel - 1) // 2
      pads = ((pad, self.kernel - 1 - pad),) * 2
    else:
      # kernel 4 stride 2 with 1 pixel each side halves H and W exactly (pix2pix convention).
      pad = (self.kernel - self.stride) // 2
      pads = ((pad, pad),) * 2
    # Winograd (models/conv.py) runs the VALID conv of the padded map directly; XLA's own CPU
    # kernels want it in the SAME form (reflect_conv)
    n, h, w, c = x_nhwc.shape
    winograd = winograd_applies(
      (n, h + 2 * pad, w + 2 * pad, c),
      (self.kernel, self.kernel, c, self.features),
      (self.stride,) * 2,
      self.dtype,
    )
    mode = reflect_mode()
    fast_reflect = (
      self.reflect and self.stride == 1 and self.kernel % 2 == 1
      and (mode == "fold" or (mode == "same" and not winograd))
    )  # fmt: skip
    if self.reflect and not fast_reflect:
      x_nhwc = reflect_pad(x_nhwc, pads[0][0])
      pads = "VALID"
    layer = nn.Conv(
      self.features,
      (self.kernel, self.kernel),
      strides=(self.stride, self.stride),
      padding="SAME" if fast_reflect else pads,
      dtype=self.dtype,
      conv_general_dilated=conv,
      # a bias right before instance norm is cancelled by the mean subtraction
      use_bias=not self.norm,
    )
    x_nhwc = reflect_conv(layer, x_nhwc, pad) if fast_reflect else layer(x_nhwc)
    if self.norm:
      x_nhwc = nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype)(x_nhwc)
    if self.act:
      x_nhwc = leaky_relu(x_nhwc)
    return x_nhwc


INTERLEAVE_FORMS = ("stack", "padsum")


def interleave_form() -> str:
  """How `UpConv` interleaves its four output phases (depth to space), read from
  JAXTALK_UPCONV_INTERLEAVE when the program is traced:

    stack   (the default off a GPU) the phases stacked twice and reshaped: XLA concatenates;
    padsum  the default on a GPU: each phase spread by lax.pad's interior padding (one zero
            between its pixels, at its offset) and the four summed. On the H200 XLA's
            concatenates of the decoder's map sizes (128² x 128, 256² x 64; the interleaves
            and the 7x7 conv's reflect pad) took ~9 ms of the 0.198 s B = 16 train step, one bf16
            element per thread (fourth session's trace, docs/benchmarks.md). As for the reflect
            pads (`reflect_pad_form`, where the deviceless compile that chose both is described),
            pads and adds make loop fusions, which XLA vectorises. Not yet timed on a GPU.

  The same values: each output cell is one phase's value plus three exact zeros."""
  default = "padsum" if conv_lib.on_gpu() else "stack"
  return conv_lib.study_choice("JAXTALK_UPCONV_INTERLEAVE", INTERLEAVE_FORMS, default)


class UpConv(nn.Module):
  """Transposed conv 4x4, stride 2, padding "SAME", no bias, computed sub-pixel: equal to
  `nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", use_bias=False)` with the
  same parameter (`kernel`, (4, 4, C_in, features)) and initialiser, (N, H, W, C) -> (N, 2H, 2W, F).

  lax.conv_transpose runs a conv over the input dilated with zeros (3 of every 4 taps multiply a
  zero), which XLA CPU executes 2-3x slower than the dense equivalent. Per axis, output 2m takes
  x[m-1] w[0] + x[m] w[2] and output 2m+1 takes x[m] w[1] + x[m+1] w[3] (lax's SAME transpose
  padding is 2 each side, kernel not flipped). So one dense 2x2 conv of x zero-padded by 1 with
  the kernel regrouped to 4 F outputs (one per output phase (ry, rx)) gives every phase: phase r
  is that conv's output shifted by r. The four phases are then interleaved (depth to space;
  `interleave_form` chooses how).
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    n, h, w, c = x_nhwc.shape
    f = self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, c, f), jnp.float32)
    x_nhwc, kernel = nn.dtypes.promote_dtype(x_nhwc, kernel, dtype=self.dtype)
    # kernel index 2 * tap + phase per axis: (tap_y a, r_y r, tap_x b, r_x s, C, F)
    k = kernel.reshape(2, 2, 2, 2, c, f)
    k = jnp.einsum("arbscf->abcrsf", k).reshape(2, 2, c, 4 * f)
    y = conv(x_nhwc, k, (1, 1), ((1, 1), (1, 1))).reshape(n, h + 1, w + 1, 2, 2, f)
    # phase (r_y, r_x) gives output pixels (2m + r_y, 2l + r_x)
    phases = [[y[:, ry : ry + h, rx : rx + w, ry, rx] for rx in range(2)] for ry in range(2)]
    if interleave_form() == "padsum":
      zero = jnp.zeros((), y.dtype)
      spread = [
        jax.lax.pad(phases[ry][rx], zero, ((0, 0, 0), (ry, 1 - ry, 1), (rx, 1 - rx, 1), (0, 0, 0)))
        for ry in range(2)
        for rx in range(2)
      ]
      return functools.reduce(jnp.add, spread)
    rows = [jnp.stack(phases[ry], axis=3) for ry in range(2)]
    # (N, H, r_y, W, r_x, F) -> (N, 2H, 2W, F)
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, f)


class ResBlock(nn.Module):
  """Residual block of the bottleneck (Johnson et al. [61]): two 3x3 conv-IN, identity skip."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    y = ConvNormAct(self.features, 3, reflect=True, dtype=self.dtype)(x_nhwc)
    y = ConvNormAct(self.features, 3, reflect=True, act=False, dtype=self.dtype)(y)
    return x_nhwc + y


class AudioWindowEncoder(nn.Module):
  """One audio feature vector per video frame from that frame's log-mel window (N, W, F).

  Per-mel-frame projection, two strided 1-D convs over the window's time axis, then a flatten
  and a linear layer: flattening (rather than pooling) keeps *where* in the 200 ms window a
  sound happens, which matters for the mouth shape of the centre frame. It never looks at other
  video frames. Inputs are expected roughly standardised per mel bin (the data pipeline's job).
  """

  out_dim: int
  channels: int = 128
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, audio_nwf: jax.Array) -> jax.Array:
    n = audio_nwf.shape[0]
    x = nn.Dense(self.channels, dtype=self.dtype)(audio_nwf.astype(self.dtype))
    x = leaky_relu(x)
    for _ in range(2):
      x = nn.Conv(self.channels, (3,), strides=(2,), padding=((1, 1),), dtype=self.dtype)(x)
      x = leaky_relu(x)
    x = x.reshape(n, -1)
    return nn.Dense(self.out_dim, dtype=self.dtype)(x)


class Mlp(nn.Module):
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = x.shape[-1]
    x = nn.Dense(self.hidden, dtype=self.dtype)(x)
    x = nn.gelu(x)
    return nn.Dense(out, dtype=self.dtype)(x)


class TransformerBlock(nn.Module):
  """Pre-norm transformer block (ViT): x + MHSA(LN(x)); x + MLP(LN(x)), on (B, L, d).

  `sharding` pins the token activations (e.g. P('data', 'seq', None)) so XLA keeps the token
  axis split over devices between the blocks; attention gathers keys/values as it needs them.
  """

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  sharding: ShardingLike | None = None
  # None: flax's dot_product_attention; see jaxtalk/models/attention.py (make_attention_fn)
  attention_fn: Any = None

  @nn.compact
  def __call__(self, x_bld: jax.Array) -> jax.Array:
    d = x_bld.shape[-1]
    extra = {} if self.attention_fn is None else {"attention_fn": self.attention_fn}
    x_bld = constrain(x_bld, self.sharding)
    h = nn.LayerNorm(dtype=self.dtype)(x_bld)
    # softmax in f32 even under bf16: bf16 logits over hundreds of tokens lose the small weights
    h = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      dtype=self.dtype,
      deterministic=True,
      force_fp32_for_softmax=True,
      **extra,
    )(h, h)
    x_bld = constrain(x_bld + h, self.sharding)
    h = nn.LayerNorm(dtype=self.dtype)(x_bld)
    h = Mlp(int(d * self.mlp_ratio), dtype=self.dtype)(h)
    return constrain(x_bld + h, self.sharding)


class TransformerStack(nn.Module):
  """`depth` pre-norm blocks and a final LayerNorm; `remat` recomputes each block's activations
  in the backward pass (nn.remat) instead of storing them."""

  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  remat: bool = False
  sharding: ShardingLike | None = None
  attention_fn: Any = None

  @nn.compact
  def __call__(self, x_bld: jax.Array) -> jax.Array:
    block_cls = nn.remat(TransformerBlock) if self.remat else TransformerBlock
    for i in range(self.depth):
      x_bld = block_cls(
        num_heads=self.num_heads,
        mlp_ratio=self.mlp_ratio,
        dtype=self.dtype,
        sharding=self.sharding,
        attention_fn=self.attention_fn,
        name=f"block{i}",
      )(x_bld)
    return nn.LayerNorm(dtype=self.dtype)(x_bld)


def check_frames(t: int, max_frames: int, what: str) -> None:
  if t > max_frames:
    raise ValueError(
      f"{what}: sequence of {t} frames exceeds the learned temporal position table "
      f"({max_frames}); raise max_frames in the config or process the video in windows"
    )


def flatten_leading(x: jax.Array, n_trailing: int) -> tuple[jax.Array, Sequence[int]]:
  """(..., *trailing) -> (N, *trailing) and the leading shape to undo it."""
  lead = x.shape[: x.ndim - n_trailing]
  return x.reshape((-1, *x.shape[x.ndim - n_trailing :])), lead
