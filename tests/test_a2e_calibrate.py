"""The a2e's output calibration (issue 15): gains against a hand-worked case, the file's
round trip and its clear errors, and a trained a2e whose saved gains are recomputed
independently from its restored best checkpoint."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest

from jaxtalk import infer, model_io
from jaxtalk.config import load_config
from jaxtalk.data.pipeline import Segment, open_data, split_segments
from jaxtalk.errors import ConfigError
from jaxtalk.train import a2e_calibrate
from jaxtalk.train.a2e_step import mouth_basis
from jaxtalk.train.a2e_train import train_a2e, training_clips
from jaxtalk.train.synthetic import write_synthetic_dataset

E = 4


class _FakeData:
  """One clip whose 'audio' is the frame index, so a fake predictor can look frames up."""

  def __init__(self, fit_ne: np.ndarray):
    n = len(fit_ne)
    self._clip = {"audio": np.arange(n, dtype=np.float32)[:, None, None], "expression": fit_ne}

  def clip(self, name: str) -> dict:
    assert name == "c"
    return self._clip


def test_gains_of_a_hand_worked_case(monkeypatch):
  rng = np.random.default_rng(0)
  fit = rng.normal(size=(100, E)).astype(np.float32)
  scale = np.array([0.5, 0.25, 2.0, 1.0])  # predicted amplitude / real, per component
  pred = (3.0 + fit * scale).astype(np.float32)

  def fake_predict(cfg, params, stats, audio_nwf):
    return pred[np.asarray(audio_nwf)[:, 0, 0].astype(int)]

  monkeypatch.setattr(model_io, "predict_a2e", fake_predict)
  cfg = load_config("tiny", ["a2e_train.gain_cap=2.0", "a2e_train.gain_mode=component"])
  train, val = [Segment("c", 0, 70)], [Segment("c", 70, 100)]
  basis = np.eye(E, dtype=np.float32)
  cal, note = a2e_calibrate.fit_calibration(cfg, _FakeData(fit), {}, {}, 7, train, val, basis)
  # std(fit) / std(pred) over the validation frames = 1 / scale: 2, 4 (capped at 2), 0.5
  # (never below 1), 1
  np.testing.assert_allclose(note["raw_gain"], 1 / scale, rtol=1e-3)
  np.testing.assert_allclose(cal.gain_e, [2.0, 2.0, 1.0, 1.0], rtol=1e-5)
  np.testing.assert_allclose(cal.centre_e, pred[:70].mean(0), rtol=1e-6)
  assert cal.step == 7
  x = rng.normal(size=(5, E)).astype(np.float32)
  np.testing.assert_allclose(cal.apply(x), pred[:70].mean(0) + (x - pred[:70].mean(0)) * cal.gain_e,
                             rtol=1e-6)  # fmt: skip
  # no calibration without validation frames or with a cap of 1
  assert a2e_calibrate.fit_calibration(cfg, _FakeData(fit), {}, {}, 7, train, [], basis) is None
  cfg1 = load_config("tiny", ["a2e_train.gain_cap=1.0"])
  assert a2e_calibrate.fit_calibration(cfg1, _FakeData(fit), {}, {}, 7, train, val, basis) is None

  # "mouth": one gain, from the mouth landmarks. A basis that moves two landmark coordinates by
  # components 0 and 2 only (1 and 3 leave the mouth still): the predicted mouth's variance is
  # 0.25 v0 + 4 v2 against the real v0 + v2 (v: the real components' variance over the
  # validation frames), so the gain is sqrt((v0 + v2) / (0.25 v0 + 4 v2)) < 1 -> clipped to 1;
  # with component 2 predicted at 0.5 as well it is 2, everywhere.
  mouth = np.zeros((E, 2), np.float32)
  mouth[0, 0], mouth[2, 1] = 1.0, 1.0
  cfg_m = load_config("tiny", ["a2e_train.gain_cap=3.0"])  # gain_mode "mouth" by default
  v = fit[70:].var(0)
  cal, note = a2e_calibrate.fit_calibration(cfg_m, _FakeData(fit), {}, {}, 7, train, val, mouth)
  np.testing.assert_allclose(
    note["raw_gain"], [np.sqrt((v[0] + v[2]) / (0.25 * v[0] + 4 * v[2]))] * E, rtol=1e-3
  )
  np.testing.assert_allclose(cal.gain_e, np.ones(E))
  pred = (3.0 + fit * np.array([0.5, 0.25, 0.5, 1.0])).astype(np.float32)
  cal, note = a2e_calibrate.fit_calibration(cfg_m, _FakeData(fit), {}, {}, 7, train, val, mouth)
  np.testing.assert_allclose(cal.gain_e, np.full(E, 2.0), rtol=1e-4)
  assert note["gain_mode"] == "mouth"
  with pytest.raises(ConfigError, match="gain_mode must be one of mouth, component"):
    a2e_calibrate.gain_mode(load_config("tiny", ["a2e_train.gain_mode=mouths"]))


def test_calibration_file_round_trip_and_errors(tmp_path):
  assert model_io.load_a2e_calibration(tmp_path, 5, E) is None  # none written: uncalibrated
  cal = model_io.A2ECalibration(5, np.array([1, 2, 3, 4], np.float32), np.array([1, 2, 1, 1.5]))
  model_io.save_a2e_calibration(tmp_path, cal, {"gain_cap": 2.0})
  back = model_io.load_a2e_calibration(tmp_path, 5, E)
  np.testing.assert_array_equal(back.centre_e, cal.centre_e)
  np.testing.assert_array_equal(back.gain_e, cal.gain_e)
  # hand-worked: 1 + 1 * (0 - 1) = 0; 2 + 2 * (3 - 2) = 4; 3 + 1 * 0 = 3; 4 + 1.5 * (6 - 4) = 7
  np.testing.assert_allclose(back.apply(np.array([[0.0, 3.0, 3.0, 6.0]])), [[0, 4, 3, 7]])
  with pytest.raises(model_io.CheckpointError, match="fitted to checkpoint step 5.*is step 6"):
    model_io.load_a2e_calibration(tmp_path, 6, E)
  with pytest.raises(model_io.CheckpointError, match="gains for 8 expression components"):
    model_io.load_a2e_calibration(tmp_path, 5, 8)
  path = tmp_path / model_io.A2E_CALIBRATION
  path.write_text(path.read_text()[:40])
  with pytest.raises(model_io.CheckpointError, match="damaged"):
    model_io.load_a2e_calibration(tmp_path, 5, E)
  path.write_text(json.dumps({"step": 5, "centre": [0] * E}))
  with pytest.raises(model_io.CheckpointError, match="damaged"):
    model_io.load_a2e_calibration(tmp_path, 5, E)


def test_trained_a2e_saves_the_gains_of_its_best_checkpoint(tmp_path):
  ds_path = write_synthetic_dataset(tmp_path / "ds", n_clips=1, n_frames=64, size=64,
                                    expression_dim=16, n_points=18)  # fmt: skip
  cfg = load_config("tiny", [
    "train.log_every=1", "train.eval_every=2", "train.ckpt_every=1000", "a2e_train.steps=4",
    "train.val_fraction=0.25", "a2e_train.batch_size=1", "a2e_train.gain_cap=3.0",
  ])  # fmt: skip
  work = tmp_path / "w"
  (work).mkdir()
  (work / model_io.A2E_CALIBRATION).write_text("stale")  # a fresh run removes a stale file
  train_a2e(cfg, ds_path, work, show_progress=False)
  saved = json.loads((work / model_io.A2E_CALIBRATION).read_text())
  state = infer.restore_a2e_state(cfg, work)  # the best checkpoint, as inference restores it
  assert saved["step"] == int(state.step)

  # Independently: the validation tail of the one clip, predicted from the restored state.
  ds = open_data(ds_path)
  train_segs, val_segs, _ = split_segments(training_clips(ds), 0.25, cfg.a2e_train.seq_len)
  (v,) = val_segs
  clip = ds.clip(v.clip)
  raw = model_io.predict_a2e(cfg, state.params, state.data_stats, clip["audio"][v.start : v.stop])
  fit = np.asarray(clip["expression"][v.start : v.stop])
  # gain_mode "mouth": the mouth landmarks' amplitude ratio (the synthetic dataset has no
  # landmark3d face model, so its mouth basis is the identity: all components count)
  basis = mouth_basis(ds.face_model() if ds.face_model_kind == "landmark3d" else None, 16)
  np.testing.assert_array_equal(basis, np.eye(16))
  ratio = np.sqrt(fit.var(0).sum() / raw.var(0).sum())
  np.testing.assert_allclose(saved["raw_gain"], np.full(16, ratio), rtol=1e-3)
  np.testing.assert_allclose(saved["gain"], np.full(16, np.clip(ratio, 1.0, 3.0)), rtol=1e-4)

  # Inference applies it: centre + gain * (raw - centre) (a gain of 2 written in, as the
  # tiny untrained a2e's own may be clipped to 1).
  cal = model_io.load_a2e_calibration(work, int(state.step), cfg.data.expression_dim)
  cal = dataclasses.replace(cal, gain_e=np.full(16, 2.0, np.float32))
  models = types.SimpleNamespace(config=cfg, a2e_state=state, a2e_calibration=cal)
  audio = np.asarray(clip["audio"][:])
  got = infer.predict_expressions(models, audio)
  base = model_io.predict_a2e(cfg, state.params, state.data_stats, audio)
  centre, gain = np.asarray(saved["centre"]), 2.0
  np.testing.assert_allclose(got, centre + gain * (base - centre), rtol=1e-5, atol=1e-6)
