"""The fast convolution paths of jaxtalk.models.layers / renderer keep the old math.

Each test keeps the straightforward implementation the fast path replaced (reflect pad + VALID
conv; nn.ConvTranspose) and checks, on the same parameters, equal outputs and gradients within
float tolerance, and an identical parameter tree (so checkpoints written before still load).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models import conv as conv_lib
from jaxtalk.models.layers import (
  INTERLEAVE_FORMS,
  ConvNormAct,
  UpConv,
  interleave_form,
  leaky_relu,
  reflect_pad,
  reflect_pad_form,
  reflect_padding,
)
from jaxtalk.models.renderer import Decoder, Encoder


class OldConvNormAct(nn.Module):
  """ConvNormAct as it was: reflect pad, then a VALID conv (reflect) or explicit zero pads."""

  features: int
  kernel: int
  stride: int = 1
  reflect: bool = False
  norm: bool = True
  act: bool = True

  @nn.compact
  def __call__(self, x):
    if self.stride == 1:
      pad = (self.kernel - 1) // 2
      pads = ((pad, self.kernel - 1 - pad),) * 2
    else:
      pad = (self.kernel - self.stride) // 2
      pads = ((pad, pad),) * 2
    if self.reflect:
      x = reflect_pad(x, pads[0][0])
      pads = "VALID"
    x = nn.Conv(
      self.features,
      (self.kernel, self.kernel),
      strides=(self.stride, self.stride),
      padding=pads,
      use_bias=not self.norm,
    )(x)
    if self.norm:
      x = nn.InstanceNorm(epsilon=1e-5)(x)
    if self.act:
      x = leaky_relu(x)
    return x


class OldDecoder(nn.Module):
  base_channels: int = 8
  n_down: int = 2

  @nn.compact
  def __call__(self, x):
    for i in reversed(range(self.n_down)):
      x = nn.ConvTranspose(
        self.base_channels * 2**i, (4, 4), strides=(2, 2), padding="SAME", use_bias=False
      )(x)
      x = leaky_relu(nn.InstanceNorm(epsilon=1e-5)(x))
    x = nn.Conv(3, (7, 7), padding="VALID")(reflect_pad(x, 3))
    return jnp.tanh(x)


class OldEncoder(nn.Module):
  base_channels: int = 8
  n_down: int = 2

  @nn.compact
  def __call__(self, x):
    # named as the modules of the real Encoder so both trees match
    x = OldConvNormAct(self.base_channels, 7, reflect=True, name="ConvNormAct_0")(x)
    for i in range(self.n_down):
      x = OldConvNormAct(
        self.base_channels * 2 ** (i + 1), 4, stride=2, name=f"ConvNormAct_{i + 1}"
      )(x)
    return x


def _same_tree(a, b) -> None:
  sa = jax.tree.map(lambda x: x.shape, a)
  sb = jax.tree.map(lambda x: x.shape, b)
  assert sa == sb


def _check(new, old, x, rtol=2e-5, atol=2e-5):
  """Same init (same key, same tree), same outputs, same gradients w.r.t. params and input."""
  v_new = jax.jit(new.init)(jax.random.PRNGKey(3), x)
  v_old = jax.jit(old.init)(jax.random.PRNGKey(3), x)
  _same_tree(v_new, v_old)
  for a, b in zip(jax.tree.leaves(v_new), jax.tree.leaves(v_old), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same initialiser
  # random (not init-time) parameters so every tap of the kernels matters
  leaves, treedef = jax.tree.flatten(v_old)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  v = jax.tree.unflatten(
    treedef, [jax.random.normal(k, p.shape) * 0.3 for k, p in zip(keys, leaves, strict=True)]
  )
  # jitted: op-by-op dispatch compiled every primitive separately (100 s for the decoder)
  y_new, y_old = jax.jit(new.apply)(v, x), jax.jit(old.apply)(v, x)
  np.testing.assert_allclose(np.asarray(y_new), np.asarray(y_old), rtol=rtol, atol=atol)
  cot = jax.random.normal(jax.random.PRNGKey(9), y_old.shape)

  def loss(mod):
    return lambda v, x: jnp.sum(mod.apply(v, x) * cot)

  g_new = jax.jit(jax.grad(loss(new), argnums=(0, 1)))(v, x)
  g_old = jax.jit(jax.grad(loss(old), argnums=(0, 1)))(v, x)
  for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_old), strict=True):
    scale = float(np.max(np.abs(np.asarray(b)))) + 1e-6
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=5e-5)


@pytest.mark.parametrize(
  "kernel,stride,reflect",
  [(7, 1, True), (3, 1, True), (4, 2, False)],
)
def test_convnormact_matches_reflect_pad_valid_conv(kernel, stride, reflect):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 5))
  _check(ConvNormAct(6, kernel, stride, reflect), OldConvNormAct(6, kernel, stride, reflect), x)


def test_convnormact_wide_3x3_through_winograd_matches_old():
  # the bottleneck's width: the reflect-padded VALID conv runs as Winograd (models/conv.py)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 256))
  _check(ConvNormAct(256, 3, 1, True), OldConvNormAct(256, 3, 1, True), x, rtol=1e-4, atol=1e-4)


def test_upconv_matches_conv_transpose_and_numpy():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 4))  # odd, non-square map
  old = nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding="SAME", use_bias=False)
  _check(UpConv(3), old, x)
  # and against a direct NumPy scatter: input pixel (i, j) adds x * w[ky, kx] to output pixel
  # (2i + 2 - ky, 2j + 2 - kx) (lax's SAME transposed padding of 2, correlation with the kernel
  # as stored, transpose_kernel=False)
  v = UpConv(3).init(jax.random.PRNGKey(1), x)
  w = np.asarray(v["params"]["kernel"])
  xn = np.asarray(x)
  n, h, wd, c = xn.shape
  ref = np.zeros((n, 2 * h + 4, 2 * wd + 4, 3))
  for i in range(h):
    for j in range(wd):
      for ky in range(4):
        for kx in range(4):
          ref[:, 2 * i + 4 - ky, 2 * j + 4 - kx] += xn[:, i, j] @ w[ky, kx]
  ref = ref[:, 2:-2, 2:-2]
  np.testing.assert_allclose(np.asarray(UpConv(3).apply(v, x)), ref, rtol=1e-5, atol=1e-5)


def _assert_trees_close_at_scale(got, want, atol: float) -> None:
  """Every leaf of `got` equals `want`'s (same shape) to `atol` of that leaf's largest
  magnitude."""
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    scale = float(np.max(np.abs(b)))
    np.testing.assert_allclose(a / scale, b / scale, atol=atol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_upconv_interleave_by_sums_is_the_stack(monkeypatch, dtype):
  # JAXTALK_UPCONV_INTERLEAVE=padsum (a GPU study): the four phases spread by interior padding
  # and summed. The same outputs bit for bit (one phase's value plus exact zeros per cell), the
  # same gradients to float rounding as the stack (checked against a NumPy scatter above)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 4)).astype(dtype)
  model = UpConv(3, dtype=dtype)
  v = model.init(jax.random.PRNGKey(1), x)
  out = {}
  for form in INTERLEAVE_FORMS:
    monkeypatch.setenv("JAXTALK_UPCONV_INTERLEAVE", form)
    loss = lambda v, x: jnp.sum(jnp.sin(model.apply(v, x).astype(jnp.float32)))  # noqa: E731
    out[form] = (model.apply(v, x), *jax.grad(loss, argnums=(0, 1))(v, x))
    # the form really differs: the sums spread each phase with an interior pad
    prims = [e.primitive.name for e in jax.make_jaxpr(model.apply)(v, x).jaxpr.eqns]
    assert prims.count("pad") == (4 if form == "padsum" else 0)
  y_sum, y_stack = (np.asarray(out[f][0].astype(jnp.float32)) for f in ("padsum", "stack"))
  assert y_sum.shape == (2, 10, 12, 3)
  np.testing.assert_array_equal(y_sum, y_stack)
  _assert_trees_close_at_scale(
    out["padsum"][1:], out["stack"][1:], atol=1e-6 if dtype == jnp.float32 else 1e-2
  )
  monkeypatch.setenv("JAXTALK_UPCONV_INTERLEAVE", "sum")
  with pytest.raises(ValueError, match="JAXTALK_UPCONV_INTERLEAVE='sum': expected one of"):
    model.apply(v, x)


def test_decoder_and_encoder_match_old_modules():
  _check(Decoder(8, 2), OldDecoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32)))
  _check(Encoder(8, 2), OldEncoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 6)))


def test_off_the_cpu_the_reflect_convs_are_built_valid_and_match_old(monkeypatch):
  # what a GPU traces (conv.on_cpu() False): reflect pad + VALID conv, no SAME-and-crop; the
  # parameter tree is the same, so checkpoints move between CPU and GPU
  monkeypatch.setattr(conv_lib, "on_cpu", lambda: False)
  assert reflect_padding() == "VALID"
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 5))
  _check(ConvNormAct(6, 7, 1, True), OldConvNormAct(6, 7, 1, True), x)
  _check(Decoder(8, 2), OldDecoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32)))


def test_upconv_bf16_close_to_f32():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 6, 8))
  v = UpConv(4).init(jax.random.PRNGKey(1), x)
  y32 = UpConv(4).apply(v, x)
  y16 = UpConv(4, dtype=jnp.bfloat16).apply(v, x)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.05, rtol=0.05)


def test_vgg_max_pool_matches_flax_max_pool_with_relu_ties():
  from jaxtalk.models.vgg import max_pool_2x2  # noqa: PLC0415

  # odd map (last row/column dropped, as nn.max_pool's VALID windows do); after a ReLU, a
  # quarter of the windows are all zeros: tied maxima, where the two backward passes differ
  # in where they send the gradient, but a ReLU in front passes none either way
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, 3))
  x = jnp.where(jax.random.uniform(jax.random.PRNGKey(1), x.shape) < 0.5, -jnp.abs(x), x)
  cot = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 3, 3))

  def f(pool):
    return lambda x: jnp.sum(pool(jax.nn.relu(x)) * cot)

  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
  np.testing.assert_array_equal(max_pool_2x2(x), flax_pool(x))
  g_new, g_old = jax.grad(f(max_pool_2x2))(x), jax.grad(f(flax_pool))(x)
  np.testing.assert_array_equal(np.asarray(g_new), np.asarray(g_old))
  # and against the definition: each 2x2 window's maximum, by NumPy
  xn = np.asarray(x)[:, :8, :6]
  ref = xn.reshape(2, 4, 2, 3, 2, 3).max(axis=(2, 4))
  np.testing.assert_array_equal(np.asarray(max_pool_2x2(x)), ref)


@pytest.mark.parametrize("kernel,size", [(7, 16), (3, 16), (7, 7), (7, 6)])
def test_folded_reflect_convs_match_old(monkeypatch, kernel, size):
  # JAXTALK_REFLECT_CONV=fold: the zero-padded conv plus the border strips of what reflection
  # adds, against reflect pad + VALID conv. Size 7 with a 7x7 kernel is the smallest map that
  # folds (H > 2 pad); at 6 it falls back to padding the map.
  monkeypatch.setenv("JAXTALK_REFLECT_CONV", "fold")
  assert reflect_padding() == "SAME"
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size + 3, 5))  # not square
  _check(ConvNormAct(6, kernel, 1, True), OldConvNormAct(6, kernel, 1, True), x)


def test_folded_decoder_matches_old(monkeypatch):
  monkeypatch.setenv("JAXTALK_REFLECT_CONV", "fold")
  _check(Decoder(8, 2), OldDecoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32)))


def test_channel_padded_encoder_and_decoder_match_old(monkeypatch):
  # JAXTALK_CONV_CHANNELS=8 (models/conv.channel_multiple), traced as a GPU traces it: the
  # 6-channel input of the encoder's first conv and the 3-channel output of the decoder's last
  # padded to 8 inside the conv; the parameter tree is unchanged (_check), outputs and gradients
  # equal the old modules' (the CPU's own gradients under padding: tests/test_conv.py)
  monkeypatch.setenv("JAXTALK_CONV_CHANNELS", "8")
  monkeypatch.setattr(conv_lib, "on_cpu", lambda: False)
  _check(Decoder(8, 2), OldDecoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32)))
  _check(Encoder(8, 2), OldEncoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 6)))


def test_pixel_blocked_encoder_and_decoder_match_old(monkeypatch):
  # JAXTALK_CONV_BLOCKS=4 (models/conv.block_factor), traced as a GPU traces it: the encoder's
  # first conv (6 -> 8 here) and the decoder's last (8 -> 3) on 4 x 4 pixel blocks; parameters,
  # outputs and gradients as the old modules' (the form alone: tests/test_conv.py)
  monkeypatch.setenv("JAXTALK_CONV_BLOCKS", "4")
  monkeypatch.setattr(conv_lib, "on_cpu", lambda: False)
  _check(Decoder(8, 2), OldDecoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32)))
  _check(Encoder(8, 2), OldEncoder(8, 2), jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 6)))


def test_reflect_conv_mode_typo_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("JAXTALK_REFLECT_CONV", "folded")
  with pytest.raises(ValueError, match="JAXTALK_REFLECT_CONV='folded': expected one of"):
    reflect_padding()


def _reflect_index(n: int, pad: int) -> np.ndarray:
  """Which cell of a length-n axis each cell of its reflect padding by `pad` copies (NumPy's)."""
  return np.pad(np.arange(n), pad, mode="reflect")


@pytest.mark.parametrize(
  "shape,pad", [((2, 5, 7, 3), 1), ((1, 9, 6, 4), 3), ((1, 4, 5, 2), 3), ((1, 3, 5, 2), 3)]
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_reflect_pad_by_sums_is_the_reflect_pad(monkeypatch, shape, pad, dtype):
  # JAXTALK_REFLECT_PAD=padsum (a GPU study): x and its reversed edges, zero-padded and summed.
  # Values against NumPy's index map; the gradient against its adjoint (each padded cell's
  # cotangent added to the cell it copies). H = 4 with pad 3 is the longest pad one reflection
  # covers; at H = 3 it takes two, and reflect_pad falls back to jnp.pad.
  monkeypatch.setenv("JAXTALK_REFLECT_PAD", "padsum")
  kx, kg = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, shape).astype(dtype)
  ih, iw = _reflect_index(shape[1], pad), _reflect_index(shape[2], pad)
  xn = np.asarray(x.astype(jnp.float32))
  np.testing.assert_array_equal(np.asarray(reflect_pad(x, pad).astype(jnp.float32)),
                                xn[:, ih][:, :, iw])  # fmt: skip
  g = jax.random.normal(kg, (shape[0], len(ih), len(iw), shape[3]))
  _, vjp = jax.vjp(lambda x: reflect_pad(x, pad), x.astype(jnp.float32))
  (dx,) = vjp(g)
  ref = np.zeros_like(xn)
  for a, h in enumerate(ih):
    for b, w in enumerate(iw):
      ref[:, h, w] += np.asarray(g)[:, a, b]
  np.testing.assert_allclose(np.asarray(dx), ref, rtol=1e-6, atol=1e-6)


def test_decoder_with_reflect_pads_by_sums_matches_concat(monkeypatch):
  # the GPU's forms (VALID convs of reflect-padded maps): the same decoder, parameters and input,
  # traced once under each pad form; outputs and gradients equal to float rounding
  monkeypatch.setattr(conv_lib, "on_cpu", lambda: False)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32))
  model = Decoder(8, 2)
  params = model.init(jax.random.PRNGKey(1), x)
  out = {}
  for form in ("concat", "padsum"):
    monkeypatch.setenv("JAXTALK_REFLECT_PAD", form)
    loss = lambda p, x: jnp.sum(jnp.sin(model.apply(p, x)))  # noqa: E731  a new trace per form
    out[form] = (model.apply(params, x), *jax.grad(loss, argnums=(0, 1))(params, x))
  _assert_trees_close_at_scale(out["padsum"], out["concat"], atol=1e-5)


@pytest.mark.parametrize(
  "backend,forms", [("gpu", ("padsum", "padsum")), ("tpu", ("concat", "stack")),
                    ("cpu", ("concat", "stack"))]
)  # fmt: skip
def test_pad_and_interleave_by_sums_are_the_default_on_a_gpu_only(monkeypatch, backend, forms):
  # chosen from a deviceless compile for the H200 (no concatenate left, the loop fusions that
  # replace them vectorised; docs/benchmarks.md); the CPU and a TPU keep jnp.pad's and the stack
  for name in ("JAXTALK_REFLECT_PAD", "JAXTALK_UPCONV_INTERLEAVE", "JAXTALK_CONV_FORMS"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert (reflect_pad_form(), interleave_form()) == forms
  # the variables override the default; the model as written (the MFU's count) keeps jnp.pad's
  other = ("concat", "stack") if backend == "gpu" else ("padsum", "padsum")
  monkeypatch.setenv("JAXTALK_REFLECT_PAD", other[0].upper())
  monkeypatch.setenv("JAXTALK_UPCONV_INTERLEAVE", f" {other[1]} ")
  assert (reflect_pad_form(), interleave_form()) == other
  monkeypatch.setenv("JAXTALK_CONV_FORMS", "xla")
  assert (reflect_pad_form(), interleave_form()) == ("concat", "stack")


def test_reflect_pad_form_typo_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("JAXTALK_REFLECT_PAD", "sum")
  with pytest.raises(ValueError, match="JAXTALK_REFLECT_PAD='sum': expected one of"):
    reflect_pad(jnp.zeros((1, 4, 4, 1)), 1)
