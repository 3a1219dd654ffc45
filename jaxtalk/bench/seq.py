"""Long sequences: peak memory per device and step time of the renderer train step with the
frames of one clip sharded over the `seq` mesh axis (fake CPU devices).

What is measured, per (frames T, devices n, attention kind):
  the compiled train step of the renderer alone -- forward, L1 loss against the input frames,
  backward and an SGD update of the replicated parameters -- on one clip of T frames at
  --size x --size, mesh data=1 x seq=n (frames and the T*p*p transformer tokens split over n),
  model = --config's renderer with --patches (tokens per frame = patches^2).
  memory: XLA's memory analysis of that compiled program, per device: temp (activations and
  scratch), arguments, outputs, and their sum as the peak bound.
  time: mean wall time of --steps executions after one warm-up, when T * size^2 is at most
  --time-limit-pixels (larger points would take minutes each on a CPU; memory only there).
Fake CPU devices share one CPU, so times say nothing about speed-up across real devices; the
memory figures are what XLA would allocate per device.

Each point runs in its own interpreter: the device count is fixed when JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# importing JAX does not start a backend: the parent never makes an array, and each child gets
# its device count from XLA_FLAGS before its first one
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import sharding as sh
from jaxtalk.bench.machine import describe
from jaxtalk.config import load_config
from jaxtalk.models.renderer import renderer_from_config


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--size", type=int, default=128, help="frame size (default 128)")
  p.add_argument("--frames", default="64,256,1024", help="comma list of T")
  p.add_argument("--devices", default="1,2,4,8", help="comma list of seq devices")
  p.add_argument("--attention", default="auto", help="comma list of kinds (auto, dense, ...)")
  p.add_argument("--config", default="tiny", help="config whose renderer is measured")
  p.add_argument("--patches", type=int, default=4, help="p: p*p tokens per frame (default 4)")
  p.add_argument("--steps", type=int, default=2, help="timed steps per point")
  p.add_argument("--time-limit-pixels", type=float, default=64 * 128 * 128,
                 help="time points with T*size^2 up to this (default 64 x 128^2)")  # fmt: skip
  p.add_argument("--timeout", type=int, default=900, help="seconds per point")
  p.add_argument("--json", default=None, help="write the results here")
  p.add_argument("--point", default=None, help=argparse.SUPPRESS)  # child: "T,n,kind"


def _ints(s: str) -> list[int]:
  return [int(x) for x in s.split(",") if x.strip()]


def run(args: argparse.Namespace) -> int:
  if args.point:
    t, n, kind = args.point.split(",")
    print("RESULT " + json.dumps(measure(args, int(t), int(n), kind)), flush=True)
    return 0
  print(f"bench seq: {describe()}; renderer of config {args.config!r} at {args.size}^2, "
        f"{args.patches}^2 tokens/frame; fake CPU devices")  # fmt: skip
  rows = []
  for kind in args.attention.split(","):
    for t in _ints(args.frames):
      for n in _ints(args.devices):
        row = _child(args, t, n, kind)
        rows.append(row)
        print(_line(row), flush=True)
  _fractions(rows)
  print("\nactivation memory per device relative to 1 device (ideal 1/n):")
  for r in rows:
    if r.get("temp_fraction") is not None:
      print(f"  {r['attention']:>9} T={r['frames']:5d} n={r['devices']}: "
            f"{r['temp_fraction']:.3f} (1/n = {1 / r['devices']:.3f})")  # fmt: skip
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": describe(), "args": vars(args), "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")
  return 0


def _child(args: argparse.Namespace, t: int, n: int, kind: str) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "-m", "jaxtalk.cli", "bench", "seq", "--point", f"{t},{n},{kind}"]
  for k in ("size", "config", "patches", "steps", "time_limit_pixels"):
    cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
  base = {"frames": t, "devices": n, "attention": kind}
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
  except subprocess.TimeoutExpired:
    return {**base, "error": f"timeout after {args.timeout} s"}
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  lines = (proc.stderr + proc.stdout).strip().splitlines()
  errors = [x for x in lines if "Error" in x and not x.startswith(" ")] or lines[-1:] or ["?"]
  return {**base, "error": errors[-1][:300]}


def _fractions(rows: list[dict]) -> None:
  one = {(r["attention"], r["frames"]): r.get("temp_bytes") for r in rows if r["devices"] == 1}
  for r in rows:
    base = one.get((r["attention"], r["frames"]))
    r["temp_fraction"] = (r["temp_bytes"] / base) if base and r.get("temp_bytes") else None


def _line(r: dict) -> str:
  head = f"{r['attention']:>9} T={r['frames']:5d} devices={r['devices']}"
  if "error" in r:
    return f"{head}: FAILED {r['error']}"
  gib = 2.0**30
  tm = f"{r['step_s']:.2f} s/step" if r.get("step_s") is not None else "not timed"
  return (
    f"{head} tokens={r['tokens']}: per device peak {r['peak_bytes'] / gib:.3f} GiB "
    f"(temp {r['temp_bytes'] / gib:.3f}, args {r['argument_bytes'] / gib:.3f}, "
    f"out {r['output_bytes'] / gib:.3f}); compile {r['compile_s']:.0f} s; {tm}"
  )


def measure(args: argparse.Namespace, t: int, n: int, kind: str) -> dict:
  """One point, in this interpreter (started with n fake devices)."""
  assert jax.device_count() == n, (jax.device_count(), n)
  cfg = load_config(
    args.config,
    [f"data.image_size={args.size}", f"model.renderer.patches={args.patches}",
     f"model.renderer.attention={kind}"],
  )  # fmt: skip
  mesh = sh.make_mesh(1, n)
  model = renderer_from_config(
    cfg, token_sharding=sh.named(mesh, sh.TOKENS), frame_sharding=sh.named(mesh, sh.FRAMES)
  )
  h, w_a, f_a = args.size, cfg.data.audio_window, cfg.data.n_mels
  frames = jax.ShapeDtypeStruct((1, t, h, h, 3), jnp.float32, sharding=sh.named(mesh, sh.FRAMES))
  audio = jax.ShapeDtypeStruct((1, t, w_a, f_a), jnp.float32, sharding=sh.named(mesh, sh.FRAMES))
  # parameters do not depend on T (sinusoidal temporal embeddings): init on 2 frames
  small = (jnp.zeros((1, 2, h, h, 3)), jnp.zeros((1, 2, h, h, 3)), jnp.zeros((1, 2, w_a, f_a)))
  timed = t * h * h <= args.time_limit_pixels
  init = jax.jit(model.init, out_shardings=sh.named(mesh, sh.REPLICATED))
  # memory only: abstract parameters are enough to compile, and skip compiling the initialiser
  params = (
    init(jax.random.PRNGKey(0), *small)
    if timed
    else jax.eval_shape(init, jax.random.PRNGKey(0), *small)
  )

  def step(params, background, shape, audio):
    def loss_fn(p):
      return jnp.mean(jnp.abs(model.apply(p, background, shape, audio) - background))

    loss, g = jax.value_and_grad(loss_fn)(params)
    return jax.tree.map(lambda p, d: p - 1e-3 * d, params, g), loss

  rep = sh.named(mesh, sh.REPLICATED)
  fn = jax.jit(step, out_shardings=(rep, rep), donate_argnums=0)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = fn.lower(params, frames, frames, audio).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  r = cfg.model.renderer
  out = {
    "frames": t,
    "devices": n,
    "attention": kind,
    "size": h,
    "tokens": t * args.patches**2,
    "temp_bytes": int(ma.temp_size_in_bytes),
    "argument_bytes": int(ma.argument_size_in_bytes),
    "output_bytes": int(ma.output_size_in_bytes),
    "alias_bytes": int(ma.alias_size_in_bytes),
    "peak_bytes": int(
      ma.temp_size_in_bytes
      + ma.argument_size_in_bytes
      + ma.output_size_in_bytes
      - ma.alias_size_in_bytes
    ),
    "compile_s": compile_s,
    "step_s": None,
    "model": {
      "base_channels": r.base_channels,
      "token_dim": r.token_dim,
      "depth": r.depth,
      "num_heads": r.num_heads,
      "patches": args.patches,
    },  # fmt: skip
  }
  if timed:
    rng = np.random.default_rng(0)
    put = lambda x: jax.device_put(x, sh.named(mesh, sh.FRAMES))  # noqa: E731
    x = put(rng.uniform(-1, 1, (1, t, h, h, 3)).astype(np.float32))
    a = put(rng.normal(size=(1, t, w_a, f_a)).astype(np.float32))
    params, loss = compiled(params, x, x, a)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      params, loss = compiled(params, x, x, a)
    jax.block_until_ready(loss)
    out["step_s"] = (time.perf_counter() - t0) / args.steps
  return out
