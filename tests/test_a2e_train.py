"""audio2expression training for issue 15: the loss against NumPy, the mouth basis against the
face model, the audio augmentation's known cases, and the holdout split: no held-out frame
reaches a2e training, its audio statistics or its validation (model selection)."""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import numpy as np
import optax
import pytest

from jaxtalk import infer, model_io
from jaxtalk.config import load_config
from jaxtalk.data.dataset import DatasetError
from jaxtalk.data.pipeline import open_data
from jaxtalk.face.landmark3d import FaceModel
from jaxtalk.model_io import a2e_model, init_a2e_state
from jaxtalk.models.audio2expression import Audio2Expression, Audio2ExpressionEnsemble
from jaxtalk.train.a2e_step import a2e_loss, a2e_train_step, augment_audio, mouth_basis
from jaxtalk.train.a2e_train import LossParams, loss_params, train_a2e, training_clips
from jaxtalk.train.observe import read_metrics
from jaxtalk.train.synthetic import write_synthetic_dataset
from jaxtalk.train.train import TrainingDiverged

QUIET = [
  "train.log_every=1", "train.eval_every=0", "train.ckpt_every=1000", "a2e_train.steps=3",
  "a2e_train.mouth_weight=1.0", "a2e_train.corr_weight=1.0", "a2e_train.std_weight=0.5",
  "a2e_train.aug_gain_db=6", "a2e_train.aug_noise_prob=0.5", "a2e_train.aug_stretch=0.1",
  "model.a2e.deltas=True", "model.a2e.dropout=0.1",
]  # fmt: skip


def _pearson(x, y):
  x = x - x.mean()
  y = y - y.mean()
  return (x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-8)


def test_loss_against_numpy():
  rng = np.random.default_rng(0)
  pred = rng.normal(size=(2, 8, 3)).astype(np.float32)
  tgt = rng.normal(size=(2, 8, 3)).astype(np.float32)
  basis = rng.normal(size=(3, 4)).astype(np.float32)
  hp = LossParams(l2_weight=0.5, velocity_weight=2.0, mouth_weight=3.0, corr_weight=0.7,
                  std_weight=1.5)  # fmt: skip
  total, aux = a2e_loss(pred, tgt, basis, hp)
  mp, mt = pred @ basis, tgt @ basis
  scale = 1.0 / np.mean((basis**2).sum(1))
  ref = {
    "l2": np.mean((pred - tgt) ** 2),
    "velocity": np.mean((np.diff(pred, axis=1) - np.diff(tgt, axis=1)) ** 2),
    "mouth": scale * np.mean((mp - mt) ** 2),
    "mouth_vel": scale * np.mean((np.diff(mp, axis=1) - np.diff(mt, axis=1)) ** 2),
    "corr": 1 - np.mean([_pearson(mp[b, :, k], mt[b, :, k]) for b in range(2) for k in range(4)]),
    "std": np.mean(np.abs(np.log(mp.std(axis=1) / mt.std(axis=1)))),
  }
  for k, v in ref.items():
    np.testing.assert_allclose(float(aux[k]), v, rtol=2e-4, err_msg=k)
  want = (0.5 * ref["l2"] + 2 * ref["velocity"] + 3 * (ref["mouth"] + ref["mouth_vel"])
          + 0.7 * ref["corr"] + 1.5 * ref["std"])  # fmt: skip
  np.testing.assert_allclose(float(total), want, rtol=2e-4)
  # A perfect prediction: every term 0 (corr 1 - 1, std log 1).
  total, _ = a2e_loss(tgt, tgt, basis, hp)
  assert abs(float(total)) < 1e-4


def test_mouth_basis_matches_the_face_model():
  rng = np.random.default_rng(1)
  e_dim = 5
  identity = rng.normal(size=(68, 3)) * 10
  identity[48], identity[54] = (-25.0, 30.0, 0.0), (25.0, 30.0, 0.0)  # width 50 mm
  comps, _ = np.linalg.qr(rng.normal(size=(66, e_dim)))
  fm = FaceModel(identity=identity, components=comps, std=np.array([3.0, 2.0, 1.0, 0.5, 0.0]),
                 explained_variance_ratio=np.ones(e_dim) / e_dim,
                 extra_vertices=np.zeros((0, 3)))  # fmt: skip
  basis = mouth_basis(fm, e_dim)
  e = rng.normal(size=e_dim)
  moved = (fm.shape(e)[48:68, :2] - fm.shape(np.zeros(e_dim))[48:68, :2]) / 50.0
  np.testing.assert_allclose(e @ basis, moved.reshape(-1), rtol=1e-5, atol=1e-6)
  # No landmark3d model (e.g. DECA): the identity, i.e. the plain expression L2.
  np.testing.assert_array_equal(mouth_basis(None, 3), np.eye(3))


def test_augmentation_known_cases():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 4, 20, 8)).astype(np.float32)
  off = LossParams()
  np.testing.assert_array_equal(np.asarray(augment_audio(x, jax.random.key(0), off)), x)
  # Gain: one constant per sequence, within +- 6 dB of power (natural log: 6 * ln10 / 10).
  out = np.asarray(augment_audio(x, jax.random.key(0), LossParams(aug_gain_db=6.0)))
  shift = out - x
  np.testing.assert_allclose(shift, shift[:, :1, :1, :1] * np.ones_like(shift), atol=1e-5)
  assert np.abs(shift).max() <= 6 * np.log(10) / 10 + 1e-5 and np.abs(shift).max() > 0
  # Noise only adds power; stretch keeps the centre row of every window.
  noisy = np.asarray(augment_audio(x, jax.random.key(1), LossParams(aug_noise_prob=1.0)))
  assert (noisy >= x - 1e-6).all() and (noisy > x + 1e-6).any()
  st = np.asarray(augment_audio(x, jax.random.key(2), LossParams(aug_stretch=0.2)))
  np.testing.assert_allclose(st[:, :, 10], x[:, :, 10], atol=1e-6)
  assert not np.allclose(st, x)


def _poisoned(root: pathlib.Path, n: int = 64, keep: int = 44) -> pathlib.Path:
  """A one-clip synthetic dataset whose frames from `keep` on hold NaN audio and expressions:
  any of them reaching training, the audio statistics or validation makes a loss NaN."""
  ds = write_synthetic_dataset(root, n_clips=1, n_frames=n, size=64, expression_dim=16,
                               n_points=18)  # fmt: skip
  for field in ("audio", "expression"):
    path = ds / "clips/clip000" / f"{field}.npy"
    arr = np.load(path)
    arr[keep:] = np.nan
    np.save(path, arr)
  return ds


def _cfg(*extra):
  # batch 1: the 16-frame validation tail makes one full batch
  return load_config("tiny", [*QUIET, "train.val_fraction=0.25", "a2e_train.batch_size=1", *extra])


def test_held_out_frames_never_reach_a2e_training(tmp_path):
  ds = _poisoned(tmp_path / "ds")
  # Control: without a split the poisoned frames are trained on and the run diverges.
  with pytest.raises(TrainingDiverged):
    train_a2e(_cfg(), ds, tmp_path / "all", show_progress=False)
  # holdout=20/64 for a dataset without a recorded split: ceil(0.3125 * 64) = 20 frames out.
  res = train_a2e(_cfg(), ds, tmp_path / "cut", show_progress=False, holdout=20 / 64)
  assert res.step == 3
  recs = read_metrics(tmp_path / "cut/metrics.jsonl")
  train = [r for r in recs if r.get("split") == "train"]
  val = [r for r in recs if r.get("split") == "val"]
  assert len(train) == 3 and all(np.isfinite(r["loss"]) for r in train)
  assert len(val) == 1 and np.isfinite(val[0]["loss"])  # model selection saw finite frames
  start = next(r for r in recs if r.get("event") == "start")
  assert "20 frames of the holdout split left out" in start["val_split"]
  clips = training_clips(open_data(ds), 20 / 64)
  assert [(c.num_frames, c.usable_frames) for c in clips] == [(64, 44)]


def test_recorded_split_is_respected(tmp_path):
  ds = _poisoned(tmp_path / "ds")
  manifest = json.loads((ds / "manifest.json").read_text())
  manifest["holdout"] = 0.3
  manifest["clips"]["clip000"]["train_frames"] = 44
  (ds / "manifest.json").write_text(json.dumps(manifest))
  res = train_a2e(_cfg(), ds, tmp_path / "w", show_progress=False)
  assert res.step == 3 and np.isfinite(res.best_val)
  # A different --holdout than the recorded one is a clear error, not a silent re-split.
  with pytest.raises(DatasetError, match="records a holdout of 0.3, not 0.2"):
    training_clips(open_data(ds), 0.2)


def test_deltas_of_a_steady_sound_are_zero():
  """With a log-mel constant along each window's time axis the deltas are 0, so the deltas
  model equals a plain model whose first layer is the deltas model's first half of rows."""
  kw = dict(expression_dim=4, dim=16, depth=1, num_heads=2, max_frames=8, audio_channels=8)
  with_d, plain = Audio2Expression(**kw, deltas=True), Audio2Expression(**kw)
  rng = np.random.default_rng(3)
  steady = np.repeat(rng.normal(size=(1, 5, 1, 6)), 20, axis=2).astype(np.float32)
  params = with_d.init(jax.random.key(0), steady)["params"]
  enc = params["audio"]["Dense_0"]
  assert enc["kernel"].shape == (12, 8)  # 6 mel bins + 6 deltas
  cut = jax.tree.map(lambda x: x, params)
  cut["audio"]["Dense_0"] = {"kernel": enc["kernel"][:6], "bias": enc["bias"]}
  np.testing.assert_allclose(
    np.asarray(with_d.apply({"params": params}, steady)),
    np.asarray(plain.apply({"params": cut}, steady)),
    rtol=1e-5, atol=1e-6,
  )  # fmt: skip
  # A changing sound: the deltas half matters.
  moving = rng.normal(size=(1, 5, 20, 6)).astype(np.float32)
  assert not np.allclose(
    with_d.apply({"params": params}, moving), plain.apply({"params": cut}, moving), atol=1e-4
  )


def _slice(tree, k):
  return jax.tree.map(lambda x: x[k], tree)


def test_ensemble_members_are_independent_models():
  """Every member of Audio2ExpressionEnsemble is an Audio2Expression with its own parameters:
  its output equals the plain model applied to its slice; the ensemble's output is their mean."""
  kw = dict(expression_dim=4, dim=16, depth=1, num_heads=2, max_frames=8, audio_channels=8,
            deltas=True)  # fmt: skip
  ens, plain = Audio2ExpressionEnsemble(**kw, members=3), Audio2Expression(**kw)
  rng = np.random.default_rng(5)
  audio = rng.normal(size=(2, 5, 7, 6)).astype(np.float32)
  params = ens.init(jax.random.key(0), audio)["params"]
  assert jax.tree.leaves(params)[0].shape[0] == 3
  per = [np.asarray(plain.apply({"params": _slice(params["member"], k)}, audio)) for k in range(3)]
  assert not np.allclose(per[0], per[1], atol=1e-3)  # initialised apart
  got = np.asarray(ens.apply({"params": params}, audio, per_member=True))
  np.testing.assert_allclose(got, np.stack(per), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(ens.apply({"params": params}, audio)), np.mean(per, axis=0), rtol=1e-5, atol=1e-6
  )
  # One audio per member: member k sees only its own.
  own = np.stack([audio, 2 * audio, -audio])
  got = np.asarray(ens.apply({"params": params}, own, per_member=True))
  for k in range(3):
    want = plain.apply({"params": _slice(params["member"], k)}, own[k])
    np.testing.assert_allclose(got[k], np.asarray(want), rtol=1e-5, atol=1e-6)


def test_ensemble_step_trains_each_member_on_its_own_loss():
  """Without augmentation or dropout (nothing random), one ensemble step gives member k exactly
  the gradient one plain a2e step from member k's parameters on member k's part of the batch
  gives: the members train independently, each on its whole own loss (plain SGD with rate 1,
  so the update is the gradient itself; Adam's first step would hide a scale)."""
  plain = ["model.a2e.dropout=0.0", "a2e_train.aug_gain_db=0", "a2e_train.aug_noise_prob=0",
           "a2e_train.aug_stretch=0"]  # fmt: skip
  cfg, ens_cfg = _cfg(*plain), _cfg(*plain, "model.a2e.members=2")
  rng = np.random.default_rng(1)
  t, w, f, e = 8, cfg.data.audio_window, cfg.data.n_mels, cfg.data.expression_dim
  batch = {  # 2 windows for each of the 2 members
    "audio": rng.normal(size=(4, t, w, f)).astype(np.float32),
    "expression": rng.normal(size=(4, t, e)).astype(np.float32),
  }
  hp = loss_params(cfg.a2e_train)
  basis = np.eye(e, dtype=np.float32)
  tx = optax.sgd(1.0)

  def one_step(c, params=None, rows=slice(None)):
    model = a2e_model(c)
    init = functools.partial(init_a2e_state, model=model, tx=tx, seq_len=t, audio_window=w,
                             n_mels=f)  # fmt: skip
    st = jax.jit(init)(jax.random.key(0), jax.random.key(1))
    if params is not None:
      st = st.replace(params=params, opt=tx.init(params))
    part = {k: v[rows] for k, v in batch.items()}
    # jitted: op by op, the transformer's eager dispatch took 4x the compile
    step = jax.jit(functools.partial(a2e_train_step, model=model, tx=tx, hp=hp))
    new, metrics = step(st, part, jax.random.key(2), basis_ek=basis)
    return st.params, jax.tree.map(lambda x, y: np.asarray(x - y), new.params, st.params), metrics

  before, grad_ens, m_ens = one_step(ens_cfg)
  losses = []
  for k in range(2):
    _, grad, m = one_step(cfg, _slice(before["member"], k), slice(2 * k, 2 * k + 2))
    losses.append(float(m["loss"]))
    # atol on the scale of the whole gradient: some leaves (attention's key bias) have a true
    # gradient of 0, and float noise of 1e-9 there
    scale = max(np.abs(x).max() for x in jax.tree.leaves(grad))
    for got, want in zip(jax.tree.leaves(_slice(grad_ens["member"], k)), jax.tree.leaves(grad)):
      np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * scale)
  np.testing.assert_allclose(float(m_ens["loss"]), np.mean(losses), rtol=1e-5)
  assert abs(losses[0] - losses[1]) > 1e-4  # two different models, not one twice


def test_trained_ensemble_keeps_each_member_at_its_own_best_step(tmp_path):
  """With validation at every step, the best checkpoint holds, member by member, the parameters
  of the step where that member's own validation loss (logged) was lowest: member k's slice
  equals the slice of the checkpoint of its own best step. Inference predicts the members' mean.
  A run stopped half-way and resumed selects the same."""
  ds = write_synthetic_dataset(tmp_path / "ds", n_clips=1, n_frames=64, size=64,
                               expression_dim=16, n_points=18)  # fmt: skip
  every = ["model.a2e.members=2", "a2e_train.gain_cap=0", "train.eval_every=1",
           "train.ckpt_every=1", "train.keep=10", "a2e_train.lr=3e-3"]  # fmt: skip
  cfg = _cfg(*every, "a2e_train.steps=8")
  train_a2e(cfg, ds, tmp_path / "w", show_progress=False)
  vals = [m for m in read_metrics(tmp_path / "w" / "metrics.jsonl") if m.get("split") == "val"]
  steps = np.array([m["step"] for m in vals])
  member_loss = np.array([m["member_loss"] for m in vals])  # (steps, 2)
  best_steps = steps[np.argmin(member_loss, axis=0)]
  # Not the trivial case: the two members are best at different steps.
  assert best_steps[0] != best_steps[1], member_loss
  best = infer.restore_a2e_state(cfg, tmp_path / "w")  # what inference restores: the best
  assert {x.shape[0] for x in jax.tree.leaves(best.params)} == {2}
  for k in range(2):
    at = model_io.restore_a2e(cfg, tmp_path / "w", step=int(best_steps[k]))
    for got, want in zip(jax.tree.leaves(best.params), jax.tree.leaves(at.params)):
      np.testing.assert_array_equal(np.asarray(got)[k], np.asarray(want)[k])
  # Inference predicts the members' mean.
  audio = np.asarray(open_data(ds).clip("clip000")["audio"][:40])
  got = model_io.predict_a2e(cfg, best.params, best.data_stats, audio)
  single = _cfg("a2e_train.gain_cap=0")
  per = [
    model_io.predict_a2e(single, _slice(best.params["member"], k), best.data_stats, audio)
    for k in range(2)
  ]
  assert got.shape == (40, 16)
  np.testing.assert_allclose(got, np.mean(per, axis=0), rtol=1e-4, atol=1e-5)
  # Stopped at step 4, resumed to 8: the same selection, the same parameters.
  train_a2e(_cfg(*every, "a2e_train.steps=4"), ds, tmp_path / "r", show_progress=False)
  train_a2e(cfg, ds, tmp_path / "r", resume=True, show_progress=False)
  again = model_io.restore_a2e(cfg, tmp_path / "r", best=True)
  for got, want in zip(jax.tree.leaves(again.params), jax.tree.leaves(best.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
