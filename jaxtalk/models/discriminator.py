"""PatchGAN discriminator on single frames (Sec. III-E: "D shares the same structure as [14]",
Neural Voice Puppetry, which uses the pix2pix 70x70 PatchGAN).

    conv4x4 s2 (C) + leaky ReLU                                  no norm on the first layer
    (n_layers - 1) x conv4x4 s2 (C * 2^i, at most 8C) + IN + leaky ReLU
    conv4x4 s1 (C * 2^n_layers, at most 8C) + IN + leaky ReLU
    conv4x4 s1 -> 1 channel of patch logits (no sigmoid: losses take logits)

Instance norm (not batch norm) keeps every frame's logits independent of the other frames in the
batch, and leaves D without running statistics: it has only `params`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.conv import conv
from jaxtalk.models.layers import ConvNormAct, Dtype, compute_dtype, leaky_relu


class PatchDiscriminator(nn.Module):
  """frames (..., H, W, 3) in [-1, 1] -> patch logits (..., H', W', 1), float32.

  Any leading axes (e.g. (B, T)) are flattened to one batch of single frames and restored, so
  a (B, T, 256, 256, 3) clip gives (B, T, 30, 30, 1) logits with the pix2pix defaults.
  """

  base_channels: int = 64
  n_layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, frames: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # no dropout or running statistics
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).astype(self.dtype)
    x = ConvNormAct(self.base_channels, 4, stride=2, norm=False, dtype=self.dtype)(x)
    mult = 1
    for i in range(1, self.n_layers):
      mult = min(2**i, 8)
      x = ConvNormAct(self.base_channels * mult, 4, stride=2, dtype=self.dtype)(x)
    mult = min(2**self.n_layers, 8)
    x = _pix2pix_conv(self.base_channels * mult, self.dtype, use_bias=False)(x)
    x = leaky_relu(nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype)(x))
    x = _pix2pix_conv(1, self.dtype, use_bias=True)(x)
    return x.reshape(*lead, *x.shape[1:]).astype(jnp.float32)


def _pix2pix_conv(features: int, dtype: Dtype, use_bias: bool) -> nn.Conv:
  # stride 1, kernel 4, padding 1: each of the last two layers shrinks the map by one pixel,
  # which is what gives pix2pix its 70x70 receptive field and 30x30 map at 256x256
  return nn.Conv(
    features, (4, 4), padding=((1, 1), (1, 1)), use_bias=use_bias, dtype=dtype,
    conv_general_dilated=conv,
  )  # fmt: skip


def discriminator_from_config(cfg: Any) -> PatchDiscriminator:
  """The discriminator of a full config (reads cfg.model.discriminator and cfg.model.dtype)."""
  d = cfg.model.discriminator
  return PatchDiscriminator(
    base_channels=d.base_channels, n_layers=d.n_layers, dtype=compute_dtype(cfg.model.dtype)
  )
