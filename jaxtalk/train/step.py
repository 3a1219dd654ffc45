"""The train steps: pure functions `(state, batch, rng) -> (state, metrics)`.

Renderer step (StableFace Sec. III-C, III-E), all on device:

    uint8 frames / shapes -> float [-1, 1]; log-mel standardised
    augmented erosion of the mouth mask (jaxtalk/train/erosion.py) -> eroded background
    stage 2: adaptive smoothing of the shape renders (Eq. 1); stage 1: shapes as they are
    G(background, shapes, audio) -> frames
    generator loss  lambda_rec (L1_mask + VGG) + lambda_adv L_G     (Eq. 5, 7, 8)
    discriminator   L_D on the real frames and the (stopped) generated ones   (Eq. 6)
    both Adam updates from the same forward pass (simultaneous G / D update)

A step whose losses or gradient norms are not finite changes nothing but `bad_step` (set to
its step number): the state stays the last good one, every later step is a no-op, and the loop
stops, reports the step and checkpoints that state.

`axis_name` is set on the pmap path only: gradients, batch statistics and metrics are averaged
over it (lax.pmean). Under jit the batch is one global array and XLA inserts the reductions.
Random draws per sample come from fold_in(rng, global sample index), so both paths draw the
same augmentation for the same sample.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxtalk.model_io import (  # noqa: F401  (re-exported: the inference-side forward pass)
  generator_forward,
  normalise_audio,
  to_signed_unit,
  to_uint8,
)
from jaxtalk.train import erosion as erosion_lib
from jaxtalk.train import losses
from jaxtalk.train.state import RendererModels, RendererState, reset_smoothing_opt

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RendererHParams:
  """The static numbers of the renderer step (hashable)."""

  mouth_weight: float = 2.0
  lambda_rec: float = 20.0
  lambda_adv: float = 1.0
  gan_g_loss: str = "saturating"
  erosion: erosion_lib.ErosionParams = erosion_lib.ErosionParams(enabled=False)
  audio_norm: bool = True
  perceptual_region: str = "full"  # "full" | "mouth_half" (losses.perceptual_view)
  perceptual_size: int = 0  # > 0: the perceptual term's view resized to this width

  @classmethod
  def from_config(cls, cfg: Any) -> RendererHParams:
    t = cfg.train
    if t.gan_g_loss not in losses.GAN_G_LOSSES:
      raise ValueError(
        f"train.gan_g_loss must be one of {losses.GAN_G_LOSSES}, got {t.gan_g_loss!r}"
      )
    return cls(
      mouth_weight=float(t.mouth_weight),
      lambda_rec=float(t.lambda_rec),
      lambda_adv=float(t.lambda_adv),
      gan_g_loss=t.gan_g_loss,
      erosion=erosion_lib.ErosionParams.from_config(cfg),
      audio_norm=bool(t.audio_norm),
      perceptual_region=str(t.get("perceptual_region", "full")),
      perceptual_size=int(t.get("perceptual_size", 0)),
    )


def perceptual_loss(features_fn, fake: jax.Array, x: PyTree, hp: RendererHParams) -> jax.Array:
  """Eq. 5's VGG term, mouth-weighted like the L1 term, on the configured view."""
  return losses.perceptual(
    features_fn, fake, x["frames"], mask_bthw=x["mask"], mouth_weight=hp.mouth_weight,
    region=hp.perceptual_region, size=hp.perceptual_size,
  )  # fmt: skip


def global_sample_ids(local_batch: int, axis_name: str | None) -> jax.Array:
  ids = jnp.arange(local_batch)
  if axis_name is not None:
    ids = ids + lax.axis_index(axis_name) * local_batch
  return ids


def _pmean(tree: PyTree, axis_name: str | None) -> PyTree:
  return tree if axis_name is None else lax.pmean(tree, axis_name)


def _commit(old: Any, new: Any, finite: jax.Array) -> Any:
  """new where this step is finite and no earlier one failed; else old with bad_step set."""
  ok = finite & (old.bad_step < 0)
  out = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
  bad = jnp.where((old.bad_step < 0) & ~finite, old.step, old.bad_step)
  return out.replace(bad_step=bad)


# ----------------------------------------------------------------------------------------------
# Renderer.


def renderer_inputs(
  state: RendererState, batch: PyTree, rng: jax.Array | None, hp: RendererHParams,
  axis_name: str | None = None, augment: bool = True,
) -> dict[str, jax.Array]:  # fmt: skip
  """Device-side preparation: floats, standardised audio, the erosion mask and the background."""
  frames = to_signed_unit(batch["frames"])
  shapes = to_signed_unit(batch["shape"])
  params = hp.erosion if augment else dataclasses.replace(hp.erosion, enabled=False)
  ids = global_sample_ids(frames.shape[0], axis_name)
  mask = erosion_lib.augment_masks(
    rng if rng is not None else jax.random.key(0), batch["mask_points"], batch["mask"], params, ids
  )
  return {
    "frames": frames,
    "shapes": shapes,
    "mask": mask,
    "background": erosion_lib.erode(frames, mask),
    "expression": batch["expression"].astype(jnp.float32),
    "audio": normalise_audio(batch["audio"], state.data_stats, hp.audio_norm),
  }


def renderer_train_step(
  state: RendererState,
  batch: PyTree,
  rng: jax.Array,
  vgg_params: PyTree | None,
  *,
  models: RendererModels,
  g_tx: optax.GradientTransformation,
  d_tx: optax.GradientTransformation,
  hp: RendererHParams,
  stage: int,
  axis_name: str | None = None,
) -> tuple[RendererState, dict[str, jax.Array]]:
  """One generator + discriminator update. `rng` is a typed key; vgg_params None = no VGG."""
  k_erode = jax.random.fold_in(rng, 1)
  x = renderer_inputs(state, batch, k_erode, hp, axis_name)
  use_vgg = models.vgg is not None and vgg_params is not None

  def vgg_features(images):
    return models.vgg.apply({"params": vgg_params}, images)

  def g_loss_fn(g_params):
    fake, _, new_stats = generator_forward(
      g_params, state.g_stats, models, x["background"], x["shapes"], x["expression"], x["audio"],
      stage=stage, train=True,
    )  # fmt: skip
    l1 = losses.weighted_l1(fake, x["frames"], x["mask"], hp.mouth_weight)
    perc = perceptual_loss(vgg_features, fake, x, hp) if use_vgg else jnp.float32(0.0)
    fake_logits = models.discriminator.apply({"params": state.d_params}, fake)
    adv = losses.generator_adv_loss(fake_logits, hp.gan_g_loss)
    total = hp.lambda_rec * (l1 + perc) + hp.lambda_adv * adv
    return total, (fake, new_stats, {"l1": l1, "perceptual": perc, "g_adv": adv})

  (g_loss, (fake, new_stats, g_aux)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
    state.g_params
  )
  fake = lax.stop_gradient(fake)

  def d_loss_fn(d_params):
    real_logits = models.discriminator.apply({"params": d_params}, x["frames"])
    fake_logits = models.discriminator.apply({"params": d_params}, fake)
    loss = losses.discriminator_loss(real_logits, fake_logits)
    return loss, (jnp.mean(jax.nn.sigmoid(real_logits)), jnp.mean(jax.nn.sigmoid(fake_logits)))

  (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)

  g_grads = _pmean(g_grads, axis_name)
  d_grads = _pmean(d_grads, axis_name)
  new_stats = _pmean(new_stats, axis_name)  # BN already syncs over axis_name; keeps replicas equal
  g_norm = optax.tree.norm(g_grads)
  d_norm = optax.tree.norm(d_grads)
  metrics = _pmean(
    {"loss_g": g_loss, "loss_d": d_loss, "d_real": d_real, "d_fake": d_fake, **g_aux}, axis_name
  )
  metrics.update(g_grad_norm=g_norm, d_grad_norm=d_norm)
  finite = (
    jnp.isfinite(metrics["loss_g"]) & jnp.isfinite(metrics["loss_d"])
    & jnp.isfinite(g_norm) & jnp.isfinite(d_norm)
  )  # fmt: skip

  g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
  d_updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
  new = state.replace(
    step=state.step + 1,
    g_params=optax.apply_updates(state.g_params, g_updates),
    g_stats=new_stats,
    d_params=optax.apply_updates(state.d_params, d_updates),
    g_opt=g_opt,
    d_opt=d_opt,
  )
  new = _commit(state, new, finite)
  metrics.update(finite=finite, bad_step=new.bad_step, step=new.step)
  return new, metrics


def renderer_eval_step(
  state: RendererState,
  batch: PyTree,
  vgg_params: PyTree | None,
  *,
  models: RendererModels,
  hp: RendererHParams,
  stage: int,
  axis_name: str | None = None,
) -> dict[str, jax.Array]:
  """Validation: the stored mask (no augmentation), running BN statistics, no update.
  `rec` is lambda_rec * (L1_mask + VGG), the generator's reconstruction loss (Eq. 5, 8)."""
  x = renderer_inputs(state, batch, None, hp, axis_name, augment=False)
  fake, _, _ = generator_forward(
    state.g_params, state.g_stats, models, x["background"], x["shapes"], x["expression"],
    x["audio"], stage=stage, train=False,
  )  # fmt: skip
  l1 = losses.weighted_l1(fake, x["frames"], x["mask"], hp.mouth_weight)
  if models.vgg is not None and vgg_params is not None:
    perc = perceptual_loss(lambda im: models.vgg.apply({"params": vgg_params}, im), fake, x, hp)
  else:
    perc = jnp.float32(0.0)
  mse = jnp.mean(jnp.square(fake - x["frames"]))
  psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))  # peak-to-peak 2 in [-1, 1]
  out = {"l1": l1, "perceptual": perc, "rec": hp.lambda_rec * (l1 + perc), "psnr": psnr}
  return _pmean(out, axis_name)


def renderer_sample(
  state: RendererState,
  batch: PyTree,
  rng: jax.Array,
  *,
  models: RendererModels,
  hp: RendererHParams,
  stage: int,
) -> dict[str, jax.Array]:
  """The sample grid's columns for the batch's first window, uint8 (T, S, S, 3) each:
  eroded input (with this step's augmentation) | shape input (smoothed in stage 2) | output |
  target."""
  one = jax.tree.map(lambda a: a[:1], batch)
  x = renderer_inputs(state, one, jax.random.fold_in(rng, 1), hp)
  fake, shapes, _ = generator_forward(
    state.g_params, state.g_stats, models, x["background"], x["shapes"], x["expression"],
    x["audio"], stage=stage, train=False,
  )  # fmt: skip
  return {
    "eroded": to_uint8(x["background"][0]),
    "shape": to_uint8(shapes[0]),
    "output": to_uint8(fake[0]),
    "target": to_uint8(x["frames"][0]),
  }


def enter_stage2(state: RendererState, *, g_tx: optax.GradientTransformation) -> RendererState:
  return reset_smoothing_opt(state, g_tx)


# ----------------------------------------------------------------------------------------------
# audio2expression.
