"""Model speed and size: forward time per frame, compile time, parameters and FLOPs per module.

  jaxtalk bench model [--config grid] [--sizes 128,256] [--batch 1] [--frames 8] [--dtype float32]
                      [--per-module]

The renderer is timed per size (B clips of T frames, compile excluded and reported apart);
smoothing, discriminator, audio2expression and VGG19 are timed at the largest size. FLOPs are
XLA's count (cost_analysis) for the forward as the model is written (`model_gflops`): not for
the CPU's own forms of the convolutions that the timed program runs (Winograd does fewer
multiplies, the SAME reflect convs compute more outputs).

--per-module also times each part of the renderer on its own (encoder, audio fusion, dependency
transformer, bottleneck, decoder; each jitted apart on the inputs it sees inside the renderer,
with the renderer's own parameters) and prints GFLOP/s, so the rows show where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from jaxtalk.bench.machine import cpu_name
from jaxtalk.cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser)
  parser.add_argument("--sizes", default="128,256", help="renderer image sizes, comma-separated")
  parser.add_argument("--batch", type=int, default=1, help="clips per forward (B)")
  parser.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
  parser.add_argument("--dtype", default=None, help="compute dtype (default: the config's)")
  parser.add_argument("--repeats", type=int, default=2, help="timed forwards after a warm-up")
  parser.add_argument(
    "--per-module",
    action="store_true",
    help="also time each renderer part (encoder, fusion, dependency, bottleneck, decoder)",
  )
  parser.add_argument(
    "--trace",
    default=None,
    metavar="DIR",
    help="write a jax.profiler trace of the whole run to DIR (view in Perfetto / XProf)",
  )
  parser.add_argument(
    "--modules",
    default="renderer,smoothing,discriminator,a2e,vgg",
    help="which modules to measure, comma-separated",
  )


def xla_flops(stage: Any) -> float:
  """FLOPs from XLA's cost analysis of a jax.stages.Lowered or Compiled (NaN if none)."""
  # cost_analysis() is a dict in current JAX, a list of per-computation dicts in older ones,
  # and may be None on some backends
  cost = stage.cost_analysis()
  if cost is None:
    return float("nan")
  if isinstance(cost, dict):
    cost = [cost]
  return float(sum(c.get("flops", 0.0) for c in cost))


@contextlib.contextmanager
def environ(values: dict[str, str], unset: Iterable[str] = ()) -> Iterator[None]:
  """os.environ with `values` set and the variables named in `unset` removed, restored after."""
  names = set(values) | set(unset)
  saved = {k: os.environ.get(k) for k in names}
  for k in names:
    os.environ.pop(k, None)
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def traced_as_written() -> contextlib.AbstractContextManager[None]:
  """Programs traced inside trace the model as written: JAXTALK_CONV_FORMS=xla
  (models/conv.model_forms). Jit a new function inside: JAX reuses a function's earlier trace."""
  from jaxtalk.models.conv import FORMS_VARIABLE  # noqa: PLC0415

  return environ({FORMS_VARIABLE: "xla"})


def model_gflops(fn: Callable, *args: Any) -> float:
  """GFLOPs of fn(*args) as the model is written (`traced_as_written`), from XLA's cost analysis
  of the program before optimisation (lowered only, not compiled; NaN where the backend cannot
  analyse it, as an H200 with jax 0.11.2: scripts/device_check.py counts on the CPU backend).
  Not the compiled program's: a GPU compile turns the convolutions into cuDNN calls that its
  analysis does not count (the H200 reported 23.6 instead of 834 GFLOP for the 256² renderer's 8
  frames)."""
  import jax  # noqa: PLC0415

  with traced_as_written():
    return xla_flops(jax.jit(lambda *a: fn(*a)).lower(*args)) / 1e9


def abstract_call(module: Any, *shapes: Sequence[int]) -> tuple[Any, list[Any]]:
  """(abstract variables, abstract float32 inputs) for module.apply on inputs of `shapes`: no
  arrays, no compile."""
  import jax  # noqa: PLC0415

  args = [jax.ShapeDtypeStruct(s, jax.numpy.float32) for s in shapes]
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), *args), args


def module_gflops(module: Any, *shapes: Sequence[int]) -> float:
  """`model_gflops` of a Flax module's forward on float32 inputs of `shapes`."""
  variables, args = abstract_call(module, *shapes)
  return model_gflops(module.apply, variables, *args)


def _count(tree: Any) -> int:
  import jax

  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _measure(fn: Callable, args: tuple, repeats: int) -> dict[str, float]:
  """Compile (timed), one warm-up call, then the best and mean of `repeats` calls."""
  import jax

  t0 = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(max(repeats, 1)):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return {
    "compile_s": compile_s,
    "best_s": min(times),
    "mean_s": sum(times) / len(times),
    "gflop": model_gflops(fn, *args),
  }


def _init(model: Any, *args: Any, **kwargs: Any) -> Any:
  import jax

  return jax.jit(lambda key: model.init(key, *args, **kwargs))(jax.random.PRNGKey(0))


def _fields(cls: Any, model: Any) -> dict[str, Any]:
  """The renderer's settings that module class `cls` also takes (so a part is built exactly as
  the renderer builds it, whatever fields the part gains later)."""
  own = {f for f in getattr(cls, "__dataclass_fields__", {}) if f not in ("parent", "name")}
  return {f: getattr(model, f) for f in own if f in model.__dataclass_fields__}


def renderer_parts(model: Any, variables: Any, size: int, b: int, t: int, w: int, f: int):
  """[(part name, fn(params, *inputs), params, inputs)] for the renderer's parts, each on
  inputs of the shape it gets inside the renderer (random values: timing only)."""
  import jax  # noqa: PLC0415

  from jaxtalk.models import renderer as R  # noqa: PLC0415
  from jaxtalk.models.layers import ResBlock  # noqa: PLC0415

  params = variables["params"]
  n, s = b * t, size // 2**model.n_down
  width = model.base_channels * 2**model.n_down
  key = jax.random.PRNGKey(1)
  dt = model.dtype
  feat = jax.random.normal(key, (n, s, s, width)).astype(dt)
  parts = []
  enc = R.Encoder(**_fields(R.Encoder, model))
  x = jax.random.uniform(key, (n, size, size, 6), minval=-1.0, maxval=1.0).astype(dt)
  parts.append(("encoder", lambda p, x: enc.apply({"params": p}, x), params["encoder"], (x,)))
  if model.audio_fusion:
    fus = R.AudioFusion(**_fields(R.AudioFusion, model))
    audio = jax.random.normal(key, (n, w, f))
    parts.append(
      (
        "audio fusion",
        lambda p, x, a: fus.apply({"params": p}, x, a),
        params["audio_fusion"],
        (feat, audio),
      )
    )
  if model.dependency:
    dep = R.DependencyModule(**_fields(R.DependencyModule, model))
    parts.append(
      (
        "dependency",
        lambda p, x: dep.apply({"params": p}, x),
        params["dependency"],
        (feat.reshape(b, t, s, s, width),),
      )
    )
  res = ResBlock(width, dt)

  def bottleneck(p, x):
    for i in range(model.n_res_blocks):
      x = res.apply({"params": p[f"res{i}"]}, x)
    return x

  res_params = {k: v for k, v in params.items() if k.startswith("res")}
  parts.append(("bottleneck", bottleneck, res_params, (feat,)))
  dec = R.Decoder(**_fields(R.Decoder, model))
  parts.append(("decoder", lambda p, x: dec.apply({"params": p}, x), params["decoder"], (feat,)))
  return parts


def run(args: argparse.Namespace) -> int:
  import jax

  if args.trace:
    jax.profiler.start_trace(args.trace)
  try:
    return _run(args)
  finally:
    if args.trace:
      jax.profiler.stop_trace()
      print(f"  profiler trace written under {args.trace}")


def _run(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp

  from jaxtalk.config import load_config
  from jaxtalk.models.audio2expression import a2e_from_config
  from jaxtalk.models.discriminator import discriminator_from_config
  from jaxtalk.models.renderer import renderer_from_config
  from jaxtalk.models.smoothing import smoother_from_config
  from jaxtalk.models.vgg import VGG19Features

  cfg = load_config(args.config, args.overrides)
  if args.dtype:
    cfg.model.dtype = args.dtype
  sizes = [int(s) for s in args.sizes.split(",") if s]
  modules = set(args.modules.split(","))
  b, t = args.batch, args.frames
  w, f = cfg.data.audio_window, cfg.data.n_mels
  n = b * t

  print(f"jaxtalk bench model  {datetime.date.today()}  config={cfg.name}  dtype={cfg.model.dtype}")
  print(
    f"  machine: {cpu_name()}, {os.cpu_count()} cores, {jax.device_count()} x "
    f"{jax.devices()[0].device_kind} device; "
    f"jax {jax.__version__}; B={b} T={t}; best of {args.repeats} after a warm-up"
  )
  header = f"  {'module':<26}{'size':>5}{'params':>13}{'GFLOP/fwd':>11}{'compile s':>11}"
  header += f"{'fwd s':>9}{'ms/frame':>10}"
  print(header)

  def row(name: str, size: int | str, params: int, m: dict[str, float], frames: int) -> None:
    print(
      f"  {name:<26}{size!s:>5}{params:>13,}{m['gflop']:>11.2f}{m['compile_s']:>11.1f}"
      f"{m['best_s']:>9.3f}{1000 * m['best_s'] / frames:>10.1f}"
    )

  key = jax.random.PRNGKey(0)
  top = max(sizes)
  if "renderer" in modules:
    model = renderer_from_config(cfg)
    for size in sizes:
      frames = jax.random.uniform(key, (b, t, size, size, 3), minval=-1.0, maxval=1.0)
      audio = jax.random.normal(key, (b, t, w, f))
      t0 = time.perf_counter()
      variables = jax.block_until_ready(_init(model, frames, frames, audio))
      init_s = time.perf_counter() - t0
      m = _measure(
        lambda v, x, a: model.apply(v, x, x, a), (variables, frames, audio), args.repeats
      )
      row("renderer", size, _count(variables), m, n)
      parts = {}
      for name, sub in variables["params"].items():
        group = "bottleneck" if name.startswith("res") else name
        parts[group] = parts.get(group, 0) + _count(sub)
      print("    params by part: " + ", ".join(f"{k} {v:,}" for k, v in parts.items()))
      print(f"    init (compile + random parameters): {init_s:.1f} s")
      if args.per_module:
        total = 0.0
        for name, fn, p, inputs in renderer_parts(model, variables, size, b, t, w, f):
          pm = _measure(fn, (p, *inputs), args.repeats)
          total += pm["best_s"]
          row(f"  {name}", size, _count(p), pm, n)
          print(f"{'':>76}{pm['gflop'] / pm['best_s']:8.1f} GFLOP/s")
        print(f"    sum of parts: {total:.3f} s ({1000 * total / n:.1f} ms/frame)")
      del variables

  frames = jax.random.uniform(key, (b, t, top, top, 3), minval=-1.0, maxval=1.0)
  if "smoothing" in modules:
    smoother = smoother_from_config(cfg)
    expr = jax.random.normal(key, (b, t, cfg.data.expression_dim))
    variables = _init(smoother, expr, frames)
    m = _measure(
      lambda v, e, s: smoother.apply(v, e, s)[0], (variables, expr, frames), args.repeats
    )
    row(
      f"smoothing ({smoother.kind}, K={smoother.width})",
      top,
      _count(variables.get("params", {})),
      m,
      n,
    )
  if "discriminator" in modules:
    disc = discriminator_from_config(cfg)
    variables = _init(disc, frames)
    m = _measure(disc.apply, (variables, frames), args.repeats)
    row("discriminator", top, _count(variables), m, n)
  if "a2e" in modules:
    a2e = a2e_from_config(cfg)
    audio = jax.random.normal(key, (b, t, w, f))
    variables = _init(a2e, audio)
    m = _measure(a2e.apply, (variables, audio), args.repeats)
    row("audio2expression", "-", _count(variables), m, n)
  if "vgg" in modules:
    net = VGG19Features(dtype=jnp.dtype(cfg.model.dtype))
    variables = _init(net, frames)
    m = _measure(net.apply, (variables, frames), args.repeats)
    row("vgg19 (to relu5_1)", top, _count(variables), m, n)
  return 0
