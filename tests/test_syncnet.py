"""SyncNet: the Flax port of syncnet_python's `S`, its weight loader, the MFCC front end and the
Sync-C / Sync-D arithmetic. Weights are random arrays the tests create under syncnet_python's
state-dict names; the reference numbers below come from PyTorch running syncnet_python's
SyncNetModel.S on the same state dict and inputs, and from python_speech_features.mfcc (neither
is a dependency): scripts/syncnet_reference.py regenerates them (from a separate venv)."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest

from jaxtalk.errors import JaxtalkError, WeightsError
from jaxtalk.metrics import sync as S
from jaxtalk.metrics.syncnet_weights import (
  check_state_dict,
  expected_shapes,
  load_syncnet_variables,
)
from jaxtalk.models.syncnet import SyncNet


def make_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights with syncnet_python's key names and torch shapes (He-scaled convs)."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in expected_shapes().items():
    name = key.rsplit(".", 1)[1]
    if name == "running_var":
      a = rng.uniform(0.5, 1.5, shape)
    elif name == "weight" and len(shape) == 1:
      a = rng.uniform(0.5, 1.5, shape)
    elif name == "weight":
      a = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    else:
      a = rng.normal(0.0, 0.1, shape)
    state[key] = a.astype(np.float32)
  return state


def make_inputs(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  audio = rng.normal(0, 5, (2, 13, 20, 1)).astype(np.float32)
  lips = rng.uniform(0, 255, (1, 5, 224, 224, 3)).astype(np.float32)
  return audio, lips


@pytest.fixture(scope="module")
def weights_npz(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.npz"
  np.savez(path, **make_state_dict())
  return str(path)


@pytest.fixture(scope="module")
def scorer(weights_npz) -> S.SyncNetScorer:
  return S.SyncNetScorer.from_file(weights_npz, batch_size=2)


def test_expected_state_dict_layout():
  shapes = expected_shapes()
  assert shapes["netcnnaud.0.weight"] == (64, 1, 3, 3)
  assert shapes["netcnnaud.1.running_var"] == (64,)
  assert shapes["netcnnaud.18.weight"] == (512, 256, 5, 4)
  assert shapes["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
  assert shapes["netcnnlip.4.weight"] == (256, 96, 1, 5, 5)
  assert shapes["netcnnlip.18.weight"] == (512, 256, 1, 6, 6)
  assert shapes["netfcaud.3.weight"] == (1024, 512)
  assert shapes["netfclip.1.running_mean"] == (512,)
  # 12 convs x (2 + 4 BN) + 2 heads x (2 linears x 2 + 4 BN)
  assert len(shapes) == 12 * 6 + 2 * 8


def test_loaded_variables_match_the_model_tree(weights_npz):
  variables = load_syncnet_variables(weights_npz)
  model = SyncNet()
  audio, lips = make_inputs()
  init = jax.eval_shape(lambda: model.init(jax.random.key(0), audio, lips))
  got = jax.tree.map(lambda a: a.shape, variables)
  want = jax.tree.map(lambda a: a.shape, init)
  assert got == want


def test_embeddings_match_pytorch_syncnet(scorer):
  audio, lips = make_inputs()
  emb_a = scorer.embed_audio(audio)
  emb_v = scorer.embed_lips(lips)
  assert emb_a.shape == (2, 1024) and emb_v.shape == (1, 1024)
  # torch: S().load_state_dict(make_state_dict()); forward_aud / forward_lip on NCHW / NCDHW.
  torch_a = np.array(
    [[12.712705, -7.3345327, 38.784397, -23.124336], [21.831306, -5.1493225, 35.748016, -13.115394]]
  )
  torch_v = np.array([[331.73074, -410.3292, -623.4508, -887.8189]])
  np.testing.assert_allclose(emb_a[:, :4], torch_a, atol=1e-4 * 871)
  np.testing.assert_allclose(np.linalg.norm(emb_a, axis=1), [871.12836, 877.82495], rtol=1e-5)
  np.testing.assert_allclose(emb_v[:, :4], torch_v, atol=1e-4 * 23133)
  np.testing.assert_allclose(np.linalg.norm(emb_v, axis=1), [23133.305], rtol=1e-5)


def test_lip_stream_equals_batched_windows(scorer):
  rng = np.random.default_rng(3)
  crops = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
  # 3 windows with batch size 2: one full batch and one partial, from a stream of 8 crops.
  streamed = scorer.embed_lip_stream(iter(crops), 3)
  clips = np.stack([np.stack(crops[i : i + 5]) for i in range(3)])
  np.testing.assert_allclose(streamed, scorer.embed_lips(clips), rtol=1e-5, atol=1e-3)
  with pytest.raises(JaxtalkError, match="video ended"):
    scorer.embed_lip_stream(iter(crops[:5]), 3)


def test_loader_errors(tmp_path, weights_npz):
  missing = tmp_path / "nope.npz"
  with pytest.raises(WeightsError, match="not found.*nope.npz"):
    load_syncnet_variables(missing)
  state = make_state_dict()
  del state["netcnnlip.4.bias"]
  np.savez(tmp_path / "missing_key.npz", **state)
  with pytest.raises(WeightsError, match="missing key 'netcnnlip.4.bias'"):
    load_syncnet_variables(tmp_path / "missing_key.npz")
  state = make_state_dict()
  state["netfcaud.3.weight"] = np.zeros((512, 512), np.float32)
  np.savez(tmp_path / "bad_shape.npz", **state)
  with pytest.raises(WeightsError, match=r"'netfcaud.3.weight' has shape \(512, 512\)"):
    load_syncnet_variables(tmp_path / "bad_shape.npz")
  state = make_state_dict()
  state["netcnnaud.99.weight"] = np.zeros(3, np.float32)
  assert "unexpected key 'netcnnaud.99.weight'" in check_state_dict(state)
  (tmp_path / "junk.npz").write_bytes(b"not a zip file")
  with pytest.raises(WeightsError, match="cannot read"):
    load_syncnet_variables(tmp_path / "junk.npz")
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(WeightsError, match="expected a .npz"):
    load_syncnet_variables(tmp_path / "w.h5")


def test_loader_accepts_prefixes_and_batch_counters(tmp_path):
  state = {f"__S__.{k}": v for k, v in make_state_dict().items()}
  state["__S__.netcnnaud.1.num_batches_tracked"] = np.array(7)
  np.savez(tmp_path / "instance.npz", **state)
  variables = load_syncnet_variables(tmp_path / "instance.npz")
  assert variables["params"]["netcnnaud"]["conv0"]["kernel"].shape == (3, 3, 1, 64)
  assert variables["params"]["netcnnlip"]["conv0"]["kernel"].shape == (5, 7, 7, 3, 96)
  assert variables["batch_stats"]["netfclip"]["bn1"]["var"].shape == (512,)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_torch_file_without_torch_says_how_to_convert(tmp_path):
  path = tmp_path / "syncnet_v2.model"
  path.write_bytes(b"\x80\x02")
  with pytest.raises(WeightsError, match="convert_syncnet.py"):
    load_syncnet_variables(path)


def naive_scores(v: np.ndarray, a: np.ndarray, vshift: int) -> tuple[float, float, int]:
  """syncnet_python's calc_pdist + evaluate, written as loops."""
  n, d = v.shape
  mdist = []
  for j in range(2 * vshift + 1):
    total = 0.0
    for i in range(n):
      k = i + j - vshift
      a_k = a[k] if 0 <= k < n else np.zeros(d)
      total += float(np.sqrt(np.sum((v[i] - a_k + 1e-6) ** 2)))
    mdist.append(total / n)
  mdist = np.array(mdist)
  best = int(np.argmin(mdist))
  return float(mdist[best]), float(np.median(mdist) - mdist[best]), vshift - best


def test_sync_scores_equal_direct_computation():
  rng = np.random.default_rng(4)
  v, a = rng.normal(size=(23, 16)), rng.normal(size=(23, 16))
  dists = S.sync_distances(v, a, vshift=5)
  assert dists.shape == (23, 11)
  scores = S.sync_scores(dists)
  sync_d, sync_c, offset = naive_scores(v, a, 5)
  assert scores["sync_d"] == pytest.approx(sync_d, rel=1e-12)
  assert scores["sync_c"] == pytest.approx(sync_c, rel=1e-12)
  assert scores["sync_offset"] == offset


@pytest.mark.parametrize("k", [-4, 0, 3, 7])
def test_best_offset_recovers_a_known_shift(k):
  rng = np.random.default_rng(5)
  n, pad = 40, 10
  base = rng.normal(size=(n + 2 * pad, 32))
  video = base[pad : pad + n]
  audio = base[pad + k : pad + k + n]  # a_t = v_(t + k): the lips lag the audio by k frames
  scores = S.sync_scores(S.sync_distances(video, audio, vshift=15))
  assert scores["sync_offset"] == k
  assert scores["sync_c"] > 0


def test_mfcc_matches_python_speech_features():
  t = np.arange(1600) / 16000.0
  sig = np.round(8000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1234 * t) * t * 10)
  feat = S.mfcc(sig.astype(np.int16), 16000)
  assert feat.shape == (9, 13)
  # python_speech_features.mfcc(sig, 16000)[0] and [5]
  np.testing.assert_allclose(
    feat[0],
    [19.0774013923, 19.8535548546, -1.5296653459, -17.7179489974, -23.3687058406,
     -24.5400052982, -27.0280512066, -26.1212583677, -10.1158239601, 14.2544784,
     28.005250144, 20.3627369368, 4.3947833187],
    rtol=1e-9,
  )  # fmt: skip
  np.testing.assert_allclose(
    feat[5],
    [19.4217634779, 33.0102562614, -6.3554474463, -36.46472153, -22.8269815818,
     -2.646563871, -16.1219241467, -39.1814719002, -24.425736774, 18.2103916225,
     41.8750401026, 25.6999514203, -1.522070067],
    rtol=1e-9,
  )  # fmt: skip


def test_audio_windows_follow_video_frames():
  mfcc_tc = np.arange(60 * 13, dtype=np.float32).reshape(60, 13)
  wins = S.audio_windows(mfcc_tc, 5)
  assert wins.shape == (5, 13, 20, 1)
  np.testing.assert_array_equal(wins[2, :, :, 0], mfcc_tc[8:28].T)


def test_face_crop_geometry():
  frame = np.zeros((100, 120, 3), np.uint8)
  frame[..., 0] = 200  # red in RGB -> last channel in BGR
  boxes = np.tile(np.array([[40.0, 30.0, 80.0, 70.0]]), (20, 1))
  cx, cy, s = S.smooth_crop_boxes(boxes)[0]
  assert (cx, cy, s) == (60.0, 50.0, 20.0)
  crop = S.face_crop(frame, cx, cy, s)
  assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
  # Crop rows [30, 86) and cols [32, 88) lie inside the frame: pure red, as BGR.
  assert (crop[:, :, 2] == 200).all() and (crop[:, :, :2] == 0).all()
  # A face at the frame's corner reaches into the grey (110) padding.
  corner = S.face_crop(frame, 5.0, 5.0, 20.0)
  assert (corner[0, 0] == 110).all()
