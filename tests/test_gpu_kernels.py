"""`jaxtalk bench gpu-kernels` (jaxtalk/bench/gpu_kernels.py): the kernel table read from a GPU
compile's dump, checked on a small hand-written program whose bytes and launch shapes are worked
out below; the GPU's forms traced on the CPU (models/platform.traced_for). The deviceless
compile itself needs JAX's CUDA plugin (3.5 GB), which the test environment does not install."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxtalk.bench import gpu_kernels as gk
from jaxtalk.models.layers import UpConv, reflect_pad
from jaxtalk.models.platform import forms_platform, traced_for

# Three kernels and a conv:
# - loop_add_fusion.3 reads two bf16[4,8] (64 bytes each) and writes one (64): 192 bytes; 32
#   elements over 8 threads, 4 each;
# - input_reduce_fusion.7 reads the f32[16] element of a multi-output fusion (its parameter
#   says which: 64 bytes, not the 4160 of the whole tuple) and writes an f32[] (4): 68 bytes;
#   1 element over 32 threads;
# - gemm_fusion_dot.2, a Triton matrix product: f32[2,4] x f32[4,3] -> f32[2,3], 32 + 48 + 24
#   bytes, not memory-bound.
HLO = """HloModule jit_step, is_scheduled=true

%fused_add.3 (param_0.1: bf16[4,8], param_1.2: bf16[4,8]) -> bf16[4,8] {
  %param_0.1 = bf16[4,8]{1,0} parameter(0)
  %param_1.2 = bf16[4,8]{1,0} parameter(1)
  ROOT %add.1 = bf16[4,8]{1,0} add(%param_0.1, %param_1.2)
}

%fused_reduce.7 (param_0.3: f32[16]) -> f32[] {
  %param_0.3 = f32[16]{0} parameter(0)
  %constant_1 = f32[] constant(0)
  ROOT %reduce.1 = f32[] reduce(%param_0.3, %constant_1), dimensions={0}, to_apply=%add
}

%gemm_fusion_dot.2_computation (parameter_0: f32[2,4], parameter_1: f32[4,3]) -> f32[2,3] {
  %parameter_0 = f32[2,4]{1,0} parameter(0)
  %parameter_1 = f32[4,3]{1,0} parameter(1)
  ROOT %dot.1 = f32[2,3]{1,0} dot(%parameter_0, %parameter_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.9 (x.1: bf16[4,8], y.1: bf16[4,8], m.1: (f32[16], f32[1024]), a.1: f32[2,4], b.1: f32[4,3]) -> bf16[4,8] {
  %x.1 = bf16[4,8]{1,0} parameter(0)
  %y.1 = bf16[4,8]{1,0} parameter(1)
  %m.1 = (f32[16]{0}, f32[1024]{0}) parameter(2)
  %a.1 = f32[2,4]{1,0} parameter(3)
  %b.1 = f32[4,3]{1,0} parameter(4)
  %loop_add_fusion.3 = bf16[4,8]{1,0} fusion(%x.1, %y.1), kind=kLoop, calls=%fused_add.3, metadata={op_name="jit(step)/add"}
  %input_reduce_fusion.7 = f32[] fusion(%m.1#0), kind=kInput, calls=%fused_reduce.7
  %gemm_fusion_dot.2 = f32[2,3]{1,0} fusion(%a.1, %b.1), kind=kCustom, calls=%gemm_fusion_dot.2_computation, backend_config={"fusion_backend_config":{"kind":"__triton_nested_gemm_fusion"}}
  %cudnn-conv.1 = (bf16[4,8]{1,0}, u8[0]{0}) custom-call(%x.1, %y.1), custom_call_target="__cudnn$convForward"
  ROOT %copy.1 = bf16[4,8]{1,0} copy(%loop_add_fusion.3)
}
"""  # noqa: E501
THUNKS = """000: kCopy         [source          | next=001 (1)    ] kCopy
001: kCustomKernel [prev=000 (1)    | next=002 (1)    ] loop_add_fusion_3 grid: [2, 1, 1] threads: [4, 1, 1]  shared_memory: 0 bytes
002: kCustomKernel [prev=001 (1)    | next=003 (1)    ] input_reduce_fusion_7 grid: [1, 1, 1] threads: [32, 1, 1]  shared_memory: 0 bytes
003: kCustomKernel [prev=002 (1)    | next=004 (1)    ] gemm_fusion_dot_2 grid: [1, 2, 1] threads: [64, 1, 1]  shared_memory: 1024 bytes
004: kConvolution  [prev=003 (1)    | next=005 (1)    ] kConvolution
005: kCustomKernel [prev=004 (1)    | next=006 (1)    ] loop_add_fusion_3 grid: [2, 1, 1] threads: [4, 1, 1]  shared_memory: 0 bytes
"""  # noqa: E501


def test_kernels_read_from_a_compiled_programs_dump():
  ks = gk.parse_kernels(HLO, THUNKS)
  assert [(k.name, k.threads, k.elements, k.bytes, k.compute) for k in ks] == [
    ("loop_add_fusion_3", 8, 32, 192, False),
    ("input_reduce_fusion_7", 32, 1, 68, False),
    ("gemm_fusion_dot_2", 128, 6, 104, True),
    ("loop_add_fusion_3", 8, 32, 192, False),  # a second launch of the same kernel
  ]
  assert ks[0].elements_per_thread == 4 and ks[0].family == "loop_add_fusion"
  assert gk.thunk_kinds(THUNKS) == {"kCustomKernel": 4, "kCopy": 1, "kConvolution": 1}


def test_estimate_takes_the_rate_of_the_kernels_kind():
  # 0.9 GB at one element per thread takes 1 ms at 0.9 TB/s; 2.9 GB at four, 1 ms at 2.9 TB/s
  one = gk.Kernel("input_concatenate_fusion_1", 1000, 1000, int(0.9e9), False)
  four = gk.Kernel("loop_add_fusion_1", 1000, 4000, int(2.9e9), False)
  matmul = gk.Kernel("gemm_fusion_dot_1", 1000, 1000, int(1e9), True)
  assert gk.one_per_thread(one) and not gk.one_per_thread(four)
  assert gk.estimate_ms(one) == pytest.approx(1.0) and gk.estimate_ms(four) == pytest.approx(1.0)
  assert gk.estimate_ms(matmul) == 0.0
  s = gk.summary([one, four, matmul])
  assert s["kernels"] == 3 and s["matmul_kernels"] == 1
  assert s["memory_gb"] == pytest.approx(3.8) and s["one_per_thread_gb"] == pytest.approx(0.9)
  assert s["memory_ms"] == pytest.approx(2.0)


def test_difference_is_the_multiset_difference_of_launches():
  a1, a2 = (
    gk.Kernel("loop_add_fusion_1", 8, 32, 100, False),
    gk.Kernel("loop_add_fusion_2", 8, 32, 100, False),
  )
  c = gk.Kernel("input_concatenate_fusion_4", 32, 32, 100, False)
  d = gk.Kernel("loop_add_fusion_9", 8, 32, 50, False)
  # a1 and a2 are the same launch under two names (family, bytes, shape): one of them is matched
  only_a, only_b = gk.difference([a1, c, a2], [a2, d])
  assert only_a == [a1, c] and only_b == [d]  # the first in launch order
  assert gk.difference([a1], [a1]) == ([], [])


def test_no_cuda_plugin_is_a_clear_error(monkeypatch):
  from jax.experimental import topologies

  def absent(*args, **kwargs):
    raise RuntimeError("Unknown backend cuda\nmore detail")

  monkeypatch.setattr(topologies, "get_topology_desc", absent)
  with pytest.raises(SystemExit, match=r"no CUDA compiler .*pip install \"jax\[cuda13\]=="):
    gk.gpu_device("h200")


def test_target_configs_describe_the_cards():
  # the H200 is the H100's GH100 (132 SMs, sm_90) with HBM3e: 4.8 TB/s against 3.35
  for card, bandwidth in (("h100", "3352320000000"), ("h200", "4800000000000")):
    text = gk.CARDS[card]
    assert "core_count: 132" in text and "major: 9" in text
    assert f"memory_bandwidth: {bandwidth}" in text


def _primitives(jaxpr):
  """The primitives of a jaxpr and of the jaxprs nested in it (jnp.pad's jit), depth first."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _primitives(sub)


def test_traced_for_gives_a_gpus_forms_on_the_cpu(monkeypatch):
  # the reflect pad and the UpConv's interleave trace as sums of pads within traced_for("gpu")
  # (their GPU default), as jnp.pad's concatenates and stacks outside it
  for name in ("JAXTALK_REFLECT_PAD", "JAXTALK_UPCONV_INTERLEAVE", "JAXTALK_CONV_FORMS"):
    monkeypatch.delenv(name, raising=False)
  x = jnp.zeros((1, 6, 6, 4))
  model = UpConv(2)
  v = model.init(jax.random.PRNGKey(0), x)

  def prims(fn):
    return list(_primitives(jax.make_jaxpr(fn)(x).jaxpr))

  def forms():
    return prims(lambda x: reflect_pad(x, 1)), prims(lambda x: model.apply(v, x))

  assert forms_platform() == "cpu"
  cpu_pad, cpu_up = forms()
  with traced_for("gpu"):
    assert forms_platform() == "gpu"
    gpu_pad, gpu_up = forms()
  assert forms_platform() == "cpu"
  # jnp.pad's reflection: the edges concatenated; by sums: x and two edges padded, per axis
  assert "concatenate" in cpu_pad and "pad" not in cpu_pad
  assert "concatenate" not in gpu_pad and gpu_pad.count("pad") == 2 * 3
  # the phases stacked (XLA concatenates), or each of the four spread by an interior pad
  assert "stack" in cpu_up and "stack" not in gpu_up
  assert gpu_up.count("pad") - cpu_up.count("pad") == 4
