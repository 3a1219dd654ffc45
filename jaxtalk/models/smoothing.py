"""Smoothing of the shape renders over time (Sec. III-C.1, Eq. 1, Table I, Fig. 9).

    s~_t = sum_{k=-(K-1)/2}^{(K-1)/2} W_{t,k} s_{t+k}

applied in image space to the shape renders (B, T, H, W, C), with the sequence ends padded by
repeating the first/last render (edge padding, so a still face stays still at the ends). The
weights W (B, T, K) come from one of four kinds (model.smoothing.kind):

  adaptive  Table I: Conv1D-BN-ReLU (32, 32, 16, 16), kernel 3, then Conv1D-Sigmoid to K over
            the expression sequence (B, T, E), normalised to sum 1 over K. ~11k parameters.
            It starts as the Gaussian of `gaussian_sigma` for every frame, whatever the seed:
            the last conv's kernel starts at zero and its bias at logit(gaussian), so
            sigmoid(bias) / sum = the Gaussian (see `gaussian_head_bias`). At the paper's
            smooth_lr of 1e-6 the start is most of what runs, so it must be a sensible kernel
            (a random start was an asymmetric near-box filter decided by the seed). The
            parameter tree is the same as before, so older checkpoints restore unchanged.
  gaussian  fixed weights exp(-k^2 / 2 sigma^2), normalised (Fig. 9 "fixed").
  global    one learnable K-vector shared by all frames and clips, softmax-normalised, starting
            at the Gaussian (Fig. 9 "global").
  none      identity (Table V "w/o adaptive smoothing").

BatchNorm (adaptive only) follows the usual Flax protocol: `train=True` normalises with the
batch's statistics over (B, T) and must be applied with `mutable=["batch_stats"]`; `train=False`
uses the running averages. The weight network always computes in float32: it is tiny, and
bf16 weights (3 significant digits) would visibly perturb a sum that must be 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("adaptive", "gaussian", "global", "none")
TABLE_I_CHANNELS = (32, 32, 16, 16)


def apply_smoothing(weights_btk: jax.Array, shapes_bthwc: jax.Array) -> jax.Array:
  """Eq. 1 with edge padding: out[:, t] = sum_k weights[:, t, k] * shapes[:, clip(t + k - r)]."""
  k = weights_btk.shape[-1]
  if k % 2 != 1:
    raise ValueError(f"smoothing width K must be odd, got {k}")
  b, t = shapes_bthwc.shape[:2]
  if weights_btk.shape[:2] != (b, t):
    raise ValueError(f"weights {weights_btk.shape} do not match shapes {shapes_bthwc.shape}")
  r = (k - 1) // 2
  pad = [(0, 0), (r, r)] + [(0, 0)] * (shapes_bthwc.ndim - 2)
  padded = jnp.pad(shapes_bthwc, pad, mode="edge")
  w = weights_btk.astype(shapes_bthwc.dtype).reshape(b, t, k, *([1] * (shapes_bthwc.ndim - 2)))
  # K is small and static: K shifted multiply-adds keep memory at one extra sequence, where a
  # gathered (B, T, K, H, W, C) stack would cost K of them
  out = w[:, :, 0] * padded[:, 0:t]
  for j in range(1, k):
    out = out + w[:, :, j] * padded[:, j : j + t]
  return out


def gaussian_weights(width: int, sigma: float) -> np.ndarray:
  """(K,) weights exp(-k^2 / (2 sigma^2)) for k = -(K-1)/2 .. (K-1)/2, summing to 1."""
  r = (width - 1) // 2
  k = np.arange(-r, r + 1, dtype=np.float64)
  w = np.exp(-(k**2) / (2.0 * sigma**2))
  return (w / w.sum()).astype(np.float32)


def gaussian_head_bias(width: int, sigma: float) -> np.ndarray:
  """(K,) bias b with sigmoid(b) = gaussian_weights(width, sigma): with a zero kernel the head
  outputs sigmoid(b), which normalises to exactly that Gaussian."""
  g = gaussian_weights(width, sigma).astype(np.float64)
  return np.log(g / (1.0 - g)).astype(np.float32)


class AdaptiveWeightNet(nn.Module):
  """Table I: expressions (B, T, E) -> per-frame smoothing weights (B, T, K), sum 1 over K.
  Starts as the Gaussian of `sigma` (zero last kernel, logit-Gaussian bias), seed-independent."""

  width: int = 5
  sigma: float = 1.0
  channels: Sequence[int] = TABLE_I_CHANNELS
  kernel: int = 3
  bn_momentum: float = 0.9
  # pmap path: the name of the mapped axis, so batch statistics are averaged over devices
  # (under jit the batch is global already and this stays None)
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, expressions_bte: jax.Array, *, train: bool) -> jax.Array:
    x = expressions_bte.astype(jnp.float32)
    for ch in self.channels:
      # bias kept (PyTorch Conv1d default) so the count matches the paper's "11k parameters"
      x = nn.Conv(ch, (self.kernel,), padding="SAME")(x)
      x = nn.BatchNorm(
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=1e-5,
        axis_name=self.bn_axis_name,
      )(x)
      x = nn.relu(x)
    bias = gaussian_head_bias(self.width, self.sigma)
    head = nn.Conv(
      self.width,
      (self.kernel,),
      padding="SAME",
      kernel_init=nn.initializers.zeros,
      bias_init=lambda _key, shape, dtype=jnp.float32: jnp.asarray(bias, dtype).reshape(shape),
    )
    w = nn.sigmoid(head(x))
    # sigmoid > 0, so the sum is positive; normalising by it (not a softmax) is what the paper's
    # sigmoid head implies
    return w / jnp.sum(w, axis=-1, keepdims=True)


class ShapeSmoother(nn.Module):
  """(expressions_bte, shapes_bthwc) -> (smoothed_bthwc, weights_btk); see the module docstring.

  Parameters: `params` (adaptive: the Table I net; global: `logits` (K,); gaussian/none: none)
  and, for adaptive, `batch_stats`.
  """

  kind: str = "adaptive"
  width: int = 5
  sigma: float = 1.0
  channels: Sequence[int] = TABLE_I_CHANNELS
  bn_axis_name: str | None = None

  def setup(self) -> None:
    if self.kind not in KINDS:
      raise ValueError(f"model.smoothing.kind must be one of {KINDS}, got {self.kind!r}")
    if self.width % 2 != 1 or self.width < 1:
      raise ValueError(f"model.smoothing.width must be a positive odd number, got {self.width}")
    if self.kind == "adaptive":
      self.net = AdaptiveWeightNet(
        width=self.width,
        sigma=self.sigma,
        channels=tuple(self.channels),
        bn_axis_name=self.bn_axis_name,
      )
    elif self.kind == "global":
      start = np.log(gaussian_weights(self.width, self.sigma))
      self.logits = self.param("logits", lambda _key, shape: jnp.asarray(start), (self.width,))

  def weights(self, expressions_bte: jax.Array, *, train: bool = False) -> jax.Array:
    """The (B, T, K) weights alone (e.g. to plot them)."""
    b, t = expressions_bte.shape[:2]
    if self.kind == "adaptive":
      return self.net(expressions_bte, train=train)
    if self.kind == "global":
      w_k = jax.nn.softmax(self.logits)
    elif self.kind == "gaussian":
      w_k = jnp.asarray(gaussian_weights(self.width, self.sigma))
    else:
      w_k = jax.nn.one_hot(self.width // 2, self.width, dtype=jnp.float32)
    return jnp.broadcast_to(w_k, (b, t, self.width))

  def __call__(
    self, expressions_bte: jax.Array, shapes_bthwc: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    weights_btk = self.weights(expressions_bte, train=train)
    if self.kind == "none":
      return shapes_bthwc, weights_btk
    return apply_smoothing(weights_btk, shapes_bthwc), weights_btk


def smoother_from_config(cfg: Any, *, bn_axis_name: str | None = None) -> ShapeSmoother:
  """The smoother of a full config (reads cfg.model.smoothing)."""
  s = cfg.model.smoothing
  return ShapeSmoother(
    kind=s.kind,
    width=s.width,
    sigma=s.gaussian_sigma,
    channels=tuple(s.channels),
    bn_axis_name=bn_axis_name,
  )
