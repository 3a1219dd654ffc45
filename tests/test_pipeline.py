"""The Grain input pipeline (jaxtalk/data/pipeline.py) on a synthetic dataset written per the
dataset contract: windows, splits, determinism, iterator resume, host slicing."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk.data import pipeline as P
from jaxtalk.errors import ConfigError
from jaxtalk.train.synthetic import write_synthetic_dataset

T = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline") / "ds"
  write_synthetic_dataset(root, n_clips=3, n_frames=13, size=16, expression_dim=6, n_points=8)
  return P.open_data(root)


def _frame_ids(ds):
  # every frame of the synthetic data is unique (per-frame pixel noise): a frame's bytes
  # identify (clip, index)
  ids = {}
  for name in ds.clip_names:
    frames = np.asarray(ds.clip(name)["frames"])
    for i, f in enumerate(frames):
      ids[f.tobytes()] = (name, i)
  assert len(ids) == ds.total_frames
  return ids


def test_window_shapes_and_dtypes(dataset):
  segs, _, _ = P.split_segments(P.list_clips(dataset), 0.0, T)
  src = P.WindowSource(dataset, segs, T)
  w = src[0]
  assert w["frames"].dtype == np.uint8 and w["frames"].shape == (T, 16, 16, 3)
  assert w["shape"].dtype == np.uint8 and w["shape"].shape == (T, 16, 16, 3)
  assert w["mask"].dtype == np.uint8 and w["mask"].shape == (T, 16, 16)
  assert w["mask_points"].dtype == np.float32 and w["mask_points"].shape == (T, 8, 2)
  assert w["expression"].dtype == np.float32 and w["expression"].shape == (T, 6)
  assert w["audio"].dtype == np.float32 and w["audio"].shape == (T, 20, 80)
  a2e = P.WindowSource(dataset, segs, 8, P.A2E_KEYS)[0]
  assert set(a2e) == {"audio", "expression"}


def test_windows_never_cross_clip_boundaries(dataset):
  ids = _frame_ids(dataset)
  segs, _, _ = P.split_segments(P.list_clips(dataset), 0.0, T)
  src = P.WindowSource(dataset, segs, T)
  assert len(src) == 3 * (13 - T + 1)
  seen = set()
  for i in range(len(src)):
    frames = src[i]["frames"]
    where = [ids[f.tobytes()] for f in frames]
    clips = {c for c, _ in where}
    assert len(clips) == 1, f"window {i} spans clips {clips}"
    idx = [k for _, k in where]
    assert idx == list(range(idx[0], idx[0] + T)), "frames are consecutive"
    assert (where[0][0], idx[0]) == src.locate(i)
    seen.add(where[0])
  assert len(seen) == len(src)  # every start once
  # and through the shuffled, batched dataset
  it = iter(P.train_dataset(src, global_batch=4, seed=0))
  for _ in range(20):
    batch = next(it)
    for frames in batch["frames"]:
      assert len({ids[f.tobytes()][0] for f in frames}) == 1


def test_split_by_clip_and_single_clip_tail(dataset, tmp_path):
  clips = P.list_clips(dataset)
  train, val, how = P.split_segments(clips, 0.3, T)
  assert [s.clip for s in val] == ["clip002"] and len(train) == 2 and "clips held out" in how
  assert not {s.clip for s in train} & {s.clip for s in val}
  one = write_synthetic_dataset(tmp_path / "one", n_clips=1, n_frames=20, size=16, n_points=8)
  train, val, how = P.split_segments(P.list_clips(P.open_data(one)), 0.1, T)
  assert train == [P.Segment("clip000", 0, 16)] and val == [P.Segment("clip000", 16, 20)]
  assert "last 4 frames" in how
  # too short for a tail: no validation, said so
  train, val, how = P.split_segments(P.list_clips(P.open_data(one)), 0.1, 12)
  assert val == [] and "no validation" in how
  with pytest.raises(P.DatasetError, match="no clip has 64 frames"):
    P.split_segments(clips, 0.1, 64)


def test_same_seed_same_windows_and_other_seed_differs(dataset):
  segs, _, _ = P.split_segments(P.list_clips(dataset), 0.0, T)
  src = P.WindowSource(dataset, segs, T)

  def take(seed, n=12):
    it = iter(P.train_dataset(src, global_batch=3, seed=seed))
    return [next(it)["expression"] for _ in range(n)]

  a, b, c = take(7), take(7), take(8)
  assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
  # the index stream helper describes the same order
  order = next(P.window_index_stream(len(src), seed=7, batch_size=3))
  np.testing.assert_array_equal(a[0], np.stack([src[int(i)]["expression"] for i in order]))


def test_iterator_state_resumes_exactly(dataset):
  segs, _, _ = P.split_segments(P.list_clips(dataset), 0.0, T)
  src = P.WindowSource(dataset, segs, T)
  it = iter(P.train_dataset(src, global_batch=2, seed=1))
  for _ in range(17):  # past one epoch (30 windows / 2): the reshuffled second epoch too
    next(it)
  state = P.iterator_state(it)
  expected = [next(it)["frames"] for _ in range(6)]
  fresh = iter(P.train_dataset(src, global_batch=2, seed=1))
  fresh.set_state(state)
  got = [next(fresh)["frames"] for _ in range(6)]
  assert all(np.array_equal(x, y) for x, y in zip(expected, got, strict=True))


def test_hosts_get_disjoint_windows(dataset):
  segs, _, _ = P.split_segments(P.list_clips(dataset), 0.0, T)
  src = P.WindowSource(dataset, segs, T)
  ids = _frame_ids(dataset)
  starts = []
  for host in range(2):
    it = iter(P.train_dataset(src, global_batch=4, seed=0, process_index=host, process_count=2))
    got = set()
    for _ in range(15):  # 15 windows per host per epoch, 2 per batch
      for frames in next(it)["frames"]:
        got.add(ids[frames[0].tobytes()])
    starts.append(got)
  assert not starts[0] & starts[1]
  assert len(starts[0] | starts[1]) == len(src)
  with pytest.raises(P.DatasetError, match="does not divide"):
    P.train_dataset(src, global_batch=3, seed=0, process_count=2)


def test_eval_batches_are_fixed(dataset):
  _, val, _ = P.split_segments(P.list_clips(dataset), 0.3, T)
  src = P.WindowSource(dataset, val, T, stride=T)
  a = P.eval_batches(src, global_batch=2, max_batches=4)
  b = P.eval_batches(src, global_batch=2, max_batches=4)
  assert len(a) == 1  # 3 windows of stride 4 in a 13-frame clip -> one batch of 2
  assert all(np.array_equal(x["frames"], y["frames"]) for x, y in zip(a, b, strict=True))
  # Fewer windows than a batch: one batch, its windows repeated evenly (3 windows, 4 slots:
  # 0, 1, 1, 2), not none (a short validation tail still selects the checkpoint).
  (short,) = P.eval_batches(src, global_batch=4, max_batches=4)
  assert len(src) == 3
  expect = np.stack([src[i]["frames"] for i in (0, 1, 1, 2)])
  np.testing.assert_array_equal(short["frames"], expect)
  assert (
    P.eval_batches(P.WindowSource(dataset, [], T, stride=T), global_batch=4, max_batches=4) == []
  )


def test_audio_stats(dataset):
  mean, std = P.audio_stats(dataset, dataset.clip_names)
  mel = np.concatenate([np.asarray(dataset.clip(n)["mel"]) for n in dataset.clip_names])
  np.testing.assert_allclose(mean, mel.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(std, mel.std(0), rtol=1e-4, atol=1e-4)


def test_worker_processes_give_the_same_batches(dataset):
  segs, _, _ = P.split_segments(P.list_clips(dataset), 0.0, T)
  src = P.WindowSource(dataset, segs, T)
  ref = iter(P.train_dataset(src, global_batch=2, seed=5))
  want = [next(ref)["expression"] for _ in range(6)]
  it = iter(P.train_dataset(src, global_batch=2, seed=5, workers=2))
  try:
    got = [next(it)["expression"] for _ in range(3)]
    state = P.iterator_state(it)
    got += [next(it)["expression"] for _ in range(3)]
  finally:
    it.close()
  assert all(np.array_equal(x, y) for x, y in zip(want, got, strict=True))
  again = iter(P.train_dataset(src, global_batch=2, seed=5, workers=2))
  try:
    again.set_state(state)
    tail = [next(again)["expression"] for _ in range(3)]
  finally:
    again.close()
  assert all(np.array_equal(x, y) for x, y in zip(want[3:], tail, strict=True))


def test_mouth_oversample_repeats_windows_by_their_mouth_motion(tmp_path):
  # one 10-frame clip whose lips (hand-placed: corners 10 px apart, inner lips g px apart) open
  # to 5 px in frames 6-7 only: aperture 0.5 there, 0 elsewhere
  root = write_synthetic_dataset(tmp_path / "ds", n_clips=1, n_frames=10, size=16,
                                 expression_dim=6, n_points=8)  # fmt: skip
  lm = np.zeros((10, 68, 2), np.float32)
  lm[:, 54, 0] = 10.0
  gap = np.array([0, 0, 0, 0, 0, 0, 5, 5, 0, 0], np.float32)
  for _, lower in ((61, 67), (62, 66), (63, 65)):
    lm[:, lower, 1] = gap
  np.save(root / "clips" / "clip000" / "landmarks.npy", lm)
  ds = P.open_data(root)
  segs, _, _ = P.split_segments(P.list_clips(ds), 0.0, T)
  src = P.WindowSource(ds, segs, T)
  # windows start at frames 0-6; those starting at 3-6 hold an opening (range 0.5), the mean
  # range is 4 * 0.5 / 7, so they repeat 1 + round(0.5 / (2 / 7)) = 1 + round(1.75) = 3 times
  assert P.mouth_motion_repeats(src, 1.0).tolist() == [1, 1, 1, 3, 3, 3, 3]
  assert P.mouth_motion_repeats(src, 2.0).tolist() == [1, 1, 1, 5, 5, 5, 5]  # 1 + round(3.5)
  assert P.mouth_motion_repeats(src, 0.0).tolist() == [1] * 7
  with pytest.raises(ConfigError, match="mouth_oversample"):
    P.mouth_motion_repeats(src, -1.0)

  repeats = P.mouth_motion_repeats(src, 1.0)
  rep = P.WindowSource(ds, segs, T, repeats=repeats)
  assert len(rep) == 15 and rep.num_windows == 7
  assert [rep.locate(i)[1] for i in range(15)] == [0, 1, 2] + [3] * 3 + [4] * 3 + [5] * 3 + [6] * 3
  # one epoch of the shuffled stream (15 elements, batches of 3) draws window w repeats[w] times
  ids = _frame_ids(ds)
  it = iter(P.train_dataset(rep, global_batch=3, seed=0))
  starts = [ids[w[0].tobytes()][1] for _ in range(5) for w in next(it)["frames"]]
  assert np.bincount(starts, minlength=7).tolist() == repeats.tolist()
  with pytest.raises(ValueError):
    P.WindowSource(ds, segs, T, repeats=[1] * 6)
