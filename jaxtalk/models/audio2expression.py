"""audio2expression in the style of Transformer-S2A (Sec. III-A "Audio Processing").

    audio windows (B, T, W, F) [-> + deltas along W: (B, T, W, 2F)]
      -> per-frame audio encoder -> (B, T, dim) [-> dropout when training]
      + learned temporal position embedding
      -> depth x pre-norm transformer layer (self-attention over the T frames + MLP)
      -> LayerNorm -> linear -> expressions (B, T, E), float32

The paper uses a pre-trained audio feature extractor [60]; here the per-frame encoder is learned
from the log-mel windows with the rest, so nothing has to be downloaded.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers import (
  AudioWindowEncoder,
  Dtype,
  ShardingLike,
  TransformerStack,
  check_frames,
  compute_dtype,
  constrain,
)


class Audio2Expression(nn.Module):
  """audio_btwf (B, T, W, F) -> expressions_bte (B, T, E). Only `params`.

  `deltas`: the encoder also sees each window's first difference along time (the rate of change
  of each mel bin: onsets and releases, where the lips move). `dropout` > 0 needs a 'dropout'
  rng when `train=True` (on the frame tokens, before the transformer).
  """

  expression_dim: int = 53
  dim: int = 256
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  max_frames: int = 512
  audio_channels: int = 128
  dtype: Dtype = jnp.float32
  remat: bool = False
  # (B, T, dim) frame tokens, e.g. P('data', 'seq', None) for very long clips
  token_sharding: ShardingLike | None = None
  deltas: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, audio_btwf: jax.Array, *, train: bool = False) -> jax.Array:
    b, t = audio_btwf.shape[:2]
    check_frames(t, self.max_frames, "audio2expression")
    if self.deltas:
      # Centred difference along the window's time axis, edge rows one-sided (same length).
      padded = jnp.concatenate([audio_btwf[:, :, :1], audio_btwf, audio_btwf[:, :, -1:]], axis=2)
      delta = 0.5 * (padded[:, :, 2:] - padded[:, :, :-2])
      audio_btwf = jnp.concatenate([audio_btwf, delta], axis=-1)
    a_nd = AudioWindowEncoder(self.dim, self.audio_channels, self.dtype, name="audio")(
      audio_btwf.reshape(b * t, *audio_btwf.shape[2:])
    )
    pos_td = self.param("temporal_pos", nn.initializers.normal(0.02), (self.max_frames, self.dim))
    x_btd = a_nd.reshape(b, t, self.dim) + pos_td[None, :t].astype(a_nd.dtype)
    if self.dropout > 0:
      x_btd = nn.Dropout(self.dropout, deterministic=not train)(x_btd)
    x_btd = TransformerStack(
      depth=self.depth,
      num_heads=self.num_heads,
      mlp_ratio=self.mlp_ratio,
      dtype=self.dtype,
      remat=self.remat,
      sharding=self.token_sharding,
      name="transformer",
    )(constrain(x_btd, self.token_sharding))
    return nn.Dense(self.expression_dim, dtype=self.dtype, name="head")(x_btd).astype(jnp.float32)


def a2e_from_config(cfg: Any, *, token_sharding: ShardingLike | None = None) -> Audio2Expression:
  """audio2expression of a full config (reads cfg.model.a2e, data.expression_dim, model.dtype)."""
  a = cfg.model.a2e
  return Audio2Expression(
    expression_dim=cfg.data.expression_dim,
    dim=a.dim,
    depth=a.depth,
    num_heads=a.num_heads,
    mlp_ratio=a.mlp_ratio,
    max_frames=a.max_frames,
    audio_channels=a.audio_channels,
    dtype=compute_dtype(cfg.model.dtype),
    remat=cfg.model.remat,
    token_sharding=token_sharding,
    deltas=bool(a.get("deltas", False)),
    dropout=float(a.get("dropout", 0.0)),
  )
