"""Training loops (jaxtalk/train): overfitting, exact resume across the stage boundary, the
non-finite stop, and the whole CLI on a dataset preprocessed from real GRID clips.

Compiled steps are shared between the tests of this process (jaxtalk.train.train caches them
by program), so every test after the first pays only for its own new programs.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxtalk.cli import main
from jaxtalk.config import load_config
from jaxtalk.train.a2e_train import restore_a2e_params
from jaxtalk.train.checkpoint import Checkpoints
from jaxtalk.train.observe import read_metrics
from jaxtalk.train.synthetic import write_synthetic_dataset
from jaxtalk.train.train import TrainingDiverged, restore_renderer_params, train_renderer

PERSON = ("id2_vcd_swwp2s", "pwij3p")  # two clips of one speaker

# the loop's bookkeeping, quiet and without validation / samples unless a test wants them
QUIET = [
  "train.log_every=1", "train.sample_every=0", "train.eval_every=0", "train.ckpt_every=1000",
  "train.val_fraction=0.0",
]  # fmt: skip


def tiny(*overrides: str):
  return load_config("tiny", [*QUIET, *overrides])


def synthetic(root: pathlib.Path, **kw) -> pathlib.Path:
  # the shapes of a tiny-config GRID dataset (64x64, E=16, W=20, 18 mask points): the compiled
  # programs are the same for both
  return write_synthetic_dataset(root, size=64, expression_dim=16, n_points=18, **kw)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> pathlib.Path:
  return synthetic(tmp_path_factory.mktemp("synth") / "ds", n_clips=2, n_frames=24)


def train_records(workdir: pathlib.Path, key: str) -> list[float]:
  return [r[key] for r in read_metrics(workdir / "metrics.jsonl") if r.get("split") == "train"]


def leaves(state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def test_overfits_one_window(tmp_path):
  data = synthetic(tmp_path / "one", n_clips=1, n_frames=4)  # exactly one window
  cfg = tiny("train.stage1_steps=30", "train.stage2_steps=0")
  result = train_renderer(cfg, data, tmp_path / "w", show_progress=False)
  assert result.step == 30
  l1 = train_records(tmp_path / "w", "l1")
  assert len(l1) == 30 and np.isfinite(l1).all()
  first, last = np.mean(l1[:3]), np.mean(l1[-3:])
  assert last < 0.5 * first, f"L1 {first:.3f} -> {last:.3f}"


def test_resume_is_exact_across_the_stage_boundary(synth, tmp_path):
  """4 steps straight == 2 steps (stage 1), a restart from the checkpoint with new objects,
  2 more (stage 2): every array of the state bit for bit, and the same losses."""
  steps = ["train.stage1_steps=2", "train.stage2_steps=2"]
  a = train_renderer(tiny(*steps), synth, tmp_path / "a", show_progress=False)
  b1 = train_renderer(tiny(*steps), synth, tmp_path / "b", stage="1", show_progress=False)
  assert (a.step, b1.step) == (4, 2)
  assert (tmp_path / "b/checkpoints/2/data").is_dir()  # the boundary checkpoint has the iterator
  b2 = train_renderer(tiny(*steps), synth, tmp_path / "b", resume=True, show_progress=False)
  assert b2.step == 4
  cfg = tiny(*steps)
  sa = restore_renderer_params(cfg, tmp_path / "a")
  sb = restore_renderer_params(cfg, tmp_path / "b")
  assert int(sa.step) == int(sb.step) == 4
  la, lb = leaves(sa), leaves(sb)
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_array_equal(x, y)
  assert train_records(tmp_path / "a", "loss_g") == train_records(tmp_path / "b", "loss_g")
  # stage 2 moved the smoothing module (stage 1 leaves it at its initial values)
  s1 = restore_renderer_params(cfg, tmp_path / "b", step=2)
  moved = jax.tree.map(lambda u, v: bool((np.asarray(u) != np.asarray(v)).any()),
                       s1.g_params["smoothing"], sb.g_params["smoothing"])  # fmt: skip
  assert any(jax.tree.leaves(moved))


def test_refuses_to_overwrite_and_stage_2_needs_stage_1(synth, tmp_path):
  cfg = tiny("train.stage1_steps=1", "train.stage2_steps=0")
  train_renderer(cfg, synth, tmp_path / "w", show_progress=False)
  with pytest.raises(Exception, match="--resume"):
    train_renderer(cfg, synth, tmp_path / "w", show_progress=False)
  with pytest.raises(Exception, match="run --stage 1"):
    train_renderer(tiny("train.stage1_steps=5"), synth, tmp_path / "fresh", stage="2",
                   show_progress=False)  # fmt: skip


def test_nonfinite_loss_stops_with_the_last_good_state(tmp_path):
  data = synthetic(tmp_path / "nan", n_clips=2, n_frames=24)
  audio = np.load(data / "clips/clip001/audio.npy", mmap_mode="r+")
  audio[10:14] = np.nan  # a NaN input somewhere in the second clip: some batch will hit it
  audio.flush()
  del audio
  cfg = tiny("train.stage1_steps=40", "train.stage2_steps=0")
  with pytest.raises(TrainingDiverged, match=r"at step (\d+)") as info:
    train_renderer(cfg, data, tmp_path / "w", show_progress=False)
  bad = int(info.value.args[0].split("at step ")[1].split(";")[0])
  ckpt = Checkpoints(tmp_path / "w", keep=2)
  assert ckpt.latest_step() == bad
  ckpt.close()
  state = restore_renderer_params(cfg, tmp_path / "w")
  assert int(state.step) == bad and int(state.bad_step) == bad
  assert all(np.isfinite(x).all() for x in leaves(state.g_params))
  events = [r for r in read_metrics(tmp_path / "w/metrics.jsonl") if r.get("event") == "diverged"]
  assert events and events[0]["step"] == bad
  # every logged step before it was finite
  assert all(np.isfinite(train_records(tmp_path / "w", "loss_g")))


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def grid_dataset(grid_dir, require_data, tmp_path_factory) -> pathlib.Path:
  clips = [grid_dir / f"{name}.mpg" for name in PERSON]
  require_data(clips, "the two GRID clips of one speaker")
  from jaxtalk.data.preprocess import preprocess

  out = tmp_path_factory.mktemp("grid") / "person"
  cache = tmp_path_factory.getbasetemp() / "jaxtalk-cache" / "landmarks"
  preprocess(clips, out, load_config("tiny"), cache_dir=cache, progress=False, log=lambda m: None)
  return out


def test_end_to_end_on_grid(grid_dataset, tmp_path, capsys):
  w = tmp_path / "run"
  common = ["--config", "tiny", "--data", str(grid_dataset), "--workdir", str(w), "--no-progress"]
  sets = [
    "train.stage1_steps=2", "train.stage2_steps=2", "train.log_every=1", "train.sample_every=2",
    "train.eval_every=2", "train.ckpt_every=2", "train.eval_batches=1",
  ]  # fmt: skip
  argv = ["train", "renderer", *common, *[a for s in sets for a in ("--set", s)]]
  assert main(argv) == 0
  out = capsys.readouterr().out
  assert "perceptual loss OFF" in out  # said at start, never a silent fallback
  assert sorted(int(p.name) for p in (w / "checkpoints").iterdir()) == [2, 4]  # keep=2
  assert len(list((w / "best").iterdir())) == 1
  assert (w / "samples/step_0000002.png").is_file() and (w / "samples/step_0000004.png").is_file()
  assert (w / "face_model.npz").read_bytes() == (grid_dataset / "face_model.npz").read_bytes()
  records = read_metrics(w / "metrics.jsonl")
  start = records[0]
  assert start["event"] == "start" and start["perceptual"] is False and "OFF" in start["note"]
  val = [r for r in records if r.get("split") == "val"]
  assert [r["step"] for r in val] == [2, 4] and all(np.isfinite(r["rec"]) for r in val)
  meta = json.loads((w / "checkpoints/4/meta/metadata").read_text())
  assert meta["stage"] == 2 and meta["config"]["name"] == "tiny"
  cfg = load_config("tiny")
  state = restore_renderer_params(cfg, w)
  assert int(state.step) == 4 and np.isfinite(np.asarray(state.data_stats["audio_mean"])).all()
  best = restore_renderer_params(cfg, w, best=True)
  assert int(best.step) in (2, 4)

  # a run in the same workdir without --resume is refused; with it, it continues
  assert main(argv) == 2
  assert "--resume" in capsys.readouterr().err
  more = [a if a != "train.stage2_steps=2" else "train.stage2_steps=3" for a in argv]
  assert main([*more, "--resume"]) == 0
  assert int(restore_renderer_params(cfg, w).step) == 5

  # audio2expression, separately
  wa = tmp_path / "a2e"
  a2e = ["train", "a2e", "--config", "tiny", "--data", str(grid_dataset), "--workdir", str(wa),
         "--no-progress", "--set", "a2e_train.steps=3", "--set", "train.log_every=1",
         "--set", "train.eval_every=3", "--set", "train.ckpt_every=3"]  # fmt: skip
  assert main(a2e) == 0
  assert (wa / "checkpoints/3/state").is_dir()
  a2e_state = restore_a2e_params(cfg, wa)
  assert int(a2e_state.step) == 3 and int(restore_a2e_params(cfg, wa, best=True).step) == 3
  a2e_records = read_metrics(wa / "metrics.jsonl")
  assert [r["step"] for r in a2e_records if r.get("split") == "val"] == [3]
  assert len([r for r in a2e_records if r.get("split") == "train"]) == 3

  # loss curves
  png = tmp_path / "curves.png"
  assert main(["plot", str(w), "-o", str(png)]) == 0
  assert png.is_file() and png.stat().st_size > 10_000
