"""Issue 14, item 5: does the VGG16 perceptual term sharpen the mouth? (renderer alone)

  python scripts/perceptual_effect.py --data DS --workdir W [--base-steps 600] [--steps 100]

DS is a one-clip dataset (`jaxtalk preprocess tedlieu_60s.mp4 -o DS --config tiny`). With
train.val_fraction=0.2 the renderer trains on the clip's first 80 % of frames and never sees the
last 20 % (pipeline.split_segments). Protocol, at equal steps:
  1. a shared base: --base-steps stage-1 steps without the perceptual term;
  2. two arms continue from it for --steps more steps each: `off` (L1 + GAN) and `vgg16`
     (L1 + GAN + the VGG16 perceptual term, train.perceptual=vgg16);
  3. each arm renders the held-out 20 % from its own stored shape renders, expressions and audio
     (teacher-forced: isolates the renderer from audio2expression) with the stored mouth mask
     eroding the real frame, and is compared with the real frames on the face crop:
     L1, LPIPS (VGG and AlexNet) on the crop and on the mouth box (landmarks 48-67, a square
     1.5 x their extent, resized to 64²), and mouth sharpness = variance of the Laplacian of
     the grey mouth box, generated / real (1 = as sharp as the real mouth).
Prints a markdown table and writes W/effect.json. Deterministic (seeded) apart from timing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

import cv2
import jax
import numpy as np

from jaxtalk.config import load_config
from jaxtalk.data import pipeline as P
from jaxtalk.metrics.lpips import face_mouth_boxes, lpips
from jaxtalk.train import state as S
from jaxtalk.train import step as St
from jaxtalk.train.train import restore_renderer_params

VAL_FRACTION = 0.2


def train(data: str, workdir: pathlib.Path, config: str, steps: int, extra: list[str]) -> float:
  sets = [f"train.val_fraction={VAL_FRACTION}", f"train.stage1_steps={steps}",
          "train.eval_every=100000", "train.sample_every=100000", f"train.ckpt_every={steps}",
          "train.log_every=25", *extra]  # fmt: skip
  cmd = ["jaxtalk", "train", "renderer", "--config", config, "--data", data, "--workdir",
         str(workdir), "--stage", "1", "--resume"]  # fmt: skip
  for s in sets:
    cmd += ["--set", s]
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True)
  return time.perf_counter() - t0


def render_heldout(cfg, data: str, workdir: pathlib.Path) -> tuple[np.ndarray, np.ndarray, list]:
  """(generated, real) uint8 (N, S, S, 3) of the held-out frames, and their clip frame ids."""
  ds = P.open_data(data)
  t = cfg.train
  _, val, how = P.split_segments(P.list_clips(ds), VAL_FRACTION, t.seq_len)
  print(f"held out: {how}", flush=True)
  src = P.WindowSource(ds, val, t.seq_len, P.RENDERER_KEYS, stride=t.seq_len)
  state = restore_renderer_params(cfg, workdir)
  models = S.renderer_models(cfg)
  hp = St.RendererHParams.from_config(cfg)

  @jax.jit
  def fwd(batch):
    x = St.renderer_inputs(state, batch, None, hp, augment=False)
    fake, _, _ = St.generator_forward(
      state.g_params, state.g_stats, models, x["background"], x["shapes"], x["expression"],
      x["audio"], stage=1, train=False,
    )  # fmt: skip
    return St.to_uint8(fake)

  gen, real = [], []
  for i in range(len(src)):
    b = src[i]
    gen.append(np.asarray(fwd({k: v[None] for k, v in b.items()}))[0])
    real.append(b["frames"])
  seg = val[0]
  ids = list(range(seg.start, seg.start + len(src) * t.seq_len))
  return np.concatenate(gen), np.concatenate(real), ids


def metrics(gen: np.ndarray, real: np.ndarray, landmarks_tn2: np.ndarray) -> dict:
  mouth_g, mouth_r, lap_g, lap_r = [], [], [], []
  for g, r, lm in zip(gen, real, landmarks_tn2, strict=True):
    _, (y0, y1, x0, x1) = face_mouth_boxes(lm, g.shape[:2])
    mg, mr = g[y0:y1, x0:x1], r[y0:y1, x0:x1]
    for m, lap in ((mg, lap_g), (mr, lap_r)):
      lap.append(cv2.Laplacian(cv2.cvtColor(m, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
    mouth_g.append(cv2.resize(mg, (64, 64), interpolation=cv2.INTER_LINEAR))
    mouth_r.append(cv2.resize(mr, (64, 64), interpolation=cv2.INTER_LINEAR))
  mouth_g, mouth_r = np.stack(mouth_g), np.stack(mouth_r)
  out = {
    "frames": int(len(gen)),
    "l1_crop": float(np.mean(np.abs(gen.astype(np.float32) - real.astype(np.float32))) / 255),
    "sharpness_ratio_mouth": float(np.mean(lap_g) / np.mean(lap_r)),
  }
  for net in ("vgg", "alex"):
    out[f"lpips_{net}_crop"] = float(np.mean(lpips(gen, real, net)))
    out[f"lpips_{net}_mouth"] = float(np.mean(lpips(mouth_g, mouth_r, net)))
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--config", default="tiny")
  ap.add_argument("--base-steps", type=int, default=600)
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument(
    "--frame-stride", type=int, default=1,
    help="score every k-th held-out frame (all are rendered); saves CPU time",
  )  # fmt: skip
  ap.add_argument(
    "--vgg-set",
    action="append",
    default=[],
    help="extra --set for the vgg16 arm, e.g. train.perceptual_region=mouth_half",
  )
  args = ap.parse_args()
  root = pathlib.Path(args.workdir)
  base = root / "base"
  wall = {"base": train(args.data, base, args.config, args.base_steps, ["train.perceptual=off"])}
  arms = {"off": ["train.perceptual=off"], "vgg16": ["train.perceptual=vgg16", *args.vgg_set]}
  total = args.base_steps + args.steps
  results = {}
  lm = np.load(
    pathlib.Path(args.data) / "clips" / P.list_clips(args.data)[0].name / "landmarks.npy"
  )
  for arm, sets in arms.items():
    wd = root / f"{arm}_{args.steps}"
    if not wd.exists():
      shutil.copytree(base, wd)
    wall[arm] = train(args.data, wd, args.config, total, sets)
    cfg = load_config(args.config, [f"train.val_fraction={VAL_FRACTION}"])
    gen, real, ids = render_heldout(cfg, args.data, wd)
    k = args.frame_stride
    results[arm] = metrics(gen[::k], real[::k], lm[ids][::k])
    results[arm]["train_wall_s"] = wall[arm]
    np.save(root / f"{arm}_heldout_gen.npy", gen[::25])
    print(arm, json.dumps(results[arm]), flush=True)
  (root / "effect.json").write_text(json.dumps(
    {"base_steps": args.base_steps, "arm_steps": args.steps, "frame_stride": args.frame_stride,
     "results": results, "wall_s": wall},
    indent=1))  # fmt: skip
  keys = ["sharpness_ratio_mouth", "lpips_vgg_crop", "lpips_alex_crop", "lpips_vgg_mouth",
          "lpips_alex_mouth", "l1_crop"]  # fmt: skip
  print("| arm | " + " | ".join(keys) + " |")
  print("|---|" + "---:|" * len(keys))
  for arm, r in results.items():
    print(f"| {arm} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
