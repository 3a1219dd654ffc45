"""Losses of StableFace (Sec. III-E, Eq. 5-8) and of audio2expression.

    L_rec   = mean_t ( |(I^_t - I_t) . M_t|_1 + VGG(I^_t, I_t) )                   (Eq. 5)
              M_t = train.mouth_weight (2) in the eroded region, 1 elsewhere; the L1 is a mean
              over pixels and channels (a sum would tie the loss scale to the image size)
    L_D     = -E log D(I_t) - E log(1 - D(I^_t))                                   (Eq. 6)
    L_G     =  E log(1 - D(I^_t))                                                  (Eq. 7)
    L_total = lambda_rec L_rec + lambda_adv L_G,  lambda_rec = 20, lambda_adv = 1    (Eq. 8)

D returns PatchGAN logits l; log D = log sigmoid(l) = -softplus(-l) and log(1 - D) =
-softplus(l), so no sigmoid is ever rounded to 0 or 1. The expectations run over frames and
patches. Eq. 7 as printed is the "saturating" generator loss; `train.gan_g_loss =
"nonsaturating"` uses -E log D(I^_t) instead (same fixed point, stronger early gradients).

The perceptual term is the L1 distance of VGG19 relu1_1 .. relu5_1 features weighted
1/32, 1/16, 1/8, 1/4, 1 (pix2pixHD's weighting of the same layers); the VGG weights are
frozen (their gradient is stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
GAN_G_LOSSES = ("saturating", "nonsaturating")


def loss_weight_map(mask_bthw: jax.Array, mouth_weight: float) -> jax.Array:
  """(B, T, H, W, 1): mouth_weight inside the eroded region, 1 elsewhere."""
  return (1.0 + (mouth_weight - 1.0) * mask_bthw.astype(jnp.float32))[..., None]


def weighted_l1(
  pred_bthwc: jax.Array, target_bthwc: jax.Array, mask_bthw: jax.Array, mouth_weight: float
) -> jax.Array:
  """Mask-weighted L1 (Eq. 5, first term): mean over frames, pixels and channels."""
  w = loss_weight_map(mask_bthw, mouth_weight)
  return jnp.mean(w * jnp.abs(pred_bthwc.astype(jnp.float32) - target_bthwc.astype(jnp.float32)))


def perceptual(
  features_fn: Callable[[jax.Array], Sequence[jax.Array]],
  pred_bthwc: jax.Array,
  target_bthwc: jax.Array,
  layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
) -> jax.Array:
  """VGG(I^, I) of Eq. 5: weighted L1 between feature maps, mean over frames and positions.

  features_fn maps (N, H, W, 3) images in [-1, 1] to a list of feature maps (the frozen VGG19);
  the target's features carry no gradient.
  """
  n = pred_bthwc.shape[0] * pred_bthwc.shape[1]
  both = jnp.concatenate(
    [pred_bthwc.reshape(n, *pred_bthwc.shape[2:]), target_bthwc.reshape(n, *target_bthwc.shape[2:])]
  )
  feats = features_fn(both)
  if len(feats) != len(layer_weights):
    raise ValueError(f"{len(feats)} feature maps but {len(layer_weights)} layer weights")
  total = jnp.float32(0.0)
  for w, f in zip(layer_weights, feats, strict=True):
    f = f.astype(jnp.float32)
    fp, ft = f[:n], jax.lax.stop_gradient(f[n:])
    total = total + w * jnp.mean(jnp.abs(fp - ft))
  return total


def log_d(logits: jax.Array) -> jax.Array:
  """log D = log sigmoid(logits), stable."""
  return -jax.nn.softplus(-logits)


def log_one_minus_d(logits: jax.Array) -> jax.Array:
  """log(1 - D) = log sigmoid(-logits), stable."""
  return -jax.nn.softplus(logits)


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Eq. 6: -E log D(I) - E log(1 - D(I^))."""
  return -jnp.mean(log_d(real_logits.astype(jnp.float32))) - jnp.mean(
    log_one_minus_d(fake_logits.astype(jnp.float32))
  )


def generator_adv_loss(fake_logits: jax.Array, kind: str = "saturating") -> jax.Array:
  """Eq. 7 (saturating: E log(1 - D(I^))) or the non-saturating -E log D(I^)."""
  fake_logits = fake_logits.astype(jnp.float32)
  if kind == "saturating":
    return jnp.mean(log_one_minus_d(fake_logits))
  if kind == "nonsaturating":
    return -jnp.mean(log_d(fake_logits))
  raise ValueError(f"train.gan_g_loss must be one of {GAN_G_LOSSES}, got {kind!r}")


def expression_loss(
  pred_bte: jax.Array, target_bte: jax.Array, velocity_weight: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """audio2expression: L2 on expressions + velocity_weight * L2 on their frame differences
  (penalises jitter the position term alone does not see). Means over batch, frames, dims."""
  pred_bte = pred_bte.astype(jnp.float32)
  target_bte = target_bte.astype(jnp.float32)
  l2 = jnp.mean(jnp.square(pred_bte - target_bte))
  vel = jnp.mean(jnp.square(jnp.diff(pred_bte, axis=1) - jnp.diff(target_bte, axis=1)))
  total = l2 + velocity_weight * vel
  return total, {"loss": total, "l2": l2, "velocity": vel}
