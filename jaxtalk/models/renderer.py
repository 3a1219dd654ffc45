"""The StableFace neural renderer G(s_1:T, x_1:T, audio_1:T) (Sec. III-A, III-C.3, Fig. 3).

    [eroded background | smoothed shape render]  (B, T, H, W, 6)
      -> encoder           conv7x7 s1 + n_down x conv4x4 s2, each IN + leaky ReLU
      -> audio fusion      per-frame FiLM from the frame's audio    (model.renderer.audio_fusion)
      -> dependency        transformer over all T*p*p tokens       (model.renderer.dependency)
      -> bottleneck        n_res_blocks residual blocks
      -> decoder           n_down x convT4x4 s2 + IN + leaky ReLU, conv7x7 -> 3, tanh
    frames (B, T, H, W, 3) in [-1, 1], float32

With both switches off this is the paper's baseline: every op is per frame (instance norm
normalises each frame on its own; there is no batch norm), so frames are independent. Only the
dependency module mixes frames. The renderer has no dropout and no running statistics, so
`train` changes nothing today; it is accepted so that all generator-side modules share a call
convention.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.attention import make_attention_fn
from jaxtalk.models.conv import conv
from jaxtalk.models.layers import (
  AudioWindowEncoder,
  ConvNormAct,
  Dtype,
  ResBlock,
  ShardingLike,
  TransformerStack,
  UpConv,
  compute_dtype,
  constrain,
  leaky_relu,
  reflect_conv,
  reflect_padding,
)


class Encoder(nn.Module):
  """conv 7x7 s1 (base) then n_down conv 4x4 s2 doubling the width; IN + leaky ReLU each.
  At 256x256 with base 64 and n_down 2: 64x64x256."""

  base_channels: int = 64
  n_down: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    x_nhwc = ConvNormAct(self.base_channels, 7, reflect=True, dtype=self.dtype)(x_nhwc)
    for i in range(self.n_down):
      x_nhwc = ConvNormAct(self.base_channels * 2 ** (i + 1), 4, stride=2, dtype=self.dtype)(x_nhwc)
    return x_nhwc


class AudioFusion(nn.Module):
  """Audio Fusion Module: FiLM modulation of the image features by the frame's audio vector.

  f' = f * (1 + gamma(a_t)) + beta(a_t), with a_t the `audio_dim` (64) feature of frame t from a
  learned encoder over its log-mel window, and gamma, beta per channel.

  Why FiLM (AdaIN-style conditional affine) rather than tiling a_t over the map and concatenating:
  * the audio carries *what* the mouth does (phoneme, opening), not *where*: the shape render
    already fixes the geometry, so a per-channel, spatially uniform modulation is the right
    inductive bias, and the encoder's last layer is instance-normalised, so this is exactly
    conditional instance normalisation (AdaIN);
  * it costs 2 * C * audio_dim parameters and no conv over C + audio_dim channels at 64x64
    (concat + 3x3 conv would add 9 * 320 * 256 weights and ~6 GFLOP per 256x256 frame);
  * it is strictly per frame, so with the dependency module off frames stay independent.
  The `1 + gamma` form makes "no audio effect" the easy point to learn around.
  """

  audio_dim: int = 64
  audio_channels: int = 128
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, f_nhwc: jax.Array, audio_nwf: jax.Array) -> jax.Array:
    c = f_nhwc.shape[-1]
    a_nd = AudioWindowEncoder(self.audio_dim, self.audio_channels, self.dtype, name="audio")(
      audio_nwf
    )
    gb_n2c = nn.Dense(2 * c, dtype=self.dtype, name="film")(nn.gelu(a_nd))
    gamma_nc, beta_nc = jnp.split(gb_n2c, 2, axis=-1)
    return f_nhwc * (1 + gamma_nc[:, None, None, :]) + beta_nc[:, None, None, :]


class DependencyModule(nn.Module):
  """Dependency Modeling Module (Sec. III-C.3): spatio-temporal self-attention over all frames.

  Each (h, w, c) feature map is split into p x p patches of (h/p, w/p, c); each patch is
  flattened and projected to d; temporal (per frame) and learned spatial (per patch position)
  embeddings are added; N pre-norm transformer blocks attend over all T*p*p tokens; tokens are
  projected back and reassembled. The result is *added* to the input features: the d = 512 token
  is a 128x compression of a 16x16x256 patch at paper scale, so without the skip all spatial
  detail would have to squeeze through it; with it the module learns a temporal correction.

  Long sequences (any T): `temporal_pos="sinusoidal"` (default) gives frame t the fixed
  embedding of Vaswani et al., the same whatever T is, so a checkpoint trained on 12-frame
  windows runs on a whole clip; "learned" keeps a (max_frames, d) table, sliced when
  T <= max_frames and linearly resampled to T rows beyond. Attention is `attention`
  (jaxtalk/models/attention.py): blockwise/cuDNN on one device, ring attention over the token
  sharding's `seq` axis when `token_sharding` splits the tokens.
  """

  patches: int = 4
  token_dim: int = 512
  depth: int = 4
  num_heads: int = 8
  mlp_ratio: float = 4.0
  max_frames: int = 64
  dtype: Dtype = jnp.float32
  remat: bool = False
  token_sharding: ShardingLike | None = None
  temporal_pos: str = "sinusoidal"  # "sinusoidal" | "learned"
  attention: str = "auto"  # see attention.make_attention_fn
  attention_block: int = 512  # keys per chunk of the blockwise / ring kernels

  @nn.compact
  def __call__(self, f_bthwc: jax.Array) -> jax.Array:
    b, t, h, w, c = f_bthwc.shape
    p = self.patches
    if h % p or w % p:
      raise ValueError(f"feature map {h}x{w} is not divisible into {p}x{p} patches")
    hp, wp = h // p, w // p
    # token order is (t, i, j) so a contiguous split of the token axis over `seq` devices is a
    # split over frames, matching how the convolutional parts shard frames
    x = f_bthwc.reshape(b, t, p, hp, p, wp, c)
    x = jnp.einsum("btiyjxc->btijyxc", x).reshape(b, t * p * p, hp * wp * c)
    z_bld = nn.Dense(self.token_dim, dtype=self.dtype, name="embed")(x)
    init = nn.initializers.normal(0.02)
    table_td = None
    if self.temporal_pos == "learned":
      table_td = self.param("temporal_pos", init, (self.max_frames, self.token_dim))
    temporal_td = temporal_embedding(self.temporal_pos, t, self.token_dim, table_td)
    spatial_sd = self.param("spatial_pos", init, (p * p, self.token_dim))
    pos_ld = (temporal_td[:, None, :] + spatial_sd[None, :, :]).reshape(t * p * p, -1)
    z_bld = constrain(z_bld + pos_ld.astype(z_bld.dtype), self.token_sharding)
    z_bld = TransformerStack(
      depth=self.depth,
      num_heads=self.num_heads,
      mlp_ratio=self.mlp_ratio,
      dtype=self.dtype,
      remat=self.remat,
      sharding=self.token_sharding,
      attention_fn=make_attention_fn(self.attention, self.attention_block, self.token_sharding),
      name="transformer",
    )(z_bld)
    y = nn.Dense(hp * wp * c, dtype=self.dtype, name="unembed")(z_bld)
    y = jnp.einsum("btijyxc->btiyjxc", y.reshape(b, t, p, p, hp, wp, c)).reshape(b, t, h, w, c)
    return f_bthwc + y


def temporal_embedding(kind: str, t: int, d: int, table_td: jax.Array | None = None) -> jax.Array:
  """(T, d) temporal embeddings of frames 0..T-1: "sinusoidal", or "learned" from table_td
  (sliced when T fits the table, linearly resampled to T rows beyond it, ViT-style; frame
  spacing is then T-dependent, which is why sinusoidal is the default)."""
  if kind == "sinusoidal":
    return sinusoidal_embedding(t, d)
  if kind != "learned":
    raise ValueError(f"temporal_pos must be 'sinusoidal' or 'learned', got {kind!r}")
  if t <= table_td.shape[0]:
    return table_td[:t]
  return jax.image.resize(table_td, (t, d), "linear")


def sinusoidal_embedding(t: int, d: int) -> jax.Array:
  """(t, d) fixed position embedding: [sin(t w_i), cos(t w_i)], w_i = 10000^(-2i/d).

  Row k depends on k and d only, never on t, so any sequence length works and a prefix of a
  long sequence sees the same embeddings as a short one."""
  half = d // 2
  w_i = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  a_ti = jnp.arange(t, dtype=jnp.float32)[:, None] * w_i[None, :]
  emb = jnp.concatenate([jnp.sin(a_ti), jnp.cos(a_ti)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, d - 2 * half)))


class Decoder(nn.Module):
  """n_down transposed conv 4x4 s2 (halving the width) + IN + leaky ReLU, conv 7x7 -> 3, tanh."""

  base_channels: int = 64
  n_down: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_nhwc: jax.Array) -> jax.Array:
    for i in reversed(range(self.n_down)):
      # named as the nn.ConvTranspose it replaces, so parameter trees and checkpoints match
      k = self.n_down - 1 - i
      x_nhwc = UpConv(self.base_channels * 2**i, self.dtype, name=f"ConvTranspose_{k}")(x_nhwc)
      x_nhwc = nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype)(x_nhwc)
      x_nhwc = leaky_relu(x_nhwc)
    out = nn.Conv(3, (7, 7), padding=reflect_padding(), dtype=self.dtype, conv_general_dilated=conv)
    x_nhwc = reflect_conv(out, x_nhwc, 3)
    return jnp.tanh(x_nhwc)


class Renderer(nn.Module):
  """G: (background_bthwc, shape_bthwc, audio_btwf) -> frames_bthwc, all images in [-1, 1].

  background_bthwc: eroded background frames (B, T, H, W, 3); shape_bthwc: smoothed shape renders
  (B, T, H, W, 3); audio_btwf: per-frame log-mel windows (B, T, W, F), ignored (may be None) with
  audio_fusion off. H and W must be divisible by 2**n_down * patches.
  """

  base_channels: int = 64
  n_down: int = 2
  n_res_blocks: int = 8
  audio_fusion: bool = True
  audio_dim: int = 64
  audio_channels: int = 128
  dependency: bool = True
  patches: int = 4
  token_dim: int = 512
  depth: int = 4
  num_heads: int = 8
  mlp_ratio: float = 4.0
  max_frames: int = 64
  dtype: Dtype = jnp.float32
  remat: bool = False
  # (B, T*p*p, d) tokens, e.g. P('data', 'seq', None); see jaxtalk/sharding.py
  token_sharding: ShardingLike | None = None
  # (B, T, H, W, C) activations of the convolutional parts, e.g. P('data', 'seq')
  frame_sharding: ShardingLike | None = None
  temporal_pos: str = "sinusoidal"
  attention: str = "auto"
  attention_block: int = 512

  @nn.compact
  def __call__(
    self,
    background_bthwc: jax.Array,
    shape_bthwc: jax.Array,
    audio_btwf: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> jax.Array:
    del train  # no dropout or running statistics (see the module docstring)
    b, t, h, w, _ = background_bthwc.shape
    if shape_bthwc.shape[:4] != (b, t, h, w):
      raise ValueError(f"shape renders {shape_bthwc.shape} do not match {background_bthwc.shape}")

    def frames(x_nhwc: jax.Array) -> jax.Array:
      # pins (B*T, ...) activations by their (B, T) layout so the frames a device holds in the
      # conv parts are the frames whose tokens it holds in the transformer
      if self.frame_sharding is None:
        return x_nhwc
      x = constrain(x_nhwc.reshape(b, t, *x_nhwc.shape[1:]), self.frame_sharding)
      return x.reshape(x_nhwc.shape)

    x_bthwc = jnp.concatenate([background_bthwc, shape_bthwc], axis=-1).astype(self.dtype)
    x_nhwc = frames(x_bthwc.reshape(b * t, h, w, -1))
    f_nhwc = frames(Encoder(self.base_channels, self.n_down, self.dtype, name="encoder")(x_nhwc))
    if self.audio_fusion:
      if audio_btwf is None:
        raise ValueError("audio_fusion is on but no audio_btwf was given")
      if audio_btwf.shape[:2] != (b, t):
        raise ValueError(f"audio {audio_btwf.shape} does not match frames {(b, t)}")
      audio_nwf = audio_btwf.reshape(b * t, *audio_btwf.shape[2:])
      f_nhwc = frames(
        AudioFusion(self.audio_dim, self.audio_channels, self.dtype, name="audio_fusion")(
          f_nhwc, audio_nwf
        )
      )
    if self.dependency:
      f_bthwc = f_nhwc.reshape(b, t, *f_nhwc.shape[1:])
      f_bthwc = DependencyModule(
        patches=self.patches,
        token_dim=self.token_dim,
        depth=self.depth,
        num_heads=self.num_heads,
        mlp_ratio=self.mlp_ratio,
        max_frames=self.max_frames,
        dtype=self.dtype,
        remat=self.remat,
        token_sharding=self.token_sharding,
        temporal_pos=self.temporal_pos,
        attention=self.attention,
        attention_block=self.attention_block,
        name="dependency",
      )(f_bthwc)
      f_nhwc = frames(f_bthwc.reshape(f_nhwc.shape))
    width = self.base_channels * 2**self.n_down
    for i in range(self.n_res_blocks):
      f_nhwc = ResBlock(width, self.dtype, name=f"res{i}")(f_nhwc)
    y_nhwc = Decoder(self.base_channels, self.n_down, self.dtype, name="decoder")(frames(f_nhwc))
    return y_nhwc.reshape(b, t, h, w, 3).astype(jnp.float32)


def renderer_from_config(
  cfg: Any,
  *,
  token_sharding: ShardingLike | None = None,
  frame_sharding: ShardingLike | None = None,
) -> Renderer:
  """The renderer of a full config (reads cfg.model.renderer, cfg.model.dtype, cfg.model.remat)."""
  r = cfg.model.renderer
  return Renderer(
    base_channels=r.base_channels,
    n_down=r.n_down,
    n_res_blocks=r.n_res_blocks,
    audio_fusion=r.audio_fusion,
    audio_dim=r.audio_dim,
    audio_channels=r.audio_channels,
    dependency=r.dependency,
    patches=r.patches,
    token_dim=r.token_dim,
    depth=r.depth,
    num_heads=r.num_heads,
    mlp_ratio=r.mlp_ratio,
    max_frames=r.max_frames,
    dtype=compute_dtype(cfg.model.dtype),
    remat=cfg.model.remat,
    token_sharding=token_sharding,
    frame_sharding=frame_sharding,
    # .get: configs written before these keys existed keep the behaviour they were saved with
    temporal_pos=r.get("temporal_pos", "learned"),
    attention=r.get("attention", "auto"),
    attention_block=r.get("attention_block", 512),
  )
