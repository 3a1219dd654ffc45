"""jaxtalk.models.conv.conv: the same convolution as lax.conv_general_dilated, with its own CPU
gradients. Outputs and both gradients are checked against XLA's own and, for the weight
gradient, against a direct NumPy sum over output pixels."""

from __future__ import annotations

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models import conv as C

DN = ("NHWC", "HWIO", "NHWC")


def _lax(x, k, strides, padding):
  return jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=DN)


def _grads(fn, x, k, cot):
  return jax.jit(lambda x, k: jax.vjp(fn, x, k)[1](cot))(x, k)


def _assert_close_at_scale(a, b, atol: float) -> None:
  """a equals b (same shape) to `atol` of b's largest magnitude."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  assert a.shape == b.shape
  scale = float(np.max(np.abs(b)))
  np.testing.assert_allclose(a / scale, b / scale, atol=atol)


CASES = [
  # (h, w, c, f, kernel, stride, padding): every path of the module (own_weight_grad decides
  # which weight gradient runs: per-tap products, im2col of x or of g, or XLA's own)
  (9, 11, 40, 48, 3, 1, "SAME"),  # per-tap products (both sides >= 32 channels), odd SAME
  (9, 11, 3, 64, 7, 1, "SAME"),  # im2col of x (few input channels), the encoder's first conv
  (12, 10, 64, 3, 7, 1, "SAME"),  # im2col of g (few output channels), the decoder's last
  (9, 11, 6, 8, 7, 1, "SAME"),  # narrow: XLA's own weight gradient
  (7, 8, 36, 40, 2, 1, ((1, 1), (1, 1))),  # even kernel, as the decoder's sub-pixel UpConv
  (7, 8, 4, 6, 2, 1, ((1, 1), (1, 1))),  # even and narrow: im2col all the same
  (8, 9, 5, 6, 3, 1, ((0, 2), (1, 0))),  # unequal padding: the explicit input gradient
  (9, 9, 4, 5, 3, 1, "VALID"),
  (16, 14, 6, 8, 4, 2, ((1, 1), (1, 1))),  # stride 2 via space-to-depth, XLA's weight gradient
  (15, 13, 40, 36, 4, 2, ((1, 1), (1, 1))),  # odd map (last row/column never read), per tap
  (16, 16, 3, 64, 2, 2, "VALID"),  # stride 2, im2col of x (12 channels after space-to-depth)
  (9, 10, 3, 4, 4, 1, ((1, 1), (1, 1))),  # PatchGAN's stride-1 4x4 head (map shrinks by one)
]


@pytest.mark.parametrize("h,w,c,f,kernel,stride,padding", CASES)
def test_conv_and_gradients_match_xla(h, w, c, f, kernel, stride, padding):
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (2, h, w, c))
  k = jax.random.normal(kk, (kernel, kernel, c, f)) * 0.2
  st = (stride, stride)
  y_ref = _lax(x, k, st, padding)
  y = jax.jit(lambda x, k: C.conv(x, k, st, padding, dimension_numbers=DN))(x, k)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
  cot = jax.random.normal(kc, y_ref.shape)
  dx, dk = _grads(lambda x, k: C.conv(x, k, st, padding), x, k, cot)
  dx_ref, dk_ref = _grads(lambda x, k: _lax(x, k, st, padding), x, k, cot)
  for a, b in ((dx, dx_ref), (dk, dk_ref)):
    _assert_close_at_scale(a, b, atol=2e-6)


def _conv_channels(jaxpr) -> list[tuple[int, ...]]:
  """Every convolution's batch and feature sizes (input, kernel, output) in a jaxpr, nested ones
  included: read through its dimension numbers, as a gradient's conv swaps the roles."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      out = eqn.outvars[0].aval.shape
      dn = eqn.params["dimension_numbers"]
      found.append(tuple(s[i] for s, spec in ((lhs, dn.lhs_spec), (rhs, dn.rhs_spec),
                                               (out, dn.out_spec)) for i in spec[:2]))  # fmt: skip
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _conv_channels(sub)
  return found


# the paper config's narrow convs, small: the encoder's first (6 -> 64), the decoder's last
# (64 -> 3), D's first (3 -> 64, stride 2) and last (512 -> 1 there), VGG's first (3 -> 64), and
# a conv narrow on both sides
NARROW = [
  (9, 11, 6, 16, 7, 1, "SAME"),
  (12, 10, 40, 3, 7, 1, "VALID"),
  (16, 14, 3, 16, 4, 2, ((1, 1), (1, 1))),
  (9, 10, 24, 1, 4, 1, ((1, 1), (1, 1))),
  (10, 9, 3, 16, 3, 1, ((1, 1), (1, 1))),
  (9, 9, 5, 6, 3, 1, "SAME"),
]


@pytest.mark.parametrize("cpu", [True, False], ids=["cpu-grads", "xla-grads"])
@pytest.mark.parametrize("h,w,c,f,kernel,stride,padding", NARROW)
def test_channels_padded_to_a_multiple_are_the_same_conv(
  monkeypatch, h, w, c, f, kernel, stride, padding, cpu
):
  # JAXTALK_CONV_CHANNELS=8 (a GPU study): x and k zero-padded to 8-channel multiples, the
  # output sliced back; against lax on the unpadded operands, with the CPU's own gradients and
  # with XLA's (what a GPU runs)
  monkeypatch.setenv("JAXTALK_CONV_CHANNELS", "8")
  monkeypatch.setattr(C, "on_cpu", lambda: cpu)
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.normal(kx, (8, h, w, c))  # batch 8: a gradient's conv takes it as features
  k = jax.random.normal(kk, (kernel, kernel, c, f)) * 0.2
  st = (stride, stride)
  fn = lambda x, k: C.conv(x, k, st, padding, dimension_numbers=DN)  # noqa: E731
  y_ref = _lax(x, k, st, padding)
  cot = jax.random.normal(kc, y_ref.shape)
  # the padding is really there: the forward's conv is 8-aligned, and so is every conv of
  # XLA's gradients (the CPU's own gradients are products of their own, module docstring)
  convs = _conv_channels(jax.make_jaxpr(fn)(x, k).jaxpr)
  if not cpu:
    convs += _conv_channels(
      jax.make_jaxpr(lambda x, k, g: jax.vjp(fn, x, k)[1](g))(x, k, cot).jaxpr
    )
  assert len(convs) >= (1 if cpu else 3), convs  # forward, then dx and dk
  assert all(n % 8 == 0 for sizes in convs for n in sizes), convs
  y = jax.jit(fn)(x, k)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
  dx, dk = _grads(fn, x, k, cot)
  dx_ref, dk_ref = _grads(lambda x, k: _lax(x, k, st, padding), x, k, cot)
  for a, b in ((dx, dx_ref), (dk, dk_ref)):
    # 1e-5: these tests also run on a GPU, where cuDNN's float32 algorithms differ more
    _assert_close_at_scale(a, b, atol=1e-5)


@pytest.mark.parametrize("c,f", [(40, 48), (48, 40), (4, 6)])
def test_weight_grad_by_taps_off_the_cpu(monkeypatch, c, f):
  # JAXTALK_CONV_WGRAD=taps (a GPU study): the UpConv's 2x2 stride-1 conv, traced as a GPU
  # traces it, takes its weight gradient by per-tap, per-frame matrix products
  # (weight_grad_frames), and its input gradient from XLA
  monkeypatch.setattr(C, "on_cpu", lambda: False)
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(2), 3)
  x = jax.random.normal(kx, (2, 7, 8, c))
  k = jax.random.normal(kk, (2, 2, c, f)) * 0.2
  pads = ((1, 1), (1, 1))
  fn = lambda x, k: C.conv(x, k, (1, 1), pads, dimension_numbers=DN)  # noqa: E731
  y_ref = _lax(x, k, (1, 1), pads)
  cot = jax.random.normal(kc, y_ref.shape)
  # a new function each time: JAX caches a trace by function, and the mode is read in tracing
  backward = lambda: jax.make_jaxpr(lambda x, k, g: jax.vjp(fn, x, k)[1](g))  # noqa: E731
  counts = {}
  for mode in ("xla", "taps"):
    monkeypatch.setenv("JAXTALK_CONV_WGRAD", mode)
    counts[mode] = len(_conv_channels(backward()(x, k, cot).jaxpr))
  # taps: the forward and dx (linear_transpose); xla's vjp adds dk and a primal it discards
  assert counts["taps"] == 2 and counts["xla"] > 2, counts
  dx, dk = _grads(fn, x, k, cot)
  dx_ref, dk_ref = _grads(lambda x, k: _lax(x, k, (1, 1), pads), x, k, cot)
  for a, b in ((dx, dx_ref), (dk, dk_ref)):
    _assert_close_at_scale(a, b, atol=1e-5)
  monkeypatch.setenv("JAXTALK_CONV_WGRAD", "rows")
  with pytest.raises(ValueError, match="JAXTALK_CONV_WGRAD='rows': expected one of"):
    backward()(x, k, cot)


@pytest.mark.parametrize("backend,want", [("gpu", "taps"), ("tpu", "xla"), ("cpu", "xla")])
def test_weight_grad_default_is_taps_on_a_gpu_only(monkeypatch, backend, want):
  # measured faster on the H200 (0.198 against 0.202 s per B = 16 step); unmeasured elsewhere
  monkeypatch.delenv("JAXTALK_CONV_WGRAD", raising=False)
  monkeypatch.setattr(C.jax, "default_backend", lambda: backend)
  assert C.gpu_weight_grad() == want
  other = "xla" if want == "taps" else "taps"
  monkeypatch.setenv("JAXTALK_CONV_WGRAD", f" {other.upper()} ")  # the variable overrides it
  assert C.gpu_weight_grad() == other


def test_model_forms_trace_the_model_as_written(monkeypatch):
  """JAXTALK_CONV_FORMS=xla (what the MFU's FLOPs are counted on) gives XLA's own conv and
  autodiff, whatever the backend and the studies' variables: the same FLOPs as lax's conv and
  its gradients, where those forms and studies change them."""
  from jaxtalk.bench.model import xla_flops  # noqa: PLC0415
  from jaxtalk.models import layers  # noqa: PLC0415

  studies = {
    "JAXTALK_CONV_CHANNELS": "8", "JAXTALK_CONV_BLOCKS": "4", "JAXTALK_CONV_WGRAD": "taps",
    "JAXTALK_REFLECT_CONV": "fold", "JAXTALK_REFLECT_PAD": "padsum",
  }  # fmt: skip
  for name, value in studies.items():
    monkeypatch.setenv(name, value)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  k = jax.random.normal(jax.random.PRNGKey(1), (7, 7, 3, 5))

  def grad_flops(conv_fn):
    loss = lambda x, k: jnp.sum(conv_fn(x, k) ** 2)  # noqa: E731
    return xla_flops(jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, k))

  lax_flops = grad_flops(lambda x, k: _lax(x, k, (1, 1), "SAME"))
  # a new function per trace: JAX reuses a function's trace whatever the environment says
  studied = grad_flops(lambda x, k: C.conv(x, k, (1, 1), "SAME"))
  assert studied > 1.5 * lax_flops  # padded channels, blocks' zero taps: the study is on
  monkeypatch.setenv("JAXTALK_CONV_FORMS", " XLA ")
  assert C.model_forms() and not C.on_cpu()
  assert (C.channel_multiple(), C.block_factor(), C.gpu_weight_grad()) == (1, 1, "xla")
  assert (layers.reflect_mode(), layers.reflect_pad_form()) == ("pad", "concat")
  assert grad_flops(lambda x, k: C.conv(x, k, (1, 1), "SAME")) == lax_flops
  monkeypatch.setenv("JAXTALK_CONV_FORMS", "plain")
  with pytest.raises(ValueError, match="JAXTALK_CONV_FORMS='plain': expected one of"):
    C.on_cpu()


# (h, w, c, f, kernel, padding, r, blocked): the decoder's last conv (64 -> 3 there) SAME and on
# a reflect-padded map (VALID), the encoder's first (6 -> 64), a 5x5 at r = 2 and 4, and where
# the form does not apply: an output not a multiple of r, a kernel smaller than r, no narrow side
BLOCKED = [
  (16, 20, 24, 3, 7, "SAME", 4, True),
  (22, 26, 24, 3, 7, "VALID", 4, True),
  (22, 18, 6, 16, 7, "VALID", 4, True),
  (12, 10, 5, 12, 5, ((2, 2), (2, 2)), 2, True),
  (12, 16, 12, 5, 5, ((1, 3), (2, 2)), 4, True),
  (14, 16, 24, 3, 7, "SAME", 4, False),
  (16, 16, 3, 16, 3, "SAME", 4, False),
  (16, 16, 8, 8, 7, "SAME", 4, False),
]


@pytest.mark.parametrize("h,w,c,f,kernel,padding,r,blocked", BLOCKED)
def test_narrow_convs_by_pixel_blocks_are_the_same_conv(
  monkeypatch, h, w, c, f, kernel, padding, r, blocked
):
  # JAXTALK_CONV_BLOCKS=r (a GPU study), traced as a GPU traces it: a narrow stride-1 conv runs
  # on r x r pixel blocks (space to depth), r² C -> r² F channels; outputs and XLA's gradients
  # against lax's direct conv
  monkeypatch.setenv("JAXTALK_CONV_BLOCKS", str(r))
  monkeypatch.setattr(C, "on_cpu", lambda: False)
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(kx, (2, h, w, c))
  k = jax.random.normal(kk, (kernel, kernel, c, f)) * 0.2
  fn = lambda x, k: C.conv(x, k, (1, 1), padding, dimension_numbers=DN)  # noqa: E731
  y_ref = _lax(x, k, (1, 1), padding)
  # the form is really taken: one conv, over blocks of r² pixels, or the direct conv
  ((_, ci, ko, ki, _, fo),) = _conv_channels(jax.make_jaxpr(fn)(x, k).jaxpr)
  want = (r * r * c, r * r * f) if blocked else (c, f)
  assert (ci, fo) == (ki, ko) == want, ((ci, ki, ko, fo), want)
  y = jax.jit(fn)(x, k)
  assert y.shape == y_ref.shape
  cot = jax.random.normal(kc, y_ref.shape)
  dx, dk = _grads(fn, x, k, cot)
  dx_ref, dk_ref = _grads(lambda x, k: _lax(x, k, (1, 1), padding), x, k, cot)
  for a, b in ((y, y_ref), (dx, dx_ref), (dk, dk_ref)):
    _assert_close_at_scale(a, b, atol=1e-5)


def test_block_factor_typo_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("JAXTALK_CONV_BLOCKS", "four")
  with pytest.raises(ValueError, match="JAXTALK_CONV_BLOCKS='four': expected a positive"):
    C.block_factor()


SHARDED_TAPS = """
import os
import jax
jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from jaxtalk.models import conv as C

C.on_cpu = lambda: False  # the GPU's forms
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
x = jax.random.normal(jax.random.PRNGKey(0), (16, 12, 12, 32))
x = jax.device_put(x, NamedSharding(mesh, P("data")))
k = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 32, 64)) * 0.1
out, ops = {}, {}
for mode in ("xla", "taps"):
  os.environ["JAXTALK_CONV_WGRAD"] = mode
  loss = lambda x, k: jnp.sum(C.conv(x, k, (1, 1), ((1, 1), (1, 1))) ** 2)
  f = jax.jit(jax.grad(loss, argnums=1))  # a new function per mode: traced again
  out[mode] = f(x, k)
  hlo = f.lower(x, k).compile().as_text()
  ops[mode] = {op: hlo.count(op + "(") for op in ("all-reduce", "all-gather", "all-to-all",
                                                 "collective-permute")}
err = float(jnp.max(jnp.abs(out["taps"] - out["xla"])) / jnp.max(jnp.abs(out["xla"])))
print(ops, err)
assert ops["taps"] == ops["xla"] == {"all-reduce": 1, "all-gather": 0, "all-to-all": 0,
                                     "collective-permute": 0}, ops
assert err < 1e-5, err
print("OK")
"""


def test_weight_grad_by_taps_keeps_the_frames_sharded(child_env):
  # weight_grad_frames batches over the frames, the dimension a data-parallel mesh shards: on 8
  # fake devices its gradient needs the one all-reduce XLA's own needs, and nothing gathered
  result = subprocess.run(
    [sys.executable, "-c", SHARDED_TAPS], env=child_env, capture_output=True, text=True,
    timeout=300,
  )  # fmt: skip
  assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_conv_channels_unset_pads_nothing_and_a_typo_is_a_clear_error(monkeypatch):
  x, k = jnp.zeros((1, 8, 8, 3)), jnp.zeros((3, 3, 3, 5))
  monkeypatch.delenv("JAXTALK_CONV_CHANNELS", raising=False)
  jaxpr = jax.make_jaxpr(lambda x, k: C.conv(x, k, (1, 1), "SAME", dimension_numbers=DN))(x, k)
  assert _conv_channels(jaxpr.jaxpr) == [(1, 3, 5, 3, 1, 5)]
  monkeypatch.setenv("JAXTALK_CONV_CHANNELS", "eight")
  with pytest.raises(ValueError, match="JAXTALK_CONV_CHANNELS='eight': expected a positive"):
    C.conv(x, k, (1, 1), "SAME", dimension_numbers=DN)


def _numpy_weight_grad(x, g, kernel, stride, pads):
  """dk[a, b, c, f] = sum over n and output pixels (y, x) of xpad[n, s y + a, s x + b, c] g[n, y,
  x, f]: the definition, in float64."""
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
  g = np.asarray(g, np.float64)
  _, ho, wo, _ = g.shape
  dk = np.zeros((kernel, kernel, x.shape[-1], g.shape[-1]))
  for a in range(kernel):
    for b in range(kernel):
      win = xp[:, a : a + stride * (ho - 1) + 1 : stride, b : b + stride * (wo - 1) + 1 : stride]
      dk[a, b] = np.einsum("nyxc,nyxf->cf", win, g)
  return dk


@pytest.mark.parametrize("c,f,stride", [(40, 33, 1), (3, 64, 1), (64, 3, 1), (5, 64, 2)])
def test_weight_gradient_against_numpy_definition(c, f, stride, monkeypatch):
  # a small im2col chunk, so the loop over chunks of rows runs several times (with a ragged end)
  monkeypatch.setattr(C, "CHUNK_BYTES", 4096)
  kernel, pads = (3, ((1, 1), (1, 1))) if stride == 1 else (4, ((1, 1), (1, 1)))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 9, c))
  k = jax.random.normal(jax.random.PRNGKey(2), (kernel, kernel, c, f))
  st = (stride, stride)
  cot = jax.random.normal(jax.random.PRNGKey(3), _lax(x, k, st, pads).shape)
  _, dk = _grads(lambda x, k: C.conv(x, k, st, pads), x, k, cot)
  ref = _numpy_weight_grad(x, cot, kernel, stride, pads)
  np.testing.assert_allclose(np.asarray(dk), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_unsupported_cases_pass_through_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 9, 4))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 6))
  # grouped, dilated, and a stride that does not divide the kernel
  y = C.conv(x, k, (1, 1), "SAME", None, (2, 2), DN, feature_group_count=2)
  ref = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", None, (2, 2), DN, 2)
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-6)
  k3 = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 4, 6))
  jaxpr = str(jax.make_jaxpr(lambda x: C.conv(x, k3, (2, 2), "SAME", dimension_numbers=DN))(x))
  assert "custom_vjp" not in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda x: C.conv(x, k3, (1, 1), "SAME", dimension_numbers=DN))(x))
  assert "custom_vjp" in jaxpr


def test_flax_conv_with_fast_gradients_and_bf16():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
  plain = nn.Conv(7, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
  fast = nn.Conv(7, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), conv_general_dilated=C.conv)
  v = plain.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, fast.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, v)
  g_fast = jax.jit(jax.grad(lambda v: jnp.sum(fast.apply(v, x) ** 2)))(v)
  g_plain = jax.jit(jax.grad(lambda v: jnp.sum(plain.apply(v, x) ** 2)))(v)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
  # bf16 compute through the per-tap weight gradient: dtypes kept, values close to f32
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 40))
  k = jax.random.normal(jax.random.PRNGKey(3), (4, 4, 40, 36)) * 0.1
  assert C.own_weight_grad(40, 36, 4, 4, 2)
  cot = jnp.ones((2, 4, 4, 36))
  dx, dk = _grads(lambda x, k: C.conv(x, k, (2, 2), ((1, 1), (1, 1))), x, k, cot)
  dxb, dkb = _grads(
    lambda x, k: C.conv(x, k, (2, 2), ((1, 1), (1, 1))),
    x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), cot.astype(jnp.bfloat16),
  )  # fmt: skip
  assert dxb.dtype == dkb.dtype == jnp.bfloat16
  for lo, hi in ((dxb, dx), (dkb, dk)):
    _assert_close_at_scale(lo, hi, atol=0.03)


def test_weight_gradient_choice_follows_the_measurements():
  # paper config (64 base channels): every layer takes its own weight gradient
  assert C.own_weight_grad(6, 64, 7, 7, 1)  # encoder's first conv: XLA 1.5 s, own 0.28 s
  assert C.own_weight_grad(256, 256, 3, 3, 1)
  assert C.own_weight_grad(64, 128, 4, 4, 2)
  assert C.own_weight_grad(64, 3, 7, 7, 1)
  # 8 base channels (tiny, cpu): XLA's generic convolution is as fast or faster ...
  assert not C.own_weight_grad(6, 8, 7, 7, 1)
  assert not C.own_weight_grad(8, 3, 7, 7, 1)
  assert not C.own_weight_grad(8, 16, 4, 4, 2)
  # ... except for even stride-1 kernels, slow in XLA at every width (the UpConv's 2x2)
  assert C.own_weight_grad(16, 32, 2, 2, 1)


def _numpy_conv(x, k, pads):
  """The stride-1 conv (cross-correlation) of x zero-padded by `pads`, in float64."""
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
  kh, kw = k.shape[:2]
  ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  y = np.zeros((x.shape[0], ho, wo, k.shape[-1]))
  for a in range(kh):
    for b in range(kw):
      y += np.einsum(
        "nyxc,cf->nyxf", xp[:, a : a + ho, b : b + wo], np.asarray(k[a, b], np.float64)
      )
  return y


@pytest.mark.parametrize(
  "h,w,c,f,pads",
  [
    (32, 32, 256, 256, ((1, 1), (1, 1))),  # VGG's shape class, maps a multiple of 4
    (47, 42, 256, 384, ((0, 0), (0, 0))),  # VALID, output 45 x 40: the last tile row is cropped
    (37, 45, 384, 256, ((1, 0), (2, 1))),  # uneven padding, odd map
  ],
)
def test_winograd_3x3_matches_the_direct_convolution(h, w, c, f, pads):
  xp_shape = (2, h + sum(pads[0]), w + sum(pads[1]), c)
  assert C.winograd_applies(xp_shape, (3, 3, c, f), (1, 1), jnp.float32)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, h, w, c))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, c, f)) / np.sqrt(9 * c)
  fn = jax.jit(lambda x, k: C.conv(x, k, (1, 1), pads, dimension_numbers=DN))
  # the CPU runs it as Winograd: matrix products, no convolution left in the compiled program
  assert "convolution(" not in fn.lower(x, k).compile().as_text()
  ref = _numpy_conv(x, k, pads)
  y = np.asarray(fn(x, k))
  assert y.shape == ref.shape
  # another summation order: float32 rounding of ~1e-5 of the output's scale
  np.testing.assert_allclose(y / np.abs(ref).max(), ref / np.abs(ref).max(), atol=5e-5)
  cot = jax.random.normal(jax.random.PRNGKey(2), ref.shape)
  got = _grads(lambda x, k: C.conv(x, k, (1, 1), pads), x, k, cot)
  want = _grads(lambda x, k: _lax(x, k, (1, 1), pads), x, k, cot)
  for a, b in zip(got, want, strict=True):
    _assert_close_at_scale(a, b, atol=5e-5)


def test_winograd_only_where_it_pays():
  # narrow layers, other kernels, strides, bf16 and few tiles for the width keep XLA's convolution
  wide = (8, 34, 34, 256)  # the bottleneck at 128²: 8 x 8 x 8 = 512 output tiles
  assert C.winograd_applies(wide, (3, 3, 256, 256), (1, 1), jnp.float32)
  assert not C.winograd_applies((8, 34, 34, 128), (3, 3, 128, 256), (1, 1), jnp.float32)
  assert not C.winograd_applies(wide, (7, 7, 256, 256), (1, 1), jnp.float32)
  assert not C.winograd_applies(wide, (3, 3, 256, 256), (2, 2), jnp.float32)
  assert not C.winograd_applies(wide, (3, 3, 256, 256), (1, 1), jnp.bfloat16)
  assert not C.winograd_applies((8, 18, 18, 512), (3, 3, 512, 512), (1, 1), jnp.float32)  # 128
  x = jnp.ones((8, 32, 32, 256), jnp.bfloat16)
  k = jnp.ones((3, 3, 256, 256), jnp.bfloat16)
  fn = jax.jit(lambda x, k: C.conv(x, k, (1, 1), "SAME", dimension_numbers=DN))
  assert "convolution(" in fn.lower(x, k).compile().as_text()


def test_winograd_transposed_transforms_are_the_adjoints():
  # the weight gradient's own transposes of the output and kernel transforms: <A p, g> = <p, A^T g>
  # for random p and g (float64 sums of float32 products), the property jax.linear_transpose had
  n, th, tw, f, c = 2, 3, 4, 5, 7
  keys = jax.random.split(jax.random.PRNGKey(3), 4)
  p = jax.random.normal(keys[0], (36, n * th * tw, f))
  g = jax.random.normal(keys[1], (n, 4 * th, 4 * tw, f))
  lhs = np.vdot(np.asarray(C._output_tiles(p, n, th, tw), np.float64), np.asarray(g, np.float64))
  rhs = np.vdot(np.asarray(p, np.float64), np.asarray(C._output_tiles_t(g, th, tw), np.float64))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
  k = jax.random.normal(keys[2], (3, 3, c, f))
  u = jax.random.normal(keys[3], (36, c, f))
  lhs = np.vdot(np.asarray(C._kernel_tiles(k), np.float64), np.asarray(u, np.float64))
  rhs = np.vdot(np.asarray(k, np.float64), np.asarray(C._kernel_tiles_t(u), np.float64))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
