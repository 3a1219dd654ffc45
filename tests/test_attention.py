"""Long-sequence attention (jaxtalk/models/attention.py) and temporal embeddings for any T.

References are independent: a NumPy softmax attention, and jax.grad of the plain (materialised)
attention for the gradients that the custom VJPs compute by hand.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.models import attention as A
from jaxtalk.models.renderer import (
  DependencyModule,
  renderer_from_config,
  sinusoidal_embedding,
  temporal_embedding,
)
from jaxtalk.train.checkpoint import Checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]


def numpy_attention(q, k, v):
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


def qkv(b=2, n=48, h=2, d=8, seed=0):
  rng = np.random.default_rng(seed)
  # a spread of logit scales so the online max/rescaling actually matters
  return [jnp.asarray(rng.normal(size=(b, n, h, d)) * s, jnp.float32) for s in (3.0, 3.0, 1.0)]


def test_chunk_size_tiles_exactly():
  assert A.chunk_size(48, 20) == 16
  assert A.chunk_size(7, 4) == 1
  assert A.chunk_size(64, 512) == 64


@pytest.mark.parametrize("block", [48, 20, 7])
def test_blockwise_equals_numpy_forward_and_dense_gradients(block):
  q, k, v = qkv()
  out = jax.jit(lambda q, k, v: A.blockwise_attention(q, k, v, block))(q, k, v)
  np.testing.assert_allclose(np.asarray(out), numpy_attention(q, k, v), atol=2e-5)

  ct = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
  grads = jax.grad(lambda *a: jnp.sum(A.blockwise_attention(*a, block) * ct), (0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: jnp.sum(A.dense_attention(*a) * ct), (0, 1, 2))(q, k, v)
  for g, r in zip(grads, ref):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=5e-5, rtol=1e-4)


def test_blockwise_bf16_close_to_f32():
  q, k, v = qkv()
  q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (q, k, v))
  out = A.blockwise_attention(q16, k16, v16, 16)
  assert out.dtype == jnp.bfloat16
  # against exact attention of the same rounded inputs: logits and softmax stay f32 inside, so
  # what is left is the bf16 rounding of the output (2^-9 relative of |v| <= ~4)
  ref = numpy_attention(*(np.asarray(x, np.float32) for x in (q16, k16, v16)))
  err = np.abs(np.asarray(out, np.float32) - ref)
  # plus the rounding of q / sqrt(D) to bf16 before the kernel
  assert err.max() < 0.04, err.max()


def test_blockwise_backward_memory_is_linear_in_length():
  # the whole point: the compiled gradient of plain attention holds (B, H, L, L) logits and
  # probabilities; the blockwise one only (B, H, L, block) at a time
  n, block = 2048, 64
  q = jax.ShapeDtypeStruct((1, n, 2, 16), jnp.float32)

  def temp_bytes(fn):
    g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2)))
    return g.lower(q, q, q).compile().memory_analysis().temp_size_in_bytes

  dense = temp_bytes(A.dense_attention)
  blockwise = temp_bytes(lambda q, k, v: A.blockwise_attention(q, k, v, block))
  logits = 2 * n * n * 4  # one f32 (H, L, L) array
  assert dense >= logits, dense
  assert blockwise < logits / 2 and blockwise < dense / 8, (blockwise, dense)


def test_attention_fn_rejects_masks_and_unknown_kinds():
  with pytest.raises(ValueError, match="attention must be"):
    A.make_attention_fn("flash3")
  q, k, v = qkv(n=8)
  with pytest.raises(ValueError, match="no bias or mask"):
    A.make_attention_fn("blockwise")(q, k, v, mask=jnp.ones((8, 8), bool))


RING_CHILD = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from jaxtalk.models import attention as A
  from jaxtalk import sharding as S

  assert len(jax.devices()) == 8
  rng = np.random.default_rng(0)
  b, n, h, d = 4, 64, 2, 8
  q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, d)) * s, jnp.float32) for s in (3, 3, 1))
  ct = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  loss = lambda f: (lambda *a: jnp.sum(f(*a) * ct))
  ref = A.dense_attention(q, k, v)
  gref = jax.grad(loss(A.dense_attention), (0, 1, 2))(q, k, v)
  for data, seq, named in [(2, 4, True), (1, 8, False), (4, 2, True)]:
    mesh = S.make_mesh(data, seq)
    with jax.set_mesh(mesh):
      tokens = NamedSharding(mesh, S.TOKENS) if named else S.TOKENS
      fn = A.make_attention_fn("auto", block=4, token_sharding=tokens)
      xs = [jax.device_put(x, NamedSharding(mesh, P("data", "seq"))) for x in (q, k, v)]
      out = jax.jit(fn)(*xs)
      g = jax.jit(jax.grad(loss(fn), (0, 1, 2)))
      grads = g(*xs)
      hlo = g.lower(*xs).compile().as_text()
    assert "collective-permute" in hlo and "all-gather" not in hlo, "not a ring"
    err = float(np.abs(np.asarray(out) - np.asarray(ref)).max())
    gerr = max(float(np.abs(np.asarray(a) - np.asarray(r)).max()) for a, r in zip(grads, gref))
    print(f"data={data} seq={seq} forward {err:.1e} grads {gerr:.1e}")
    assert err < 1e-5 and gerr < 1e-4, (err, gerr)
  print("OK")
  """
)


def test_ring_attention_equals_dense_on_8_devices():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  result = subprocess.run(
    [sys.executable, "-c", RING_CHILD], env=env, cwd=REPO, capture_output=True, text=True,
    timeout=300,
  )  # fmt: skip
  assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
  print(result.stdout)


# --------------------------------------------------------------------------------------------
# Temporal embeddings: any T


def test_sinusoidal_embedding_formula_and_prefix():
  t, d = 50, 10
  pos = np.arange(t)[:, None]
  w = 10000.0 ** (-np.arange(d // 2) / (d // 2))
  ref = np.concatenate([np.sin(pos * w), np.cos(pos * w)], axis=1)
  np.testing.assert_allclose(np.asarray(sinusoidal_embedding(t, d)), ref, atol=2e-5)
  # frame k's embedding does not depend on the sequence length
  np.testing.assert_array_equal(sinusoidal_embedding(7, d), sinusoidal_embedding(t, d)[:7])


def test_learned_table_sliced_within_and_resampled_beyond():
  m = DependencyModule(patches=1, token_dim=8, depth=1, num_heads=2, max_frames=4,
                       temporal_pos="learned")  # fmt: skip
  x = jnp.ones((1, 2, 2, 2, 4))
  table = np.asarray(m.init(jax.random.PRNGKey(0), x)["params"]["temporal_pos"])
  assert table.shape == (4, 8)
  np.testing.assert_array_equal(temporal_embedding("learned", 3, 8, table), table[:3])
  long = np.asarray(temporal_embedding("learned", 10, 8, jnp.asarray(table)))
  assert long.shape == (10, 8)
  # linear resampling: every row lies between the table's extremes, the first stays near row 0
  assert np.all(long.min(0) >= table.min(0) - 1e-6) and np.all(long.max(0) <= table.max(0) + 1e-6)
  assert np.abs(long[0] - table[0]).max() < np.abs(table[1] - table[0]).max() + 1e-6
  with pytest.raises(ValueError, match="temporal_pos"):
    temporal_embedding("rotary", 3, 8)


def test_checkpoint_trained_at_one_length_runs_at_another(tmp_path):
  cfg = load_config("tiny")
  short, long_t = 4, cfg.model.renderer.max_frames * 2 + 2  # beyond the old cap
  h = cfg.data.image_size
  model = renderer_from_config(cfg)

  def frames(t, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1, t, h, h, 3)).astype(np.float32)
    a = rng.normal(size=(1, t, cfg.data.audio_window, cfg.data.n_mels)).astype(np.float32)
    return x, x[..., ::-1], a

  params = jax.jit(model.init)(jax.random.PRNGKey(0), *frames(short, 0))
  with Checkpoints(tmp_path, keep=1, async_save=False) as ckpt:
    ckpt.save(1, params, None, {"seq_len": short})
  # the abstract state for the long sequence is the same tree: no T-shaped parameter
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), *frames(long_t, 1))
  with Checkpoints(tmp_path, keep=1, async_save=False) as ckpt:
    restored, meta = ckpt.restore(abstract, None)
  assert meta["seq_len"] == short
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  x_long = frames(long_t, 2)
  out = jax.jit(model.apply)(restored, *x_long)
  assert out.shape == (1, long_t, h, h, 3) and np.isfinite(np.asarray(out)).all()
  # and the long sequence really uses its context: changing the last frame moves the first
  bumped = [x.copy() for x in x_long]
  bumped[0][:, -1] = np.random.default_rng(3).uniform(-1, 1, bumped[0][:, -1].shape)
  out2 = jax.jit(model.apply)(restored, *bumped)
  assert np.abs(np.asarray(out2)[:, 0] - np.asarray(out)[:, 0]).max() > 1e-5
