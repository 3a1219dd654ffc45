"""The holdout split (issue 9 item 1): `jaxtalk preprocess --holdout` records, per source, the
frame from which on everything is held out; the Grain pipeline never lets a held-out frame into
training or validation windows."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from jaxtalk.cli import main as cli_main
from jaxtalk.config import load_config
from jaxtalk.data import pipeline as P
from jaxtalk.data.dataset import open_dataset
from jaxtalk.data.preprocess import holdout_cut, preprocess, train_frames
from jaxtalk.errors import ConfigError
from jaxtalk.train.synthetic import write_synthetic_dataset

HOLDOUT = 0.2
T = 4


def _quiet(_msg: str) -> None:
  pass


@pytest.fixture(scope="module")
def split_dir(grid_clip, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("holdout") / "person"
  cache = tmp_path_factory.getbasetemp() / "jaxtalk-cache" / "landmarks"
  # through the command line, as a user would
  rc = cli_main(
    ["preprocess", str(grid_clip), "-o", str(out), "--config", "tiny", "--holdout", str(HOLDOUT)]
    + ["--quiet", "--cache-dir", str(cache)]
  )
  assert rc == 0
  return out


def test_cut_arithmetic_by_hand():
  # 75 frames, 20 % held out: the last 15 frames (60..74)
  assert holdout_cut(75, 0.2) == 60
  assert holdout_cut(75, 0.0) == 75
  assert holdout_cut(10, 0.25) == 7  # 2.5 frames round half up: 3 held out
  # clips of a source cut at frame 60: before, straddling, after
  assert train_frames(0, 40, 60) == 40
  assert train_frames(40, 30, 60) == 20
  assert train_frames(60, 15, 60) == 0
  assert train_frames(70, 5, 60) == 0


def test_manifest_records_the_split(split_dir):
  manifest = json.loads((split_dir / "manifest.json").read_text())
  assert manifest["holdout"] == HOLDOUT
  assert manifest["settings"]["holdout"] == HOLDOUT
  (source,) = manifest["sources"].values()
  n = source["frames"]
  want_cut = n - int(np.floor(HOLDOUT * n + 0.5))
  assert source["holdout_cut"] == want_cut
  ds = open_dataset(split_dir)
  assert ds.holdout == HOLDOUT
  for name in ds.clip_names:
    info = manifest["clips"][name]
    want = min(info["num_frames"], max(0, want_cut - info["first_frame"]))
    assert info["train_frames"] == want == ds.train_frames(name)
    assert 0 < want < info["num_frames"]  # a GRID clip of 75 frames straddles the cut


def test_no_held_out_frame_reaches_training_or_validation(split_dir):
  ds = open_dataset(split_dir)
  (name,) = ds.clip_names
  frames = np.asarray(ds.clip(name)["frames"])
  keep = ds.train_frames(name)
  held = {frames[i].tobytes() for i in range(keep, len(frames))}
  assert len(held) > 1  # the held-out frames are distinct images, so bytes identify them
  held -= {frames[i].tobytes() for i in range(keep)}
  for val_fraction in (0.0, 0.1):
    train, val, how = P.split_segments(P.list_clips(ds), val_fraction, T)
    assert "held" in how or "holdout" in how
    for seg in train + val:
      assert seg.stop <= keep
    for segs in (train, val):
      if not segs:
        continue
      src = P.WindowSource(ds, segs, T)
      # every window of the source (which is all a shuffled train_dataset or eval_batches can
      # return), checked by content against the held-out frames
      for i in range(len(src)):
        assert not any(f.tobytes() in held for f in src[i]["frames"])
      last_clip, last_start = src.locate(len(src) - 1)
      assert last_start + T <= keep
  # the whole shuffled stream of the training iterator
  train, _, _ = P.split_segments(P.list_clips(ds), 0.1, T)
  it = iter(P.train_dataset(P.WindowSource(ds, train, T), global_batch=2, seed=0))
  for _ in range(30):
    batch = next(it)
    assert not any(f.tobytes() in held for f in batch["frames"].reshape(-1, *frames.shape[1:]))


def test_audio_stats_leave_the_held_out_tail_out(split_dir):
  ds = open_dataset(split_dir)
  (name,) = ds.clip_names
  mel = np.asarray(ds.clip(name)["mel"], np.float64)
  # mel row m describes frame m / 4 (10 ms hop, 25 fps)
  rows = int(np.floor(ds.train_frames(name) * 100.0 / ds.fps + 0.5))
  mean, std = P.audio_stats(ds, [name])
  np.testing.assert_allclose(mean, mel[:rows].mean(0), rtol=1e-5, atol=1e-5)
  assert not np.allclose(mean, mel.mean(0), atol=1e-4)


def test_face_model_learned_from_training_frames_only(split_dir, grid_clip, tmp_path):
  # The expression basis is scaled to unit variance over the frames it was learned from: over
  # the training frames, each used component has std 1 (it would not if the tail took part).
  ds = open_dataset(split_dir)
  (name,) = ds.clip_names
  expr = np.asarray(ds.clip(name)["expression"], np.float64)
  keep = ds.train_frames(name)
  face = np.load(split_dir / "face_model.npz")
  used = face["std"] > 0
  assert int(face["num_frames"]) == keep
  np.testing.assert_allclose(expr[:keep, used].std(0), 1.0, atol=0.05)


def test_datasets_without_a_split_train_on_everything(tmp_path):
  root = write_synthetic_dataset(tmp_path / "ds", n_clips=2, n_frames=13, size=16, n_points=8)
  ds = P.open_data(root)
  assert ds.holdout == 0.0
  assert [ds.train_frames(n) for n in ds.clip_names] == [13, 13]
  train, _, how = P.split_segments(P.list_clips(ds), 0.0, T)
  assert [s.stop for s in train] == [13, 13] and "holdout" not in how


def test_split_over_several_clips(tmp_path):
  # A source cut into three clips: entirely before the cut, straddling it, entirely after.
  root = write_synthetic_dataset(tmp_path / "ds", n_clips=3, n_frames=13, size=16, n_points=8)
  manifest = json.loads((root / "manifest.json").read_text())
  names = sorted(manifest["clips"])
  for name, keep in zip(names, (13, 6, 0), strict=True):
    manifest["clips"][name]["train_frames"] = keep
  manifest["holdout"] = 0.5
  (root / "manifest.json").write_text(json.dumps(manifest))
  ds = P.open_data(root)
  train, val, _ = P.split_segments(P.list_clips(ds), 0.0, T)
  assert train == [P.Segment(names[0], 0, 13), P.Segment(names[1], 0, 6)]
  train, val, _ = P.split_segments(P.list_clips(ds), 0.5, T)
  assert train == [P.Segment(names[0], 0, 13)] and val == [P.Segment(names[1], 0, 6)]
  with pytest.raises(P.DatasetError, match="no clip has 14 frames"):
    P.split_segments(P.list_clips(ds), 0.0, 14)


def test_bad_holdout_is_a_config_error(grid_clip, tmp_path):
  config = load_config("tiny", ["data.holdout=1.0"])
  with pytest.raises(ConfigError, match="data.holdout"):
    preprocess([grid_clip], tmp_path / "x", config, progress=False, log=_quiet)
