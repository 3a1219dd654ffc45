"""The adaptive smoothing and the inference joins with a trained, non-trivial renderer on a
real clip (tiny config; stage 2 with a large smooth_lr so a few steps move the smoothing), and
the smoothing's own learning rate on the jit and pmap paths (synthetic data)."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxtalk import infer, model_io
from jaxtalk.cli import main as cli_main
from jaxtalk.config import load_config
from jaxtalk.data.dataset import open_dataset
from jaxtalk.data.preprocess import preprocess
from jaxtalk.synthesis.windows import window_starts
from jaxtalk.train import state as state_lib
from jaxtalk.train.observe import kernel_records
from jaxtalk.train.synthetic import write_synthetic_dataset
from jaxtalk.train.train import restore_renderer_params, train_renderer

S1, S2 = 40, 10
OVERRIDES = [
  f"train.stage1_steps={S1}", f"train.stage2_steps={S2}", "train.smooth_lr=0.01",
  "train.sample_every=5", "train.eval_every=0", "train.ckpt_every=0", "train.val_fraction=0",
  "train.seq_len=8", "infer.window=8", "infer.overlap=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(grid_clip, tmp_path_factory):
  root = tmp_path_factory.mktemp("stab_trained")
  cfg = load_config("tiny", OVERRIDES)
  cache = tmp_path_factory.getbasetemp() / "jaxtalk-cache" / "landmarks"
  preprocess([grid_clip], root / "data", cfg, cache_dir=cache, progress=False, log=lambda m: None)
  train_renderer(cfg, root / "data", root / "renderer", show_progress=False)
  return cfg, root


def test_stage_two_kernels_differ_between_frames_and_are_recorded(trained, capsys):
  cfg, root = trained
  work = root / "renderer"
  recs = kernel_records(work / "metrics.jsonl")
  assert [r["step"] for r in recs] == [S1 + 5, S1 + S2]  # stage 2 only
  # at the start of stage 2 every frame used the same Gaussian; after S2 steps they differ
  last = np.load(work / "kernels" / f"step_{S1 + S2:07d}.npy")
  assert last.shape == (cfg.train.batch_size, cfg.train.seq_len, 5)
  np.testing.assert_allclose(last.sum(-1), 1.0, atol=1e-5)
  frames = last.reshape(-1, 5)
  assert np.abs(frames[:, None] - frames[None]).max() > 0.01  # per-frame kernels differ
  assert recs[-1]["frame_spread"] > 1e-3
  np.testing.assert_allclose(recs[-1]["std"], frames.std(0), atol=1e-5)
  # `jaxtalk plot` draws them
  assert cli_main(["plot", str(work)]) == 0
  assert (work / "kernels.png").is_file() and (work / "curves.png").is_file()
  capsys.readouterr()


def test_inference_reads_the_stage_from_the_checkpoint(trained):
  _, root = trained
  assert infer.trained_stage(root / "renderer") == 2
  assert infer.stage_from_meta({"step": S1, "stage1_steps": S1, "stage": 2}) == 1
  assert infer.stage_from_meta({"step": S1 + 1, "stage1_steps": S1}) == 2
  assert infer.stage_from_meta({"stage": 1}) == 1


def _models(cfg, root: pathlib.Path) -> infer.Models:
  from jaxtalk.face.landmark3d import FaceModel

  ds = open_dataset(root / "data")
  state = restore_renderer_params(cfg, root / "renderer")
  fm = FaceModel.from_arrays(ds.face_model_arrays())
  return infer.Models(cfg, fm, state, None, root, infer.trained_stage(root / "renderer"))


def test_no_seam_jump_larger_than_inside_a_window(trained):
  """Whole-sequence smoothing, then windows joined at their centres: on a real clip with the
  trained renderer, a frame-to-frame change across a seam is no larger than the largest one
  inside a window (and the renderer is not near-constant: it changes inside windows)."""
  cfg, root = trained
  models = _models(cfg, root)
  ds = open_dataset(root / "data")
  clip = ds.clip(ds.clip_names[0])
  n = 40
  crops, shapes = np.asarray(clip["frames"][:n]), np.asarray(clip["shape"][:n])
  masks, expr = np.asarray(clip["mask"][:n]), np.asarray(clip["expression"][:n])
  audio = np.asarray(clip["audio"][:n])
  weights = infer.smoothing_weights(models, expr)
  assert weights is not None and weights.shape == (n, 5)
  smoothed = infer.smooth_lazy(shapes, weights)[0:n]
  generate = infer.make_generate(models)
  window, overlap = cfg.infer.window, cfg.infer.overlap
  starts = window_starts(n, window, overlap)
  inputs = (crops, smoothed, masks, expr, audio)
  raw = [
    np.asarray(generate(models.renderer_state, *[x[None, s : s + window] for x in inputs]))[0]
    for s in starts
  ]
  raw = [r.astype(np.float64) for r in raw]
  inside = max(np.abs(np.diff(r, axis=0)).mean(axis=(1, 2, 3)).max() for r in raw)
  assert inside > 0.5, "the renderer is near-constant: the seam test would prove nothing"
  out = np.stack(list(infer.generate_crops(models, generate, *inputs, progress=False)))
  jumps = np.abs(np.diff(out.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
  seams = [s - 1 for s in starts[1:]]  # jumps around each window's first frame
  assert jumps.max() <= inside + 1.0, (jumps.max(), inside, seams)
  # no ghosting: every output frame is one window's render (up to the batched program's
  # last-bit differences, one uint8 level)
  for t in range(n):
    owners = [r[t - s] for r, s in zip(raw, starts, strict=True) if s <= t < s + window]
    assert min(np.abs(out[t] - o).max() for o in owners) <= 1.0


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_smoothing_has_its_own_learning_rate(parallel, tmp_path):
  """One stage-2 Adam step moves each parameter by about its learning rate (Adam's first step
  is lr * sign(gradient)): the smoothing's leaves by train.smooth_lr, the renderer's by
  train.lr, on both parallel paths."""
  data = write_synthetic_dataset(tmp_path / "d", n_clips=2, n_frames=12, size=64,
                                 expression_dim=16, n_points=18)  # fmt: skip
  lr, smooth_lr = 1e-6, 1e-2
  cfg = load_config("tiny", [
    "train.stage1_steps=0", "train.stage2_steps=1", f"train.lr={lr}",
    f"train.smooth_lr={smooth_lr}", "train.val_fraction=0", "train.eval_every=0",
    "train.sample_every=0", f"train.parallel={parallel}", "train.batch_size=1",
  ])  # fmt: skip
  train_renderer(cfg, data, tmp_path / "w", show_progress=False, parallel=parallel)
  after = restore_renderer_params(cfg, tmp_path / "w")
  # jitted as the runner does (eagerly, op by op, the init took 28 s)
  stats = state_lib.default_data_stats(cfg.data.n_mels)
  before = jax.jit(model_io.renderer_init_fn(cfg))(*state_lib.make_keys(cfg.seed), stats)

  def max_step(part: str) -> float:
    deltas = jax.tree.map(
      lambda a, b: float(np.abs(np.asarray(a, np.float64) - np.asarray(b)).max()),
      after.g_params[part],
      before.g_params[part],
    )
    return max(jax.tree.leaves(deltas))

  assert max_step("smoothing") == pytest.approx(smooth_lr, rel=0.02)
  assert max_step("renderer") == pytest.approx(lr, rel=0.02)
  assert json.loads((tmp_path / "w" / "metrics.jsonl").read_text().splitlines()[0])["event"]
