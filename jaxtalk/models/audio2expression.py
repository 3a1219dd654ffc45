"""audio2expression in the style of Transformer-S2A (Sec. III-A "Audio Processing").

    audio windows (B, T, W, F) [-> + deltas along W: (B, T, W, 2F)]
      -> per-frame audio encoder -> (B, T, dim) [-> dropout when training]
      + learned temporal position embedding
      -> depth x pre-norm transformer layer (self-attention over the T frames + MLP)
      -> LayerNorm -> linear -> expressions (B, T, E), float32

The paper uses a pre-trained audio feature extractor [60]; here the per-frame encoder is learned
from the log-mel windows with the rest, so nothing has to be downloaded.

Audio2ExpressionEnsemble (model.a2e.members > 1): that many Audio2Expression models side by side,
each with its own parameters (a leading members axis on every leaf), trained each on its own loss
and averaged at inference (training keeps each member at its own best validation step). On a few
tens of seconds of speech one a2e is noisy from seed to seed (+-0.08 of held-out aperture
correlation); the mean of K narrows that spread but, over seven seeds, does not raise the
expected figure by more than ~0.01 (docs/benchmarks.md, issue 15), so the configs keep one member.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.errors import ConfigError
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


class Audio2ExpressionEnsemble(Audio2Expression):
  """`members` Audio2Expression models of these settings, parameters stacked on a leading axis
  (params['member'][...] of shape (members, ...)); 'params' and 'dropout' rngs split per member.

  audio_btwf (B, T, W, F), the same for every member, or (members, B, T, W, F), one per member
  (training augments each member's audio differently) -> the members' mean (B, T, E), or with
  `per_member=True` each member's own prediction (members, B, T, E), what training needs to
  give each member its own loss.
  """

  members: int = 3

  @nn.compact
  def __call__(
    self, audio_btwf: jax.Array, *, train: bool = False, per_member: bool = False
  ) -> jax.Array:
    fields = {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(Audio2Expression)
      if f.init and f.name not in ("parent", "name")
    }
    member = Audio2Expression(**fields, name="member")

    def run(module: Audio2Expression, audio: jax.Array) -> jax.Array:
      return module(audio, train=train)  # train by closure: lifted vmap drops keyword arguments

    run_all = nn.vmap(
      run,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=0 if audio_btwf.ndim == 5 else None,
      out_axes=0,
      axis_size=self.members,
    )
    out_kbte = run_all(member, audio_btwf)
    return out_kbte if per_member else jnp.mean(out_kbte, axis=0)


def a2e_from_config(cfg: Any, *, token_sharding: ShardingLike | None = None) -> Audio2Expression:
  """audio2expression of a full config (reads cfg.model.a2e, data.expression_dim, model.dtype):
  an Audio2ExpressionEnsemble when model.a2e.members > 1."""
  a = cfg.model.a2e
  members = int(a.get("members", 1))
  if members < 1:
    raise ConfigError(f"model.a2e.members must be >= 1, got {members}")
  cls = Audio2Expression if members == 1 else Audio2ExpressionEnsemble
  extra = {} if members == 1 else {"members": members}
  return cls(
    **extra,
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
