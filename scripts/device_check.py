"""Accelerator figures for issue 10, in one process: renderer frames/s (256², bf16, several
batch sizes), the paper-config train step time and its MFU, and peak device memory.

  python scripts/device_check.py                 # on the GPU (paper config, 256², bf16)
  python scripts/device_check.py --cpu           # small CPU smoke run of every code path

MFU = model FLOPs per step / step time / peak FLOP/s. The model FLOPs per train step are XLA's
cost analysis of the whole stage-1 step's program before optimisation, lowered on the CPU
backend with the model as written (JAXTALK_CONV_FORMS=xla: XLA's convolutions and their
autodiff, no study; jaxtalk/bench/train.step_model_gflops): G forward and backward, D on the
generated frames inside the generator's loss (forward and the gradient to its input: D's
weights are constants there), D's update on real and generated frames, the perceptual VGG16
forward on both images and its gradient to the generated one (frozen: no weight gradient),
the Adam updates. Nothing is recomputed (remat off). Until 2026-11-27 the count was
3 G + 9 D + 4 VGG forwards, with G's forward counted in the CPU's forms: 4195 instead of 3733
GFLOP per 256² clip, 12 % too many (docs/benchmarks.md, "The MFU's FLOPs, recounted"). The
peak is the card's dense bf16 figure (--peak-tflops to override).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import glob
import gzip
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# dense bf16 tensor-core peaks (TFLOP/s), by a substring of jax's device_kind
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0}


def _peak(device_kind: str, override: float | None) -> float | None:
  if override:
    return override * 1e12
  for name, tflops in PEAK_BF16_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return tflops * 1e12
  return None


def _mem() -> str:
  import jax  # noqa: PLC0415

  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return f"{stats['peak_bytes_in_use'] / 2**30:.2f} GiB device peak"
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return f"{rss:.2f} GiB host peak RSS (no device memory stats on this backend)"


def _count_flops(config: str, size: int, t: int, dtype: str, vgg: bool, train_bs: list) -> dict:
  """GFLOPs from XLA's cost analysis before optimisation, of the model as written
  (bench/model.model_gflops): the forward per clip of t frames of the renderer (g), the
  discriminator (d) and the perceptual network (vgg), for the renderer's TFLOP/s and the
  breakdown; and the whole stage-1 train step at each batch in train_bs (step: {B: GFLOP}),
  for the MFU (bench/train.step_model_gflops)."""
  from jaxtalk.bench import model as bench_model  # noqa: PLC0415
  from jaxtalk.bench.train import step_model_gflops, write_step_dataset  # noqa: PLC0415
  from jaxtalk.config import load_config  # noqa: PLC0415
  from jaxtalk.model_io import perceptual_module  # noqa: PLC0415
  from jaxtalk.models.discriminator import discriminator_from_config  # noqa: PLC0415
  from jaxtalk.models.renderer import renderer_from_config  # noqa: PLC0415

  cfg = load_config(config)
  cfg.data.image_size = size
  cfg.model.dtype = dtype
  cfg.train.seq_len = t
  window, n_mels = cfg.data.audio_window, cfg.data.n_mels
  img, aud = (1, t, size, size, 3), (1, t, window, n_mels)

  gflop = bench_model.module_gflops
  out = {
    "g": gflop(renderer_from_config(cfg), img, img, aud),
    "d": gflop(discriminator_from_config(cfg), img),
    "vgg": gflop(perceptual_module(cfg), img) if vgg else 0.0,
    "step": {},
  }
  with tempfile.TemporaryDirectory(prefix="jaxtalk-count-flops-") as tmp:
    write_step_dataset(cfg, tmp + "/ds")
    for b in train_bs:
      cfg.train.batch_size = b
      out["step"][str(b)] = step_model_gflops(cfg, tmp + "/ds", 1, vgg, random_vgg=True)
  return out


def _clip_gflops(config: str, size: int, t: int, dtype: str, vgg: bool, train_bs: list) -> dict:
  """_count_flops on the CPU backend, in a subprocess: on an H200 (jax 0.11.2) the lowered
  program's cost analysis gave NaN and the compiled one omits the convolutions handed to
  cuDNN (23.6 instead of 834 GFLOP for the 256² renderer's 8 frames)."""
  job = json.dumps(
    {"config": config, "size": size, "t": t, "dtype": dtype, "vgg": vgg, "train_bs": train_bs}
  )
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, __file__, "--count-flops", job], env=env,
                     capture_output=True, text=True)  # fmt: skip
  if r.returncode != 0:
    raise RuntimeError(f"FLOP count failed:\n{r.stderr[-2000:]}")
  return json.loads(r.stdout.strip().splitlines()[-1])


# kernel name -> kind, first match wins (cuDNN/CUTLASS convolutions, cuBLAS/Triton matmuls,
# XLA's own fused elementwise/reduction kernels, data movement)
_KINDS = (
  ("conv", re.compile(r"conv(?!ert)|fprop|dgrad|wgrad|cudnn|implicit_gemm|winograd", re.I)),
  ("matmul", re.compile(r"gemm|cublas|nvjet|xmma|matmul|dot", re.I)),
  ("copy/transpose", re.compile(r"copy|memcpy|memset|transpose|concatenate|slice|pad", re.I)),
  ("fusion", re.compile(r"fusion|reduce|loop|input|kernel", re.I)),
)


def _kind(name: str) -> str:
  return next((k for k, pat in _KINDS if pat.search(name)), "other")


def summarise_trace(trace_dir: str, steps: int, top: int = 25) -> str:
  """Where a traced run's device time goes, from the Perfetto trace jax.profiler writes: time per
  step by kernel kind and for the `top` kernels, and how busy the device was over the span of
  its kernels (union of kernel intervals on all of its streams / that span). On a CPU backend
  (no device process) the host's XLA thunks are summarised instead."""
  files = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))
  if not files:
    return f"no trace under {trace_dir}"
  with gzip.open(files[-1]) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  procs = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}  # fmt: skip
  device = {p for p, n in procs.items() if re.search(r"/device:(GPU|TPU)", n)}
  if not device:
    device = {p for p, n in procs.items() if n.startswith("/host:CPU")}
  threads = {
    (e["pid"], e.get("tid")): e["args"]["name"]
    for e in events
    if e.get("ph") == "M" and e.get("name") == "thread_name" and e["pid"] in device
  }
  # a GPU's process also holds derived lines ("XLA Modules", "XLA Ops") over the same time as
  # its streams' kernels: kernels are read from the streams, HLO ops from "XLA Ops"
  streams = {k for k, n in threads.items() if "stream" in n.lower()}
  ops_line = {k for k, n in threads.items() if n == "XLA Ops"}

  def on(keys):
    return [e for e in events if e.get("ph") == "X" and e.get("dur")
            and (e["pid"], e.get("tid")) in keys]  # fmt: skip

  # on a CPU: XLA's kernels, not the Python frames and the executor's own spans around them
  spans = on(streams) or [
    e for e in events if e.get("ph") == "X" and e.get("pid") in device and e.get("dur")
    and not e["name"].startswith(("$", "ThunkExecutor", "np.", "PjitFunction"))
  ]  # fmt: skip
  if not spans:
    return f"no device events in {files[-1]} (processes: {sorted(procs.values())})"

  def table(evs):
    acc: dict = collections.defaultdict(lambda: [0.0, 0])
    for e in evs:
      acc[e["name"]][0] += e["dur"]
      acc[e["name"]][1] += 1
    return sorted(acc.items(), key=lambda kv: -kv[1][0])

  by_name = table(spans)
  by_kind: dict = collections.Counter()
  for name, (us, _) in by_name:
    by_kind[_kind(name)] += us
  busy, end = 0.0, -1.0
  for e in sorted(spans, key=lambda e: e["ts"]):  # union of intervals
    s, t = e["ts"], e["ts"] + e["dur"]
    busy += max(0.0, t - max(s, end))
    end = max(end, t)
  span = max(e["ts"] + e["dur"] for e in spans) - min(e["ts"] for e in spans)
  total = sum(by_kind.values())
  lines = [
    f"trace {files[-1]}: {len(spans)} device events over {steps} steps; the device busy "
    f"{busy / 1e3 / steps:.2f} ms per step of a {span / 1e3 / steps:.2f} ms span "
    f"({100 * busy / span:.0f} %); kernel time per step {total / 1e3 / steps:.2f} ms:",
    "  by kind: " + ", ".join(
      f"{k} {v / 1e3 / steps:.2f} ms ({100 * v / total:.0f} %)" for k, v in by_kind.most_common()
    ),
    f"  top {top} kernels (ms per step, launches per step, kind):",
  ]  # fmt: skip
  for name, (us, n) in by_name[:top]:
    lines.append(f"    {us / 1e3 / steps:8.3f} {n / steps:6.1f}  {_kind(name):14s} {name[:110]}")
  # each kernel's JAX op (args.name: the name stack, e.g. transpose(jvp(Renderer))/decoder/
  # ConvTranspose_1/...; a fusion has only its kernel's name) with its largest kernel's grid: how
  # the B = 32 trace named the UpConv weight gradients' 64-block kernels (docs/benchmarks.md)
  by_op: dict = collections.defaultdict(lambda: [0.0, 0, collections.Counter(), 0.0, ""])
  for e in spans:
    args = e.get("args") or {}
    rec = by_op[args.get("name") or e["name"]]  # hlo_op: often a whole command buffer
    rec[0] += e["dur"]
    rec[1] += 1
    rec[2][_kind(e["name"])] += e["dur"]
    if e["dur"] > rec[3]:
      grid = re.search(r"grid:([0-9,]+)", args.get("kernel_details", ""))
      rec[3], rec[4] = e["dur"], grid.group(1) if grid else ""
  if any((e.get("args") or {}).get("name") for e in spans):
    lines.append(
      f"  top {top} JAX ops (ms per step, kernels per step, kind, largest kernel's grid):"
    )
    for op, (us, n, kinds, _, grid) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]:
      op = re.sub(r"^jit\([^)]*\)/", "", op)
      kind = kinds.most_common(1)[0][0]
      lines.append(
        f"    {us / 1e3 / steps:8.3f} {n / steps:6.1f}  {kind:14s} {grid:>12s}  {op[-100:]}"
      )
  if ops_line:
    lines.append(f"  top {top} HLO ops (XLA Ops line; ms per step, runs per step):")
    for name, (us, n) in table(on(ops_line))[:top]:
      lines.append(f"    {us / 1e3 / steps:8.3f} {n / steps:6.1f}  {name[:110]}")
  return "\n".join(lines)


# the paper config's convs that the H200's profiles found slow for their FLOPs, at 256² (after
# reflect padding by 3 for the 7x7s): the narrow ones (sm80 kernels), and the decoder's two
# UpConv 2x2s, whose weight gradients cuDNN ran on 64 and 128 thread blocks. Name, input (H, W,
# C), kernel (kh, kw, C, F), stride, zero pads, which gradients a train step takes of it.
STUDY_CONVS = (
  ("decoder 7x7 64->3", (262, 262, 64), (7, 7, 64, 3), 1, ((0, 0), (0, 0)), "xk"),
  ("encoder 7x7 6->64", (262, 262, 6), (7, 7, 6, 64), 1, ((0, 0), (0, 0)), "k"),
  ("VGG conv1_1 3x3 3->64", (256, 256, 3), (3, 3, 3, 64), 1, ((1, 1), (1, 1)), "x"),
  ("D conv1 4x4/2 3->64", (256, 256, 3), (4, 4, 3, 64), 2, ((1, 1), (1, 1)), "xk"),
  ("UpConv 2x2 256->512 (64²)", (64, 64, 256), (2, 2, 256, 512), 1, ((1, 1), (1, 1)), "xk"),
  ("UpConv 2x2 128->256 (128²)", (128, 128, 128), (2, 2, 128, 256), 1, ((1, 1), (1, 1)), "xk"),
)
# the forms the convs are timed in (--conv-variants), where they apply: XLA's conv (cuDNN on a
# GPU) as it is; the library's conv with its channels zero-padded to multiples of N (chN:
# JAXTALK_CONV_CHANNELS=N), its even kernels' weight gradient by matrix products (taps:
# JAXTALK_CONV_WGRAD=taps), or its narrow convs on N x N pixel blocks (blocksN:
# JAXTALK_CONV_BLOCKS=N); `narrow_conv`'s matrix products (matmul, stride 1)
CONV_VARIANTS = ("direct", "ch4", "ch8", "taps", "blocks4", "matmul")


def narrow_conv(x_nhwc, k_hwio, strides, pads):
  """A stride-1 conv with one narrow side as a matrix product over the wide side's channels
  and shifted slices, so that tensor cores see >= 32 channels on both sides of every product.
  Measured against cuDNN on an H200 and NOT used: 2.3-2.7x slower on the 7x7 convs (forward
  and gradients), 1.16x faster on VGG's 3x3, and the train step slower (docs/benchmarks.md).
  - few outputs F (the decoder's 7x7 64 -> 3): z = xp @ k as (C, kh*kw*F), y = the sum over
    taps (a, b) of z's tap-(a, b) channels shifted by (a, b), accumulated in float32;
  - few inputs C (the encoder's 7x7 6 -> 64, VGG's 3x3 3 -> 64): the kh*kw shifted views of xp
    stacked along channels (im2col), times k as (kh*kw*C, F)."""
  import jax.numpy as jnp  # noqa: PLC0415

  if strides != (1, 1):
    raise ValueError("narrow_conv: stride 1 only")
  kh, kw, c, f = k_hwio.shape
  xp = jnp.pad(x_nhwc, ((0, 0), pads[0], pads[1], (0, 0)))
  n, hp, wp, _ = xp.shape
  ho, wo = hp - kh + 1, wp - kw + 1
  taps = [(a, b) for a in range(kh) for b in range(kw)]
  if f < c:
    # (C, kh, kw, F) -> (C, kh*kw*F): column (a*kw + b)*F + o is tap (a, b)'s output o
    z = jnp.einsum("nhwc,cq->nhwq", xp, k_hwio.transpose(2, 0, 1, 3).reshape(c, kh * kw * f))
    z = z.reshape(n, hp, wp, kh * kw, f)
    y = sum(z[:, a : a + ho, b : b + wo, a * kw + b].astype(jnp.float32) for a, b in taps)
    return y.astype(x_nhwc.dtype)
  cols = jnp.concatenate([xp[:, a : a + ho, b : b + wo] for a, b in taps], axis=-1)
  # HWIO -> (kh*kw*C, F): row (a*kw + b)*C + i is tap (a, b)'s input i, as cols' channels
  return jnp.einsum("nhwq,qf->nhwf", cols, k_hwio.reshape(kh * kw * c, f))


def _lax_conv(x, k, strides, pads):
  import jax  # noqa: PLC0415

  from jaxtalk.models.conv import NHWC  # noqa: PLC0415

  return jax.lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=NHWC)


def _library_conv(x, k, strides, pads):
  from jaxtalk.models.conv import conv  # noqa: PLC0415

  return conv(x, k, strides, pads)


def _variant(variant: str, kshape, stride: int, out_hw):
  """(conv function, environment while it is traced) for a --conv-variants item, or None where
  it does not apply to this conv (kernel shape, stride, output (H, W)), or would be the direct
  conv again."""
  c, f = kshape[2:]
  if variant == "direct":
    return _lax_conv, {}
  if variant == "matmul":
    return (narrow_conv, {}) if stride == 1 else None
  from jaxtalk.bench.train import BLOCKS_TOKEN, CHANNELS_TOKEN, step_variant_env  # noqa: PLC0415
  from jaxtalk.models import conv as conv_lib  # noqa: PLC0415

  strides = (stride, stride)
  if variant == "taps":
    applies = conv_lib.taps_weight_grad_applies(*kshape[:2], strides)
  elif CHANNELS_TOKEN.fullmatch(variant):
    m = int(variant[2:])
    applies = c % m or f % m
  elif BLOCKS_TOKEN.fullmatch(variant):
    applies = conv_lib.blocked_conv_applies(kshape, strides, out_hw, int(variant[6:]))
  else:
    raise ValueError(
      f"--conv-variants: {variant!r} is not one of {CONV_VARIANTS} (chN, blocksN: any N)"
    )
  # the library's conv under the environment a train-step variant of the same name sets
  return (_library_conv, step_variant_env(variant)) if applies else None


def _fwd_bwd(conv_fn, strides, pads, argnums, x, k, g):
  """conv_fn(x, k, strides, pads) and the gradients `argnums` (0: x, 1: k) for the cotangent
  g."""
  import jax  # noqa: PLC0415

  y, vjp = jax.vjp(lambda x, k: conv_fn(x, k, strides, pads), x, k)
  grads = vjp(g)
  return (y, *(grads[i] for i in argnums))


def conv_study(frames: int, dtype: str, variants: list[str], repeats: int = 5) -> list[dict]:
  """STUDY_CONVS in each form of `variants` (CONV_VARIANTS) that applies, the first the
  reference: forward + the gradients the train step takes, ms per call for `frames` frames, and
  each form's largest difference of outputs and gradients from the reference, relative to the
  reference's largest magnitude."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from jaxtalk.bench import model as bench_model  # noqa: PLC0415
  from jaxtalk.bench import train as bench_train  # noqa: PLC0415

  rows = []
  for name, (h, w, c), kshape, stride, pads, wrt in STUDY_CONVS:
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (frames, h, w, c), dtype)
    k = (jax.random.normal(kk, kshape) / np.sqrt(np.prod(kshape[:3]))).astype(dtype)
    strides = (stride, stride)
    out_shape = jax.eval_shape(functools.partial(_lax_conv, strides=strides, pads=pads), x, k)
    g = jax.random.normal(kg, out_shape.shape, dtype)
    argnums = tuple(i for i, a in enumerate("xk") if a in wrt)
    row = {"conv": name, "frames": frames}
    ref = base = None
    parts = []
    for variant in variants:
      form = _variant(variant, kshape, stride, out_shape.shape[1:3])
      if form is None:
        continue
      conv_fn, env = form
      fn = functools.partial(_fwd_bwd, conv_fn, strides, pads, argnums)
      # read when traced: _measure's first call, then the jit below
      with bench_train.variant_environ(env):
        m = bench_model._measure(fn, (x, k, g), repeats)
        got = jax.jit(fn)(x, k, g)
      row[f"{variant}_ms"] = ms = m["best_s"] * 1e3
      if ref is None:
        ref, base = got, variant
        parts.append(f"{variant} {ms:.2f} ms")
        continue
      diff = max(
        float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
        / float(jnp.max(jnp.abs(b.astype(jnp.float32))))
        for a, b in zip(got, ref, strict=True)
      )
      row[f"{variant}_max_rel_diff"] = diff
      speed = row[f"{base}_ms"] / ms
      parts.append(f"{variant} {ms:.2f} ms ({speed:.2f}x, differs <= {diff:.1e})")
      del got
    rows.append(row)
    print(f"  {name} fwd+bwd({wrt}), {frames} frames {dtype}: {'; '.join(parts)}", flush=True)
    del x, k, g, ref
  return rows


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cpu", action="store_true", help="tiny config, 64², small batches (smoke)")
  ap.add_argument("--batches", default=None, help="clips per forward (default 1,8,32; cpu 1,2)")
  ap.add_argument("--frames", type=int, default=None, help="frames per clip (default 8; cpu 4)")
  ap.add_argument("--size", type=int, default=None, help="image size (default 256; cpu 64)")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--train-batches", default=None, help="clips per train step (16; cpu 1)")
  ap.add_argument(
    "--conv-frames",
    "--narrow-frames",  # its name in the third GPU session
    type=int,
    default=0,
    help="frames for the conv study (STUDY_CONVS; the H200 runs: 128; default 0, skipped)",
  )
  ap.add_argument(
    "--conv-variants",
    default="direct,ch8,taps,blocks4",
    help=f"the conv study's forms, the first the reference: {CONV_VARIANTS} (chN, blocksN: any N; "
    "matmul: narrow_conv, measured slower on the H200)",
  )
  ap.add_argument(
    "--step-variants",
    default="",
    help="time the train step once per variant, e.g. default,concat+upstack,blocks4: each "
    "'+'-joined tokens, a reflect-conv mode (JAXTALK_REFLECT_CONV, models/layers.reflect_mode), a "
    "reflect pad's form, concat or padsum (JAXTALK_REFLECT_PAD, models/layers.reflect_pad_form; "
    "padsum is the GPU's default), the UpConv's interleave, upstack or uppadsum "
    "(JAXTALK_UPCONV_INTERLEAVE, models/layers.interleave_form; uppadsum is the GPU's), chN "
    "(JAXTALK_CONV_CHANNELS=N, models/conv.channel_multiple), blocksN (JAXTALK_CONV_BLOCKS=N, "
    "models/conv.block_factor), taps or xla (JAXTALK_CONV_WGRAD, "
    "models/conv.gpu_weight_grad; taps is the GPU's default); default: the platform's own forms",
  )
  ap.add_argument("--no-vgg", dest="vgg", action="store_false")
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument(
    "--trace", default=None, help="profile 2 steps of the largest train batch into this folder "
    "(default: $OUT/trace when $OUT is set) and print where the device time goes",
  )  # fmt: skip
  ap.add_argument("--peak-tflops", type=float, default=None)
  ap.add_argument("--count-flops", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.count_flops:
    print(json.dumps(_count_flops(**json.loads(args.count_flops))))
    return 0

  import jax  # noqa: PLC0415

  from jaxtalk.bench import model as bench_model  # noqa: PLC0415
  from jaxtalk.bench import train as bench_train  # noqa: PLC0415
  from jaxtalk.config import load_config  # noqa: PLC0415
  from jaxtalk.models.renderer import renderer_from_config  # noqa: PLC0415

  config = "tiny" if args.cpu else "grid"
  size = args.size or (64 if args.cpu else 256)
  t = args.frames or (4 if args.cpu else 8)
  batches = args.batches if args.batches is not None else "1,2" if args.cpu else "1,8,32"
  batches = [int(b) for b in batches.split(",") if b]  # "": no renderer timings
  train_bs = [int(b) for b in (args.train_batches or ("1" if args.cpu else "16")).split(",")]
  dev = jax.devices()[0]
  peak = _peak(dev.device_kind, args.peak_tflops)
  out: dict = {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__}
  print(f"device_check: {jax.device_count()} x {dev.device_kind} ({dev.platform}), "
        f"jax {jax.__version__}, config {config}, {size}², {args.dtype}", flush=True)  # fmt: skip

  flops = _clip_gflops(config, size, t, args.dtype, args.vgg, train_bs)
  cfg = load_config(config)
  cfg.data.image_size = size
  cfg.model.dtype = args.dtype
  window, n_mels = cfg.data.audio_window, cfg.data.n_mels
  key = jax.random.PRNGKey(0)
  model = renderer_from_config(cfg)
  x1 = jax.random.uniform(key, (1, t, size, size, 3), minval=-1.0, maxval=1.0)
  a1 = jax.random.normal(key, (1, t, window, n_mels))
  variables = bench_model._init(model, x1, x1, a1)
  out["renderer"] = {}
  for b in batches:
    x = jax.random.uniform(key, (b, t, size, size, 3), minval=-1.0, maxval=1.0)
    a = jax.random.normal(key, (b, t, window, n_mels))
    m = bench_model._measure(lambda v, x, a: model.apply(v, x, x, a), (variables, x, a), 3)
    fps = b * t / m["best_s"]
    out["renderer"][b] = {"frames_per_s": fps, **m}
    print(f"  renderer {size}² {args.dtype} B={b} T={t}: {fps:9.1f} frames/s "
          f"({m['best_s'] * 1000:.1f} ms per forward, {b * flops['g'] / m['best_s'] / 1e3:.0f} "
          f"TFLOP/s, compile {m['compile_s']:.1f} s)", flush=True)  # fmt: skip
  print(f"  after the renderer: {_mem()}", flush=True)
  if args.conv_frames:
    variants = [v for v in args.conv_variants.split(",") if v]
    out["conv_study"] = conv_study(args.conv_frames, args.dtype, variants)

  g_clip, d_clip, vgg_clip = (flops[k] for k in ("g", "d", "vgg"))
  steps_txt = ", ".join(f"B = {b}: {gf:.1f}" for b, gf in flops["step"].items())
  print(f"  model GFLOP, forward per clip of {t} frames: G {g_clip:.1f}, D {d_clip:.1f}, "
        f"VGG {vgg_clip:.1f}; the train step's: {steps_txt}", flush=True)  # fmt: skip
  del variables

  cfg.train.seq_len = t
  out["train"] = {}
  trace_dir = args.trace or (os.environ["OUT"] + "/trace" if os.environ.get("OUT") else None)
  variants = [v for v in args.step_variants.split(",") if v] or [None]
  # a typo fails here, early
  envs = {v: bench_train.step_variant_env(v) for v in variants if v is not None}
  for train_b, variant in itertools.product(train_bs, variants):
    traced = trace_dir if train_b == max(train_bs) else None
    # in file names as pad-ch8: the device tool returns no file with a '+' in its name
    tag = "" if variant is None else "_" + variant.replace("+", "-")
    traced = traced and f"{traced}{tag}"
    key_b = f"{train_b}{tag}"
    cfg.train.batch_size = train_b
    # read when the step is traced: each variant compiles its own step
    env = (
      contextlib.nullcontext() if variant is None else bench_train.variant_environ(envs[variant])
    )
    with tempfile.TemporaryDirectory(prefix="jaxtalk-device-check-") as tmp, env:
      bench_train.write_step_dataset(cfg, tmp + "/ds")
      r = bench_train.time_step(
        cfg, tmp + "/ds", args.steps, 1, args.vgg, random_vgg=True, trace_dir=traced
      )
    step_gflop = flops["step"][str(train_b)]
    tflops = step_gflop / r["step_s"] / 1e3
    mfu = None if peak is None else tflops * 1e12 / peak
    out["train"][key_b] = {**r, "model_gflop": step_gflop, "tflops": tflops, "mfu": mfu}
    mfu_txt = "n/a (unknown peak: --peak-tflops)" if mfu is None else f"{100 * mfu:.1f} %"
    print(f"  train step {size}² {args.dtype} B={train_b} T={t} vgg={args.vgg}"
          f"{'' if variant is None else f' variant={variant}'}: "
          f"{r['step_s']:.3f} s (compile {r['compile_s']:.1f} s), model {step_gflop:.0f} GFLOP "
          f"-> {tflops:.1f} TFLOP/s, MFU {mfu_txt}; {_mem()}", flush=True)  # fmt: skip
    if traced:
      try:  # a profile format this does not read must not cost the figures after it
        print(summarise_trace(traced, steps=r["traced_steps"]), flush=True)
      except Exception as e:  # noqa: BLE001
        print(f"  trace summary failed: {type(e).__name__}: {e}", flush=True)
      for xplane in glob.glob(f"{traced}/**/*.xplane.pb", recursive=True):
        os.remove(xplane)  # the .trace.json.gz holds what is read back; the xplane is 10x larger
      if os.environ.get("OUT"):  # the device tool returns files at most a few folders deep
        for trace in glob.glob(f"{traced}/**/*.trace.json.gz", recursive=True):
          shutil.copy(trace, f"{os.environ['OUT']}/train_step_b{key_b}.trace.json.gz")
  out["peak_memory"] = _mem()
  print(f"  peak memory: {out['peak_memory']}", flush=True)
  print(json.dumps(out, default=float))
  return 0


if __name__ == "__main__":
  sys.exit(main())
