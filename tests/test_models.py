"""jaxtalk.models: shapes, ablation switches, temporal (in)dependence, smoothing, VGG conversion.

Compiling on a 2-core CPU dominates the cost, so one tiny renderer is initialised per session
and its parameters serve every ablation variant (a variant with a module switched off simply
does not read that module's parameters). Paper-scale models are only shape-checked
(`jax.eval_shape`), never run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jaxtalk.config import load_config
from jaxtalk.errors import WeightsError
from jaxtalk.models import vgg
from jaxtalk.models.audio2expression import a2e_from_config
from jaxtalk.models.discriminator import discriminator_from_config
from jaxtalk.models.renderer import renderer_from_config
from jaxtalk.models.smoothing import (
  ShapeSmoother,
  apply_smoothing,
  gaussian_weights,
  smoother_from_config,
)
from jaxtalk.sharding import AXES, make_mesh
from jaxtalk.train.vgg_weights import load_vgg19_params

B, T, W, F = 2, 4, 20, 80


def n_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def variant(cfg, **switches):
  cfg = cfg.copy_and_resolve_references()
  for key, value in switches.items():
    section, name = key.split("__")
    cfg.model[section][name] = value
  return cfg


@pytest.fixture(scope="module")
def tiny():
  return load_config("tiny")


@pytest.fixture(scope="module")
def grid():
  return load_config("grid")


@pytest.fixture(scope="module")
def inputs(tiny):
  h = tiny.data.image_size
  rng = np.random.default_rng(0)
  background = rng.uniform(-1, 1, (B, T, h, h, 3)).astype(np.float32)
  shape = rng.uniform(-1, 1, (B, T, h, h, 3)).astype(np.float32)
  audio = rng.normal(size=(B, T, W, F)).astype(np.float32)
  return background, shape, audio


@pytest.fixture(scope="module")
def renderer_vars(tiny, inputs):
  model = renderer_from_config(tiny)
  return jax.jit(lambda key: model.init(key, *inputs, train=False))(jax.random.PRNGKey(0))


def render(cfg, variables, background, shape, audio):
  model = renderer_from_config(cfg)
  return np.asarray(
    jax.jit(lambda v, x, s, a: model.apply(v, x, s, a))(variables, background, shape, audio)
  )


# --- renderer -------------------------------------------------------------------------------


def test_renderer_tiny_runs_in_range_for_every_ablation(tiny, inputs, renderer_vars):
  assert set(renderer_vars) == {"params"}  # no batch_stats: instance norm only
  for fusion, dependency in [(True, True), (True, False), (False, True), (False, False)]:
    cfg = variant(tiny, renderer__audio_fusion=fusion, renderer__dependency=dependency)
    out = render(cfg, renderer_vars, *inputs)
    assert out.shape == inputs[0].shape and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
  print(f"tiny renderer params: {n_params(renderer_vars):,}")


def test_renderer_paper_scale_shapes_and_params(grid):
  model = renderer_from_config(grid)
  h = grid.data.image_size
  frames = jax.ShapeDtypeStruct((1, grid.train.seq_len, h, h, 3), jnp.float32)
  audio = jax.ShapeDtypeStruct((1, grid.train.seq_len, grid.data.audio_window, F), jnp.float32)
  key = jax.random.PRNGKey(0)
  variables = jax.eval_shape(lambda x, a: model.init(key, x, x, a), frames, audio)
  out = jax.eval_shape(lambda v, x, a: model.apply(v, x, x, a), variables, frames, audio)
  assert out.shape == frames.shape and out.dtype == jnp.float32
  params = variables["params"]
  # encoder: 7x7 6->64, 4x4 64->128, 4x4 128->256 (no conv bias before IN), IN scale+bias
  assert n_params(params["encoder"]) == 49 * 6 * 64 + 16 * 64 * 128 + 16 * 128 * 256 + 2 * 448
  # dependency module from Sec. III-C.3: p=4 patches of 16x16x256 -> d=512, N=4 blocks
  r, d, hidden = grid.model.renderer, 512, 2048
  patch = (64 // 4) ** 2 * 256
  block = 2 * 2 * d + 4 * (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
  # temporal embeddings are sinusoidal (no parameters); spatial: 16 learned d-vectors
  assert r.temporal_pos == "sinusoidal"
  expected = (patch * d + d) + (d * patch + patch) + 16 * d + 4 * block + 2 * d
  assert n_params(params["dependency"]) == expected
  assert len([k for k in params if k.startswith("res")]) == 8
  counts = {k: n_params(v) for k, v in params.items()}
  print(f"paper renderer params {n_params(params):,}: {counts}")


def test_dependency_module_mixes_frames_and_only_it(tiny, inputs, renderer_vars):
  background, shape, audio = inputs
  bumped = background.copy()
  # a pattern, not a constant: instance norm would cancel a constant shift of the frame
  bumped[:, 1] = np.random.default_rng(9).uniform(-1, 1, bumped[:, 1].shape)
  others = [0, 2, 3]

  on = variant(tiny, renderer__dependency=True)
  diff = np.abs(
    render(on, renderer_vars, bumped, shape, audio) - render(on, renderer_vars, *inputs)
  )
  assert diff[:, others].max() > 1e-4, "perturbing frame 1 must change the other frames"

  off = variant(tiny, renderer__dependency=False)  # audio fusion on: it must be per frame too
  base = render(off, renderer_vars, *inputs)
  out = render(off, renderer_vars, bumped, shape, audio)
  assert np.array_equal(out[:, others], base[:, others])
  assert np.abs(out[:, 1] - base[:, 1]).max() > 1e-4
  bumped_audio = audio.copy()
  bumped_audio[:, 1] = np.random.default_rng(10).normal(size=bumped_audio[:, 1].shape)
  out = render(off, renderer_vars, background, shape, bumped_audio)
  assert np.array_equal(out[:, others], base[:, others])
  assert np.abs(out[:, 1] - base[:, 1]).max() > 1e-5, "audio fusion must reach the output"


def test_renderer_without_audio_fusion_needs_no_audio(tiny, inputs, renderer_vars):
  cfg = variant(tiny, renderer__audio_fusion=False)
  model = renderer_from_config(cfg)
  out = jax.jit(lambda v, x, s: model.apply(v, x, s, None))(renderer_vars, *inputs[:2])
  assert out.shape == inputs[0].shape


def test_bf16_close_to_f32_with_f32_params(tiny, inputs, renderer_vars):
  cfg = tiny.copy_and_resolve_references()
  cfg.model.dtype = "bfloat16"
  model = renderer_from_config(cfg)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))
  assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  out16 = render(cfg, renderer_vars, *inputs)
  out32 = render(tiny, renderer_vars, *inputs)
  assert out16.dtype == np.float32
  # bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2%); ~15 rounded layers with
  # instance norms in between grow that to ~0.4% mean / ~3.5% worst pixel of the [-1, 1] range
  # (measured over 3 inits: mean 0.0037-0.0043, max 0.029-0.036). The bounds are ~3x that; a
  # real bug (a norm in bf16 statistics, an overflow, f16 params) is O(0.1-1).
  err = np.abs(out16 - out32)
  assert err.mean() < 0.012 and err.max() < 0.1, (err.mean(), err.max())


def test_remat_same_forward_and_checkpointed(tiny, inputs, renderer_vars):
  cfg = tiny.copy_and_resolve_references()
  cfg.model.remat = True
  np.testing.assert_allclose(
    render(cfg, renderer_vars, *inputs), render(tiny, renderer_vars, *inputs), atol=1e-6
  )
  model = renderer_from_config(cfg)
  jaxpr = jax.make_jaxpr(jax.grad(lambda v: model.apply(v, *inputs).sum()))(renderer_vars)
  assert "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)


# --- adaptive smoothing --------------------------------------------------------------------


def test_adaptive_smoothing_param_count_matches_table_i():
  e, k = 53, 5
  widths = [e, 32, 32, 16, 16]
  by_hand = sum(3 * a * b + b + 2 * b for a, b in zip(widths[:-1], widths[1:]))  # conv + BN
  by_hand += 3 * 16 * k + k  # Conv1D-Sigmoid
  assert by_hand == 10_997  # the paper's "11k learnable parameters"
  model = ShapeSmoother(kind="adaptive", width=k)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, e)), jnp.zeros((1, 12, 8, 8, 3)))
  )
  assert n_params(variables["params"]) == by_hand
  assert 10_000 <= n_params(variables["params"]) <= 12_000


def numpy_smooth(weights_btk: np.ndarray, shapes: np.ndarray) -> np.ndarray:
  k = weights_btk.shape[-1]
  r = k // 2
  t = shapes.shape[1]
  out = np.zeros_like(shapes, dtype=np.float64)
  for ti in range(t):
    for j in range(k):
      src = min(max(ti + j - r, 0), t - 1)  # edge padding
      out[:, ti] += weights_btk[:, ti, j, None, None, None] * shapes[:, src]
  return out


def test_apply_smoothing_identity_and_reference():
  rng = np.random.default_rng(1)
  shapes = rng.normal(size=(2, 7, 5, 4, 3)).astype(np.float32)
  one_hot = np.zeros((2, 7, 5), np.float32)
  one_hot[..., 2] = 1
  assert np.array_equal(np.asarray(apply_smoothing(one_hot, shapes)), shapes)
  w = rng.uniform(size=(2, 7, 5)).astype(np.float32)
  w /= w.sum(-1, keepdims=True)
  np.testing.assert_allclose(apply_smoothing(w, shapes), numpy_smooth(w, shapes), atol=1e-5)


def test_gaussian_none_and_global_kinds():
  rng = np.random.default_rng(2)
  expr = rng.normal(size=(2, 6, 53)).astype(np.float32)
  shapes = rng.normal(size=(2, 6, 4, 4, 3)).astype(np.float32)
  gauss = ShapeSmoother(kind="gaussian", width=5, sigma=1.3)
  (out, w), variables = gauss.init_with_output(jax.random.PRNGKey(0), expr, shapes)
  assert n_params(variables) == 0
  k = np.arange(-2, 3)
  ref_w = np.exp(-(k**2) / (2 * 1.3**2))
  ref_w /= ref_w.sum()
  np.testing.assert_allclose(gaussian_weights(5, 1.3), ref_w, rtol=1e-6)
  # independent reference: scipy 1-D correlation along T of the edge-padded sequence
  padded = np.pad(shapes, [(0, 0), (2, 2), (0, 0), (0, 0), (0, 0)], mode="edge")
  ref = scipy.ndimage.correlate1d(padded, ref_w, axis=1, mode="constant")[:, 2:-2]
  np.testing.assert_allclose(out, ref, atol=1e-5)

  none = ShapeSmoother(kind="none", width=5)
  out, w = none.apply({}, expr, shapes)
  assert np.array_equal(np.asarray(out), shapes) and np.array_equal(
    np.asarray(w[..., 2]), np.ones((2, 6))
  )

  glob = ShapeSmoother(kind="global", width=5, sigma=1.3)
  (out, w), variables = glob.init_with_output(jax.random.PRNGKey(0), expr, shapes)
  assert jax.tree.map(jnp.shape, variables) == {"params": {"logits": (5,)}}
  np.testing.assert_allclose(w, np.broadcast_to(ref_w, w.shape), rtol=1e-5)  # starts Gaussian
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_adaptive_weights_positive_normalised_and_batch_stats(tiny):
  model = smoother_from_config(tiny)
  assert model.kind == "adaptive" and model.width == 5
  rng = np.random.default_rng(3)
  expr = rng.normal(size=(2, 8, tiny.data.expression_dim)).astype(np.float32) * 3 + 1
  shapes = rng.normal(size=(2, 8, 4, 4, 3)).astype(np.float32)
  variables = jax.jit(lambda key: model.init(key, expr, shapes))(jax.random.PRNGKey(0))
  assert set(variables) == {"params", "batch_stats"}
  # the head starts at zero (every frame: the same Gaussian, test_stability.py); give it the
  # small non-zero weights training brings, so the weights depend on the frame
  head = variables["params"]["net"]["Conv_4"]
  assert not np.asarray(head["kernel"]).any()
  kernel = rng.normal(size=head["kernel"].shape).astype(np.float32) * 0.3
  variables = {
    **variables,
    "params": {"net": {**variables["params"]["net"], "Conv_4": {**head, "kernel": kernel}}},
  }

  @jax.jit
  def train_step(v):
    return model.apply(v, expr, shapes, train=True, mutable=["batch_stats"])

  (out, w), updates = train_step(variables)
  w = np.asarray(w)
  assert w.shape == (2, 8, 5) and (w > 0).all()
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  assert np.abs(np.diff(w, axis=1)).max() > 0, "adaptive weights differ between frames"
  np.testing.assert_allclose(out, numpy_smooth(w, shapes), atol=1e-5)
  # running statistics moved toward the batch (momentum 0.9 from mean 0)
  first = updates["batch_stats"]["net"]["BatchNorm_0"]["mean"]
  assert np.abs(np.asarray(first)).max() > 0
  _, w_eval = jax.jit(lambda v: model.apply(v, expr, shapes, train=False))(variables)
  np.testing.assert_allclose(np.asarray(w_eval).sum(-1), 1.0, atol=1e-6)


# --- discriminator, audio2expression --------------------------------------------------------


def test_discriminator_shapes(tiny, grid, inputs):
  model = discriminator_from_config(tiny)
  variables = jax.jit(lambda key: model.init(key, inputs[0]))(jax.random.PRNGKey(0))
  logits = jax.jit(model.apply)(variables, inputs[0])
  # n_layers=2: 64 -> 32 -> 16 (stride 2), then two stride-1 4x4 convs: 15 -> 14
  assert logits.shape == (B, T, 14, 14, 1) and np.isfinite(np.asarray(logits)).all()
  paper = discriminator_from_config(grid)
  frames = jax.ShapeDtypeStruct((1, 12, 256, 256, 3), jnp.float32)
  v = jax.eval_shape(lambda x: paper.init(jax.random.PRNGKey(0), x), frames)
  assert jax.eval_shape(paper.apply, v, frames).shape == (1, 12, 30, 30, 1)  # pix2pix 70x70
  print(f"discriminator params tiny {n_params(variables):,} paper {n_params(v):,}")


def test_audio2expression_shapes(tiny, grid, inputs):
  model = a2e_from_config(tiny)
  audio = inputs[2]
  variables = jax.jit(lambda key: model.init(key, audio))(jax.random.PRNGKey(0))
  out = jax.jit(model.apply)(variables, audio)
  assert out.shape == (B, T, tiny.data.expression_dim) and np.isfinite(np.asarray(out)).all()
  paper = a2e_from_config(grid)
  audio = jax.ShapeDtypeStruct((2, 64, grid.data.audio_window, F), jnp.float32)
  v = jax.eval_shape(lambda a: paper.init(jax.random.PRNGKey(0), a), audio)
  assert jax.eval_shape(paper.apply, v, audio).shape == (2, 64, 53)
  print(f"audio2expression params tiny {n_params(variables):,} paper {n_params(v):,}")


# --- VGG19 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_state():
  """A synthetic torchvision vgg19 state dict (names and shapes as torchvision), all 16 convs
  plus a classifier key the converter must ignore."""
  rng = np.random.default_rng(4)
  state = {}
  for _, idx, cin, cout in vgg.VGG19_CONVS:
    std = np.sqrt(2.0 / (9 * cin))
    state[f"features.{idx}.weight"] = (rng.normal(size=(cout, cin, 3, 3)) * std).astype(np.float32)
    state[f"features.{idx}.bias"] = rng.normal(size=(cout,)).astype(np.float32) * 0.1
  state["classifier.0.bias"] = np.zeros(4096, np.float32)
  return state


def numpy_conv3x3(x_hwc: np.ndarray, w_oihw: np.ndarray, b: np.ndarray) -> np.ndarray:
  xp = np.pad(x_hwc, [(1, 1), (1, 1), (0, 0)])
  win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(0, 1))  # h w i kh kw
  return np.einsum("hwiyx,oiyx->hwo", win, w_oihw) + b


def test_vgg_converter_round_trip_and_layout(vgg_state):
  params = vgg.convert_torchvision_vgg19(vgg_state)
  assert list(params) == [name for name, *_ in vgg.USED_CONVS]
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)  # HWIO
  back = vgg.to_torchvision_vgg19(params)
  for key, value in back.items():
    assert np.array_equal(value, vgg_state[key])

  rng = np.random.default_rng(5)
  image = rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  feats = jax.jit(vgg.VGG19Features().apply)({"params": params}, image)
  assert [f.shape for f in feats] == [
    (1, 16, 16, 64), (1, 8, 8, 128), (1, 4, 4, 256), (1, 2, 2, 512), (1, 1, 1, 512)
  ]  # fmt: skip
  x = ((image[0] + 1) / 2 - np.array(vgg.IMAGENET_MEAN)) / np.array(vgg.IMAGENET_STD)
  # relu1_1 by scipy's 2-D cross-correlation, straight from the OIHW kernel
  w, b = vgg_state["features.0.weight"], vgg_state["features.0.bias"]
  ref = np.stack(
    [
      sum(scipy.signal.correlate2d(x[..., i], w[o, i], mode="same") for i in range(3)) + b[o]
      for o in range(64)
    ],
    axis=-1,
  )
  np.testing.assert_allclose(feats[0][0], np.maximum(ref, 0), atol=1e-4)
  # relu2_1 through conv1_2, max pool and conv2_1
  h = np.maximum(
    numpy_conv3x3(np.maximum(ref, 0), vgg_state["features.2.weight"], vgg_state["features.2.bias"]),
    0,
  )
  h = h.reshape(8, 2, 8, 2, 64).max(axis=(1, 3))
  h = np.maximum(numpy_conv3x3(h, vgg_state["features.5.weight"], vgg_state["features.5.bias"]), 0)
  np.testing.assert_allclose(feats[1][0], h, rtol=1e-4, atol=1e-4)


def test_vgg_loader_npz_and_errors(vgg_state, tmp_path):
  path = tmp_path / "vgg19.npz"
  np.savez(path, **vgg_state)
  params = load_vgg19_params(path)
  np.testing.assert_array_equal(
    params["conv5_1"]["kernel"], vgg.convert_torchvision_vgg19(vgg_state)["conv5_1"]["kernel"]
  )

  with pytest.raises(WeightsError, match="not found"):
    load_vgg19_params(tmp_path / "nope.npz")
  partial = {k: v for k, v in vgg_state.items() if k != "features.28.weight"}
  np.savez(tmp_path / "partial.npz", **partial)
  with pytest.raises(WeightsError, match=r"missing key 'features\.28\.weight'"):
    load_vgg19_params(tmp_path / "partial.npz")
  bad = dict(vgg_state)
  bad["features.0.weight"] = np.zeros((64, 3, 5, 5), np.float32)
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(WeightsError, match=r"features\.0\.weight.*\(64, 3, 5, 5\)"):
    load_vgg19_params(tmp_path / "bad.npz")
  try:
    import torch  # noqa: F401
  except ImportError:
    (tmp_path / "vgg19.pth").write_bytes(b"not really")
    with pytest.raises(WeightsError, match="convert_vgg19.py"):
      load_vgg19_params(tmp_path / "vgg19.pth")


def test_make_mesh_single_device():
  mesh = make_mesh(data=-1, seq=1)
  assert mesh.axis_names == AXES and mesh.devices.shape == (len(jax.devices()), 1)
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ValueError):
    make_mesh(data=3, seq=5)
