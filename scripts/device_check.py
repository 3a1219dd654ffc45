"""Accelerator figures for issue 10, in one process: renderer frames/s (256², bf16, several
batch sizes), the paper-config train step time and its MFU, and peak device memory.

  python scripts/device_check.py                 # on the GPU (paper config, 256², bf16)
  python scripts/device_check.py --cpu           # small CPU smoke run of every code path

MFU = model FLOPs per step / step time / peak FLOP/s. Model FLOPs per train step are counted
from XLA's cost analysis of each network's compiled forward: 3x the generator forward (forward
+ backward), 3x the discriminator on the generated frames inside the generator loss plus 2 x 3x
for its own update on real and generated frames, and 4x VGG19 when it is on (forward on both
images, backward through the generated one). Recomputation (remat) is not counted, as usual.
The peak is the card's dense bf16 figure (--peak-tflops to override).
"""

from __future__ import annotations

import argparse
import json
import resource
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


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cpu", action="store_true", help="tiny config, 64², small batches (smoke)")
  ap.add_argument("--batches", default=None, help="clips per forward (default 1,8,32; cpu 1,2)")
  ap.add_argument("--frames", type=int, default=None, help="frames per clip (default 8; cpu 4)")
  ap.add_argument("--size", type=int, default=None, help="image size (default 256; cpu 64)")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--train-batch", type=int, default=None, help="train clips (default 4; cpu 1)")
  ap.add_argument("--no-vgg", dest="vgg", action="store_false")
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--peak-tflops", type=float, default=None)
  args = ap.parse_args()

  import jax  # noqa: PLC0415

  from jaxtalk.bench import model as bench_model  # noqa: PLC0415
  from jaxtalk.bench import train as bench_train  # noqa: PLC0415
  from jaxtalk.config import load_config  # noqa: PLC0415
  from jaxtalk.models.discriminator import discriminator_from_config  # noqa: PLC0415
  from jaxtalk.models.renderer import renderer_from_config  # noqa: PLC0415
  from jaxtalk.models.vgg import VGG19Features  # noqa: PLC0415
  from jaxtalk.train.synthetic import write_synthetic_dataset  # noqa: PLC0415

  config = "tiny" if args.cpu else "grid"
  size = args.size or (64 if args.cpu else 256)
  t = args.frames or (4 if args.cpu else 8)
  batches = [int(b) for b in (args.batches or ("1,2" if args.cpu else "1,8,32")).split(",")]
  train_b = args.train_batch or (1 if args.cpu else 4)
  dev = jax.devices()[0]
  peak = _peak(dev.device_kind, args.peak_tflops)
  out: dict = {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__}
  print(f"device_check: {jax.device_count()} x {dev.device_kind} ({dev.platform}), "
        f"jax {jax.__version__}, config {config}, {size}², {args.dtype}", flush=True)  # fmt: skip

  cfg = load_config(config)
  cfg.data.image_size = size
  cfg.model.dtype = args.dtype
  w, f = cfg.data.audio_window, cfg.data.n_mels
  key = jax.random.PRNGKey(0)
  model = renderer_from_config(cfg)
  x1 = jax.random.uniform(key, (1, t, size, size, 3), minval=-1.0, maxval=1.0)
  a1 = jax.random.normal(key, (1, t, w, f))
  variables = bench_model._init(model, x1, x1, a1)
  out["renderer"] = {}
  g_gflop = None
  for b in batches:
    x = jax.random.uniform(key, (b, t, size, size, 3), minval=-1.0, maxval=1.0)
    a = jax.random.normal(key, (b, t, w, f))
    m = bench_model._measure(lambda v, x, a: model.apply(v, x, x, a), (variables, x, a), 3)
    fps = b * t / m["best_s"]
    if b == train_b:
      g_gflop = m["gflop"]
    out["renderer"][b] = {"frames_per_s": fps, **m}
    print(f"  renderer {size}² {args.dtype} B={b} T={t}: {fps:9.1f} frames/s "
          f"({m['best_s'] * 1000:.1f} ms per forward, compile {m['compile_s']:.1f} s)",
          flush=True)  # fmt: skip
  print(f"  after the renderer: {_mem()}", flush=True)

  # forward FLOPs of the networks in the train step, at the train batch
  xt = jax.random.uniform(key, (train_b, t, size, size, 3), minval=-1.0, maxval=1.0)
  if g_gflop is None:
    at = jax.random.normal(key, (train_b, t, w, f))
    g_gflop = bench_model._measure(lambda v, x, a: model.apply(v, x, x, a), (variables, xt, at), 1)[
      "gflop"
    ]
  disc = discriminator_from_config(cfg)
  d_gflop = bench_model._measure(disc.apply, (bench_model._init(disc, xt), xt), 1)["gflop"]
  vgg_gflop = 0.0
  if args.vgg:
    net = VGG19Features(dtype=jax.numpy.dtype(args.dtype))
    vgg_gflop = bench_model._measure(net.apply, (bench_model._init(net, xt), xt), 1)["gflop"]
  step_gflop = 3 * g_gflop + 9 * d_gflop + 4 * vgg_gflop
  del variables

  cfg.train.batch_size = train_b
  cfg.train.seq_len = t
  with tempfile.TemporaryDirectory(prefix="jaxtalk-device-check-") as tmp:
    write_synthetic_dataset(
      tmp + "/ds", n_clips=2, n_frames=t + 4, size=size, expression_dim=cfg.data.expression_dim,
      audio_window=w, n_mels=f,
    )  # fmt: skip
    r = bench_train.time_step(cfg, tmp + "/ds", args.steps, 1, args.vgg)
  tflops = step_gflop / r["step_s"] / 1e3
  mfu = None if peak is None else tflops * 1e12 / peak
  out["train"] = {**r, "model_gflop": step_gflop, "tflops": tflops, "mfu": mfu, "batch": train_b}
  mfu_txt = "n/a (unknown peak: --peak-tflops)" if mfu is None else f"{100 * mfu:.1f} %"
  print(f"  train step {size}² {args.dtype} B={train_b} T={t} vgg={args.vgg}: {r['step_s']:.3f} s "
        f"(compile {r['compile_s']:.1f} s), model {step_gflop:.0f} GFLOP -> {tflops:.2f} TFLOP/s, "
        f"MFU {mfu_txt}", flush=True)  # fmt: skip
  out["peak_memory"] = _mem()
  print(f"  peak memory: {out['peak_memory']}", flush=True)
  print(json.dumps(out, default=float))
  return 0


if __name__ == "__main__":
  sys.exit(main())
