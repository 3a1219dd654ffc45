"""Exact attention for long token sequences: blockwise (flash-style) on one device, ring attention
over the `seq` mesh axis with `jax.shard_map`, cuDNN on GPU.

All functions take q, k, v as (B, L, H, D) (the layout of flax's MultiHeadDotProductAttention)
and compute softmax(q k^T / sqrt(D)) v over all keys: the dependency module attends
bidirectionally, so there is no mask.

* `blockwise_attention`: K/V are visited in chunks of `block` keys with an online softmax
  (running max and log-sum-exp), so the (Lq, Lk) logits never exist at once; the backward pass
  (a custom VJP, flash-attention 2 style) keeps only q, k, v, the output and its log-sum-exp and
  recomputes each chunk's probabilities. Memory O(B * H * Lq * block) instead of O(B * H * Lq * Lk).
* `ring_attention`: inside shard_map, each `seq` device holds L/n queries and L/n keys/values.
  n steps: attend to the K/V block held, merge by log-sum-exp, pass K/V to the next device with
  `lax.ppermute`. The backward pass runs the same ring and sends the K/V gradient accumulators
  along with K/V, so after n hops each device holds the full gradient of its own block. No device
  ever holds more than two K/V blocks, and no all-gather of the sequence happens.
* `make_attention_fn`: the `attention_fn` the transformer blocks call; it picks ring attention
  when the token sharding splits tokens over a mesh axis of size > 1, else the one-device kind.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from jaxtalk.models.platform import forms_platform

KINDS = ("auto", "blockwise", "dense", "xla", "cudnn")
_F32 = jnp.float32


def chunk_size(n: int, block: int) -> int:
  """The largest divisor of n that is <= block (so chunks tile n exactly, no padding/masking)."""
  block = max(1, min(block, n))
  for c in range(block, 0, -1):
    if n % c == 0:
      return c
  return 1


def dense_attention(q_blhd: jax.Array, k_blhd: jax.Array, v_blhd: jax.Array) -> jax.Array:
  """Plain softmax attention with f32 logits: the reference (materialises (B, H, Lq, Lk))."""
  scale = 1.0 / math.sqrt(q_blhd.shape[-1])
  s_bhqk = jnp.einsum("bqhd,bkhd->bhqk", q_blhd, k_blhd, preferred_element_type=_F32) * scale
  p_bhqk = jax.nn.softmax(s_bhqk, axis=-1)
  o = jnp.einsum("bhqk,bkhd->bqhd", p_bhqk, v_blhd.astype(_F32))
  return o.astype(q_blhd.dtype)


# --------------------------------------------------------------------------------------------
# One K/V block against all local queries (the kernel both the one-device and the ring scheme use)


def _chunks(x_blhd: jax.Array, c: int) -> jax.Array:
  """(B, L, H, D) -> (L/c, B, c, H, D): the scan axis first."""
  b, n, h, d = x_blhd.shape
  return jnp.moveaxis(x_blhd.reshape(b, n // c, c, h, d), 1, 0)


def _block_fwd(q, k, v, block: int) -> tuple[jax.Array, jax.Array]:
  """Attention of q (already scaled) over one K/V block, in chunks of keys.

  Returns the normalised output (B, Lq, H, D) f32 and its log-sum-exp (B, H, Lq) f32.
  """
  b, lq, h, d = q.shape
  c = chunk_size(k.shape[1], block)

  def body(carry, kv):
    acc, m, s_sum = carry
    kc, vc = kv
    s = jnp.einsum("bqhd,bkhd->bhqk", q, kc, preferred_element_type=_F32)
    m_new = jnp.maximum(m, s.max(-1))
    corr = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    s_sum = s_sum * corr + p.sum(-1)
    pv = jnp.einsum("bhqk,bkhd->bqhd", p, vc, preferred_element_type=_F32)
    acc = acc * jnp.swapaxes(corr, 1, 2)[..., None] + pv
    return (acc, m_new, s_sum), None

  init = (
    jnp.zeros((b, lq, h, d), _F32),
    jnp.full((b, h, lq), -jnp.inf, _F32),
    jnp.zeros((b, h, lq), _F32),
  )
  (acc, m, s_sum), _ = jax.lax.scan(body, init, (_chunks(k, c), _chunks(v, c)))
  o = acc / jnp.swapaxes(s_sum, 1, 2)[..., None]
  return o, m + jnp.log(s_sum)


def _block_bwd(q, k, v, do, lse, delta, block: int):
  """Gradients of one K/V block's contribution: dq (B, Lq, H, D) and dk, dv of the block, f32.

  p = exp(s - lse) are the *final* probabilities (lse over all keys), so the per-block terms
  add up exactly: ds = p * (do.v - delta) with delta = sum(do * o).
  """
  c = chunk_size(k.shape[1], block)

  def body(dq, kv):
    kc, vc = kv
    s = jnp.einsum("bqhd,bkhd->bhqk", q, kc, preferred_element_type=_F32)
    p = jnp.exp(s - lse[..., None])
    dv = jnp.einsum("bhqk,bqhd->bkhd", p, do, preferred_element_type=_F32)
    dp = jnp.einsum("bqhd,bkhd->bhqk", do, vc, preferred_element_type=_F32)
    ds = p * (dp - delta[..., None])
    dq = dq + jnp.einsum("bhqk,bkhd->bqhd", ds, kc, preferred_element_type=_F32)
    dk = jnp.einsum("bhqk,bqhd->bkhd", ds, q, preferred_element_type=_F32)
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(q.shape, _F32), (_chunks(k, c), _chunks(v, c)))
  unchunk = lambda x: jnp.moveaxis(x, 0, 1).reshape(k.shape)  # noqa: E731
  return dq, unchunk(dk), unchunk(dv)


def _merge(o, lse, o_b, lse_b):
  """Two partial softmax results over disjoint key sets -> the result over their union."""
  lse_new = jnp.logaddexp(lse, lse_b)
  w = jnp.swapaxes(jnp.exp(lse - lse_new), 1, 2)[..., None]
  w_b = jnp.swapaxes(jnp.exp(lse_b - lse_new), 1, 2)[..., None]
  return o * w + o_b * w_b, lse_new


# --------------------------------------------------------------------------------------------
# The ring (axis_name=None: one device, the same code without communication)


def _axis_size(axis_name: str | None) -> int:
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def _rotate(xs, axis_name: str, n: int):
  perm = [(i, (i + 1) % n) for i in range(n)]
  return jax.tree.map(lambda x: jax.lax.ppermute(x, axis_name, perm), xs)


def _ring_fwd_impl(q, k, v, axis_name, block):
  n = _axis_size(axis_name)
  o, lse = _block_fwd(q, k, v, block)
  if n > 1:

    def step(carry, _):
      o, lse, k, v = carry
      k, v = _rotate((k, v), axis_name, n)
      o_b, lse_b = _block_fwd(q, k, v, block)
      o, lse = _merge(o, lse, o_b, lse_b)
      return (o, lse, k, v), None

    (o, lse, _, _), _ = jax.lax.scan(step, (o, lse, k, v), None, length=n - 1)
  return o, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _ring(q, k, v, axis_name, block):
  o, _ = _ring_fwd_impl(q, k, v, axis_name, block)
  return o.astype(q.dtype)


def _ring_fwd(q, k, v, axis_name, block):
  o, lse = _ring_fwd_impl(q, k, v, axis_name, block)
  o = o.astype(q.dtype)
  return o, (q, k, v, o, lse)


def _ring_bwd(axis_name, block, res, do):
  q, k, v, o, lse = res
  n = _axis_size(axis_name)
  do = do.astype(_F32)
  delta = jnp.swapaxes(jnp.sum(do * o.astype(_F32), -1), 1, 2)  # (B, H, Lq)
  dq, dk, dv = _block_bwd(q, k, v, do, lse, delta, block)
  if n > 1:
    # the K/V block and its gradient accumulator travel together; after n hops both are home
    def step(carry, _):
      dq, k, v, dk, dv = carry
      k, v, dk, dv = _rotate((k, v, dk, dv), axis_name, n)
      dq_b, dk_b, dv_b = _block_bwd(q, k, v, do, lse, delta, block)
      return (dq + dq_b, k, v, dk + dk_b, dv + dv_b), None

    (dq, _, _, dk, dv), _ = jax.lax.scan(step, (dq, k, v, dk, dv), None, length=n - 1)
    dk, dv = _rotate((dk, dv), axis_name, n)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_ring.defvjp(_ring_fwd, _ring_bwd)


def blockwise_attention(
  q_blhd: jax.Array, k_blhd: jax.Array, v_blhd: jax.Array, block: int = 512
) -> jax.Array:
  """Exact attention on one device, memory O(Lq * block) per head (forward and backward)."""
  scale = 1.0 / math.sqrt(q_blhd.shape[-1])
  return _ring(q_blhd * jnp.asarray(scale, q_blhd.dtype), k_blhd, v_blhd, None, block)


def ring_attention(
  q_blhd: jax.Array, k_blhd: jax.Array, v_blhd: jax.Array, axis_name: str, block: int = 512
) -> jax.Array:
  """Ring attention on the local blocks; call inside shard_map with tokens split over
  `axis_name` (each device: its L/n queries, keys and values, in sequence order or not: full
  attention does not care which block is whose)."""
  scale = 1.0 / math.sqrt(q_blhd.shape[-1])
  return _ring(q_blhd * jnp.asarray(scale, q_blhd.dtype), k_blhd, v_blhd, axis_name, block)


def sharded_ring_attention(
  q_blhd: jax.Array,
  k_blhd: jax.Array,
  v_blhd: jax.Array,
  *,
  mesh: Any,
  batch_axis: Any,
  seq_axis: str,
  block: int = 512,
) -> jax.Array:
  """Ring attention over global (B, L, H, D) arrays: batch over `batch_axis` (data parallel,
  None: replicated), tokens over `seq_axis`. mesh=None uses the mesh set with jax.set_mesh."""
  spec = PartitionSpec(batch_axis, seq_axis, None, None)
  fn = jax.shard_map(
    functools.partial(ring_attention, axis_name=seq_axis, block=block),
    mesh=mesh,
    in_specs=(spec, spec, spec),
    out_specs=spec,
    check_vma=False,
  )
  return fn(q_blhd, k_blhd, v_blhd)


# --------------------------------------------------------------------------------------------
# The attention_fn of the transformer blocks


def _seq_split(token_sharding: Any) -> tuple[Any, Any, Any] | None:
  """(mesh or None, batch axis, seq axis) when a (B, L, d) token sharding splits L over a mesh
  axis of size > 1; None otherwise."""
  if token_sharding is None:
    return None
  if isinstance(token_sharding, NamedSharding):
    mesh, spec = token_sharding.mesh, token_sharding.spec
  elif isinstance(token_sharding, PartitionSpec):
    mesh, spec = None, token_sharding
  else:
    return None
  if len(spec) < 2 or spec[1] is None:
    return None
  seq_axis = spec[1]
  if isinstance(seq_axis, tuple):
    if len(seq_axis) != 1:
      return None  # a token axis split over several mesh axes: left to XLA
    seq_axis = seq_axis[0]
  sizes = (mesh if mesh is not None else jax.sharding.get_abstract_mesh()).shape
  if sizes.get(seq_axis, 1) == 1:
    return None
  return mesh, spec[0], seq_axis


def _one_device(kind: str, block: int) -> Callable[..., jax.Array]:
  if kind == "dense":
    return dense_attention
  if kind == "xla":
    return functools.partial(jax.nn.dot_product_attention, implementation="xla")
  if kind == "cudnn":
    return functools.partial(jax.nn.dot_product_attention, implementation="cudnn")
  if kind == "auto" and forms_platform() == "gpu":
    return functools.partial(_cudnn_or_blockwise, block=block)
  return functools.partial(blockwise_attention, block=block)


def _cudnn_or_blockwise(q, k, v, block: int) -> jax.Array:
  # cuDNN's fused kernel takes fp16/bf16 only and some head sizes; when it refuses at trace
  # time, the blockwise kernel gives the same numbers
  if q.dtype in (jnp.bfloat16, jnp.float16):
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    except Exception:  # noqa: BLE001 - any refusal means "not available here"
      pass
  return blockwise_attention(q, k, v, block)


def make_attention_fn(
  kind: str = "auto", block: int = 512, token_sharding: Any = None
) -> Callable[..., jax.Array]:
  """The `attention_fn` for flax's MultiHeadDotProductAttention (q, k, v: (B, L, H, D)).

  kind: "auto" (ring over the token sharding's seq axis when it is split, else cuDNN on GPU for
  bf16/f16 and blockwise otherwise), "blockwise" (ring when split, else blockwise), "dense" (plain
  attention; under a seq sharding XLA gathers K/V, the pre-ring behaviour), "xla" / "cudnn"
  (jax.nn.dot_product_attention's implementations). block: keys per chunk.
  """
  if kind not in KINDS:
    raise ValueError(f"attention must be one of {KINDS}, got {kind!r}")

  def attention_fn(query, key, value, bias=None, mask=None, dtype=None):
    del dtype  # outputs keep the inputs' dtype; logits and softmax are f32 inside
    if bias is not None or mask is not None:
      raise ValueError("the long-sequence attention kernels take no bias or mask")
    split = _seq_split(token_sharding) if kind in ("auto", "blockwise") else None
    if split is not None:
      mesh, batch_axis, seq_axis = split
      return sharded_ring_attention(
        query, key, value, mesh=mesh, batch_axis=batch_axis, seq_axis=seq_axis, block=block
      )
    return _one_device(kind, block)(query, key, value)

  return attention_fn
