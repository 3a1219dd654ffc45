"""SyncNet (Chung & Zisserman, "Out of time", ACCV-W 2016) as the `S` model of syncnet_python
(github.com/joonson/syncnet_python, SyncNetModel.py), whose `syncnet_v2.model` weights give the
Sync-C / Sync-D numbers of the talking-face literature. Inference only (batch norm uses the
running statistics). Reading weight files is jaxtalk/metrics/syncnet_weights.py's job.

Inputs, in JAX's channels-last layout:
  audio: (B, 13, 20, 1)        MFCC (13 coefficients) x 20 frames of 10 ms = 0.2 s
  lips:  (B, 5, 224, 224, 3)   5 consecutive video frames (25 fps) of the face crop, BGR 0..255
Outputs: (B, 1024) embeddings; in sync, the audio and lip embeddings are close in L2.

Layer shapes, in syncnet_python's order (conv -> batch norm -> ReLU [-> max pool]); the torch
`nn.Sequential` index of each conv is kept as its name (`conv0`, `bn1`, ...) so the state dict
maps one to one:
  netcnnaud: conv 3x3 1->64, pool 1x1 | conv 3x3 ->192, pool 3x3 /(1,2) | conv 3x3 ->384 |
             conv 3x3 ->256 | conv 3x3 ->256, pool 3x3 /2 | conv 5x4 valid ->512  => 1x1x512
  netcnnlip: conv3d 5x7x7 /(1,2,2) 3->96, pool 1x3x3 /(1,2,2) | conv3d 1x5x5 /(1,2,2) pad (0,1,1)
             ->256, pool 1x3x3 /(1,2,2) pad (0,1,1) | 3 x conv3d 1x3x3 pad (0,1,1) ->256, pool
             1x3x3 /(1,2,2) after the third | conv3d 1x6x6 valid ->512  => 1x1x1x512
  netfcaud, netfclip: linear 512->512, batch norm, ReLU, linear 512->1024
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

AUDIO_SHAPE = (13, 20, 1)
LIP_FRAMES = 5
LIP_SIZE = 224
LIP_SHAPE = (LIP_FRAMES, LIP_SIZE, LIP_SIZE, 3)
EMBED_DIM = 1024
BN_EPS = 1e-5  # torch's BatchNorm default

Pad = tuple[tuple[int, int], ...]
# (torch index of the conv, out channels, kernel, stride, padding, max pool (window, stride,
# padding) after the ReLU or None). The batch norm is at index + 1.
AUDIO_CONVS: tuple = (
  (0, 64, (3, 3), (1, 1), ((1, 1), (1, 1)), ((1, 1), (1, 1), ((0, 0), (0, 0)))),
  (4, 192, (3, 3), (1, 1), ((1, 1), (1, 1)), ((3, 3), (1, 2), ((0, 0), (0, 0)))),
  (8, 384, (3, 3), (1, 1), ((1, 1), (1, 1)), None),
  (11, 256, (3, 3), (1, 1), ((1, 1), (1, 1)), None),
  (14, 256, (3, 3), (1, 1), ((1, 1), (1, 1)), ((3, 3), (2, 2), ((0, 0), (0, 0)))),
  (18, 512, (5, 4), (1, 1), ((0, 0), (0, 0)), None),
)
_P0 = ((0, 0), (0, 0), (0, 0))
_P1 = ((0, 0), (1, 1), (1, 1))
LIP_CONVS: tuple = (
  (0, 96, (5, 7, 7), (1, 2, 2), _P0, ((1, 3, 3), (1, 2, 2), _P0)),
  (4, 256, (1, 5, 5), (1, 2, 2), _P1, ((1, 3, 3), (1, 2, 2), _P1)),
  (8, 256, (1, 3, 3), (1, 1, 1), _P1, None),
  (11, 256, (1, 3, 3), (1, 1, 1), _P1, None),
  (14, 256, (1, 3, 3), (1, 1, 1), _P1, ((1, 3, 3), (1, 2, 2), _P0)),
  (18, 512, (1, 6, 6), (1, 1, 1), _P0, None),
)


class ConvStack(nn.Module):
  """syncnet_python's netcnnaud / netcnnlip: conv -> BN -> ReLU [-> max pool], flattened."""

  layers: tuple

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for index, out, kernel, stride, padding, pool in self.layers:
      x = nn.Conv(out, kernel, strides=stride, padding=padding, name=f"conv{index}")(x)
      x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"bn{index + 1}")(x)
      x = nn.relu(x)
      if pool is not None:
        window, pool_stride, pool_pad = pool
        # Inputs are post-ReLU, so max pooling's implicit -inf padding equals torch's.
        x = nn.max_pool(x, window, strides=pool_stride, padding=pool_pad)
    return x.reshape(x.shape[0], -1)


class FCHead(nn.Module):
  """syncnet_python's netfcaud / netfclip: linear -> BN -> ReLU -> linear."""

  features: int = EMBED_DIM

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(512, name="fc0")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn1")(x)
    x = nn.relu(x)
    return nn.Dense(self.features, name="fc3")(x)


class SyncNet(nn.Module):
  """Audio and lip streams of syncnet_python's `S`; `__call__` gives both embeddings."""

  embed_dim: int = EMBED_DIM

  def setup(self) -> None:
    self.netcnnaud = ConvStack(AUDIO_CONVS)
    self.netfcaud = FCHead(self.embed_dim)
    self.netcnnlip = ConvStack(LIP_CONVS)
    self.netfclip = FCHead(self.embed_dim)

  def embed_audio(self, mfcc_b13201: jax.Array) -> jax.Array:
    """MFCC windows (B, 13, 20, 1) -> (B, embed_dim)."""
    return self.netfcaud(self.netcnnaud(mfcc_b13201.astype(jnp.float32)))

  def embed_lips(self, frames_bthwc: jax.Array) -> jax.Array:
    """5-frame face-crop clips (B, 5, 224, 224, 3), BGR 0..255 -> (B, embed_dim)."""
    return self.netfclip(self.netcnnlip(frames_bthwc.astype(jnp.float32)))

  def __call__(self, mfcc_b13201: jax.Array, frames_bthwc: jax.Array) -> tuple[jax.Array, ...]:
    return self.embed_audio(mfcc_b13201), self.embed_lips(frames_bthwc)
