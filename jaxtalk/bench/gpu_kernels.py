"""The renderer train step compiled for an NVIDIA GPU on a machine without one: the kernels XLA
would launch, their launch shapes and the bytes each moves, per form of the step.

  jaxtalk bench gpu-kernels [--card h200|h100] [--variants default,concat+upstack]
                            [--batch 16] [--size 256] [--frames 8] [--dtype bfloat16]
                            [--config grid] [--keep DIR]

Needs JAX's CUDA plugin beside the installed jax (`pip install "jax[cuda13]==$JAX_VERSION"`,
~3.5 GB), and no GPU, driver or device time: XLA's GPU compiler runs on this CPU for a
description of the card (its GpuTargetConfig: SMs, shared memory, memory bandwidth), the way
JAX compiles ahead of time for a topology (jax.experimental.topologies). The models trace a
GPU's forms (models/platform.traced_for). Without the device nothing is autotuned: cuDNN's
conv algorithms and Triton's matrix-product tilings are left to their defaults, so convs and
matrix products are listed apart and not estimated. The fusions are XLA's own for that card:
what it fuses, the emitter, the launch shape, how many elements a thread handles.

Per variant (a step variant as device_check.py takes them, bench/train.step_variant_env) it
prints the memory-bound kernels (all but convs and matrix products): count, GB moved (the fused
computation's parameters and results), the elements each thread handles, and their time
estimated at two rates: VECTORISED_TBPS where a thread handles several elements,
SCALAR_TBPS where it handles one. The rates are those of the fourth H200 session's trace
(docs/benchmarks.md): loop fusions with 4 elements per thread moved ~2.9 TB/s, concatenate
fusions with one ~0.85 TB/s. With those rates the default step of that session comes out at
81.5 ms of memory-bound kernels, against 80 ms of fusions, copies and concatenates in the trace.
Then the kernels each variant has and the first has not, and the reverse.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import tempfile

# The cards' GpuTargetConfig (xla/stream_executor/device_description.proto), as a device of that
# kind reports itself; the H200 (SXM) is the H100's GH100 with HBM3e: more memory and bandwidth.
_GH100 = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: {memory}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{
    major: 9
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
runtime_version {{
  major: 13
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 10
}}
device_description_str: "{name}"
"""
CARDS = {
  "h100": _GH100.format(bandwidth=3352320000000, memory=84929347584, name="NVIDIA H100 80GB HBM3"),
  "h200": _GH100.format(bandwidth=4800000000000, memory=150754820096, name="NVIDIA H200"),
}
VECTORISED_TBPS = 2.9
SCALAR_TBPS = 0.9
_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
               "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}  # fmt: skip
_ARRAY = re.compile(r"\b(" + "|".join(_ITEM_BYTES) + r")\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z\-]*)\((.*)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) \(")
KERNEL_THUNKS = ("kCustomKernel", "kKernel")
_LAUNCH = re.compile(
  r"(?:kCustomKernel|kKernel)\s.*?\]\s+(\S+) grid: \[(\d+), (\d+), (\d+)\] "
  r"threads: \[(\d+), (\d+), (\d+)\]"
)


@dataclasses.dataclass(frozen=True)
class Kernel:
  name: str  # as the thunk sequence names it (an HLO instruction's name, '.' as '_')
  threads: int  # blocks x threads per block
  elements: int  # of its largest result
  bytes: int  # its parameters' and results' sizes
  compute: bool  # a Triton matrix product: not memory-bound

  @property
  def elements_per_thread(self) -> float:
    return self.elements / max(self.threads, 1)

  @property
  def family(self) -> str:
    return re.sub(r"_\d+$", "", self.name)


def _arrays(shape_text: str) -> list[tuple[int, int]]:
  """(bytes per element, elements) of each array in an HLO shape (a tuple lists several)."""
  out = []
  for dtype, dims in _ARRAY.findall(shape_text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    out.append((_ITEM_BYTES[dtype], n))
  return out


def _nbytes(shape_text: str) -> int:
  return sum(b * n for b, n in _arrays(shape_text))


def parse_kernels(hlo_text: str, thunk_text: str) -> list[Kernel]:
  """The kernel launches of a compiled GPU program, in order: its thunk sequence (launch shapes)
  joined to its optimized HLO (shapes). A fusion's bytes are its fused computation's parameters
  (each the array the kernel reads, also when the operand is a multi-output fusion's tuple) and
  its results; other instructions' are their operands' and results'."""
  shapes, lines, params = {}, {}, collections.defaultdict(list)
  computation = None
  for line in hlo_text.splitlines():
    if m := _COMPUTATION.match(line):
      computation = m.group(1)
    if m := _INSTRUCTION.match(line):
      name, shape, op, _ = m.groups()
      shapes[name], lines[name] = shape, line
      if op == "parameter":
        params[computation].append(shape)
  kernels = []
  for m in _LAUNCH.finditer(thunk_text):
    name = m.group(1)
    dims = [int(d) for d in m.groups()[1:]]
    threads = dims[0] * dims[1] * dims[2] * dims[3] * dims[4] * dims[5]
    hlo_name = next((n for n in (name, re.sub(r"_(\d+)$", r".\1", name)) if n in lines), None)
    if hlo_name is None:
      kernels.append(Kernel(name, threads, 0, 0, False))
      continue
    line = lines[hlo_name]
    called = re.search(r"calls=%([\w.\-]+)", line)
    if called and called.group(1) in params:
      read = sum(_nbytes(p) for p in params[called.group(1)])
    else:
      operands = _INSTRUCTION.match(line).group(4).split(")")[0]
      read = sum(_nbytes(shapes[o]) for o in re.findall(r"%([\w.\-]+)", operands) if o in shapes)
    result = shapes[hlo_name]
    # Triton's matrix products (cuDNN's convs and cuBLAS's are thunks of their own, not listed)
    compute = '"kind":"__triton' in line
    elements = max((n for _, n in _arrays(result)), default=0)
    kernels.append(Kernel(name, threads, elements, read + _nbytes(result), compute))
  return kernels


def one_per_thread(kernel: Kernel) -> bool:
  """Whether each thread handles one element (the concatenate emitter's way), not several."""
  return 0.9 <= kernel.elements_per_thread < 1.5


def estimate_ms(kernel: Kernel) -> float:
  """A memory-bound kernel's time at the rate of its kind (module docstring); 0 for a compute
  kernel."""
  if kernel.compute:
    return 0.0
  rate = SCALAR_TBPS if one_per_thread(kernel) else VECTORISED_TBPS
  return kernel.bytes / (rate * 1e12) * 1e3


def summary(kernels: list[Kernel]) -> dict[str, float]:
  """Launch counts, the memory-bound kernels' GB and estimated ms, and the GB of those among
  them that handle one element per thread."""
  memory = [k for k in kernels if not k.compute]
  return {
    "kernels": len(kernels),
    "matmul_kernels": len(kernels) - len(memory),
    "memory_gb": sum(k.bytes for k in memory) / 1e9,
    "memory_ms": sum(estimate_ms(k) for k in memory),
    "one_per_thread_gb": sum(k.bytes for k in memory if one_per_thread(k)) / 1e9,
  }


def _rows(kernels: list[Kernel]) -> list[str]:
  """One line per kernel family: launches, GB, estimated ms, elements per thread (most common)."""
  fam = collections.defaultdict(list)
  for k in kernels:
    fam[k.family].append(k)
  out = []
  for name, ks in sorted(fam.items(), key=lambda kv: -sum(estimate_ms(k) for k in kv[1])):
    ept = collections.Counter(round(k.elements_per_thread, 2) for k in ks).most_common(3)
    ms = sum(estimate_ms(k) for k in ks)
    out.append(
      f"    {name:<40} {len(ks):5d} {sum(k.bytes for k in ks) / 1e9:8.2f} GB "
      f"{'(compute)' if ks[0].compute else f'{ms:7.2f} ms'}  elements/thread "
      + ", ".join(f"{e:g} x{c}" for e, c in ept)
    )
  return out


def _key(k: Kernel) -> tuple:
  return (k.family, k.bytes, k.threads, k.elements)


def difference(a: list[Kernel], b: list[Kernel]) -> tuple[list[Kernel], list[Kernel]]:
  """The launches only a has and only b has: the multisets of (family, bytes, launch shape,
  elements) less their common part, in launch order."""
  count_a, count_b = collections.Counter(map(_key, a)), collections.Counter(map(_key, b))

  def take(kernels: list[Kernel], extra: collections.Counter) -> list[Kernel]:
    out = []
    for k in kernels:
      if extra[_key(k)] > 0:
        extra[_key(k)] -= 1
        out.append(k)
    return out

  return take(a, count_a - count_b), take(b, count_b - count_a)


def thunk_kinds(thunk_text: str) -> collections.Counter:
  """How many thunks of each kind the sequence runs (kConvolution, kCuDnn, kCopy, ...)."""
  return collections.Counter(re.findall(r"^\d+: (k\w+)", thunk_text, re.M))


def read_dump(dump_dir: str) -> tuple[list[Kernel], collections.Counter]:
  """The kernels and the thunk kinds of the one module XLA dumped into dump_dir."""
  files = os.listdir(dump_dir)
  pick = lambda suffix: next(f for f in files if f.endswith(suffix))  # noqa: E731
  with open(os.path.join(dump_dir, pick("gpu_after_optimizations.txt"))) as f:
    hlo = f.read()
  with open(os.path.join(dump_dir, pick("thunk_sequence.txt"))) as f:
    thunks = f.read()
  return parse_kernels(hlo, thunks), thunk_kinds(thunks)


def gpu_device(card: str):
  """A device of `card` for a deviceless compile (a one-GPU topology from JAX's CUDA plugin)."""
  from jax.experimental import topologies  # noqa: PLC0415

  try:
    topo = topologies.get_topology_desc("jaxtalk", "cuda", target_config=CARDS[card],
                                        topology="1x1x1")  # fmt: skip
  except Exception as e:  # noqa: BLE001  the plugin's absence surfaces as several error types
    import jax  # noqa: PLC0415

    raise SystemExit(
      f"bench gpu-kernels: no CUDA compiler in this environment ({type(e).__name__}: "
      f"{str(e).splitlines()[0] if str(e) else ''}); install it beside jax "
      f'{jax.__version__}: pip install "jax[cuda13]=={jax.__version__}"'
    ) from None
  return topo.devices[0]


def compile_variant(
  cfg, device, variant: str, dump_dir: str
) -> tuple[list[Kernel], collections.Counter]:
  """The renderer train step of cfg (stage 1, VGG on) in `variant`'s forms, compiled for
  `device`'s card with XLA's dumps in dump_dir: its kernels and thunk kinds (`read_dump`)."""
  from jaxtalk.bench import train as bench_train  # noqa: PLC0415
  from jaxtalk.models.platform import traced_for  # noqa: PLC0415

  with (
    tempfile.TemporaryDirectory(prefix="jaxtalk-gpu-kernels-") as tmp,
    bench_train.variant_environ(bench_train.step_variant_env(variant)),
    traced_for("gpu"),
  ):
    bench_train.write_step_dataset(cfg, tmp + "/ds")
    lowered = bench_train.lowered_step(cfg, tmp + "/ds", 1, True, random_vgg=True, devices=[device])
  lowered.compile({"xla_dump_to": dump_dir, "xla_dump_hlo_as_text": True})
  return read_dump(dump_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxtalk.cli import add_config_arguments  # noqa: PLC0415

  add_config_arguments(parser)
  parser.add_argument("--card", choices=sorted(CARDS), default="h200")
  parser.add_argument(
    "--variants",
    default="default,concat+upstack",
    help="step variants, the first the reference (bench/train.step_variant_env)",
  )
  parser.add_argument("--batch", type=int, default=16, help="clips per step")
  parser.add_argument("--frames", type=int, default=8, help="frames per clip")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--keep", default=None, help="keep XLA's dumps in this folder")
  parser.add_argument("--top", type=int, default=12, help="kernel families listed per variant")


def run(args: argparse.Namespace) -> int:
  import jax  # noqa: PLC0415

  from jaxtalk.bench.train import step_variant_env  # noqa: PLC0415
  from jaxtalk.config import load_config  # noqa: PLC0415

  cfg = load_config(args.config, args.overrides)
  cfg.data.image_size, cfg.model.dtype = args.size, args.dtype
  cfg.train.batch_size, cfg.train.seq_len = args.batch, args.frames
  variants = [v for v in args.variants.split(",") if v]
  for v in variants:
    step_variant_env(v)  # a typo fails before the first compile
  device = gpu_device(args.card)
  print(f"# jaxtalk bench gpu-kernels: {args.config or 'grid'} {args.size}² {args.dtype}, "
        f"B = {args.batch}, T = {args.frames}, compiled for {device.device_kind} without one (jax "
        f"{jax.__version__}); estimates at {VECTORISED_TBPS} / {SCALAR_TBPS} TB/s")  # fmt: skip
  root = args.keep or tempfile.mkdtemp(prefix="jaxtalk-gpu-kernels-")
  found = {}
  for v in variants:
    found[v], kinds = compile_variant(cfg, device, v, os.path.join(root, v.replace("+", "-")))
    s = summary(found[v])
    others = ", ".join(f"{n} {k}" for k, n in kinds.most_common() if k not in KERNEL_THUNKS)
    print(f"{v}: {s['kernels']} kernels ({s['matmul_kernels']} matrix products; also {others}); "
          f"memory-bound {s['memory_gb']:.1f} GB, estimated {s['memory_ms']:.1f} ms, of it "
          f"{s['one_per_thread_gb']:.1f} GB at one element per thread", flush=True)  # fmt: skip
    print("\n".join(_rows(found[v])[: args.top]), flush=True)
  ref = variants[0]
  for v in variants[1:]:
    only_ref, only_v = difference(found[ref], found[v])
    for name, ks in ((f"only in {ref}", only_ref), (f"only in {v}", only_v)):
      ms = sum(estimate_ms(k) for k in ks)
      print(f"  {name}: {len(ks)} kernels, {sum(k.bytes for k in ks) / 1e9:.2f} GB, "
            f"estimated {ms:.1f} ms")  # fmt: skip
      print("\n".join(_rows(ks)[: args.top]))
  if not args.keep:
    import shutil  # noqa: PLC0415

    shutil.rmtree(root, ignore_errors=True)
  return 0
