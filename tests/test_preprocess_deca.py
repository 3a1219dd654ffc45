"""The DECA bridge's writer path, without PyTorch: a stand-in returns FLAME-shaped arrays and the
real jaxtalk pipeline writes them in the dataset format."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.data.dataset import DatasetError, open_dataset
from jaxtalk.data.preprocess import _import_deca_bridge, preprocess
from jaxtalk.errors import ConfigError, JaxtalkError

deca_bridge = _import_deca_bridge()


def fake_deca(crops_bhwc: np.ndarray) -> dict[str, np.ndarray]:
  """FLAME-shaped outputs that depend on the crops (so frames are told apart)."""
  b = len(crops_bhwc)
  level = crops_bhwc.reshape(b, -1).mean(axis=1, dtype=np.float64)[:, None] / 255.0
  render = np.zeros((b, 224, 224, 3), np.float32)
  render[:, 60:160, 70:150] = level[:, :, None, None]
  return {
    "exp": (level * np.linspace(-1, 1, 50)).astype(np.float32),
    "pose": (level * np.arange(1, 7) / 10).astype(np.float32),
    "shape": np.tile(np.linspace(0, 1, 100, dtype=np.float32), (b, 1)),
    "cam": (level * np.array([9.0, 0.1, -0.1])).astype(np.float32),
    "render": render,
    "landmarks2d": np.full((b, 68, 2), 112.0, np.float32),
  }


@pytest.fixture(scope="module")
def deca_dataset(grid_clips, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("deca") / "ds"
  config = load_config("tiny", ["data.expression_dim=53"])
  cache = tmp_path_factory.getbasetemp() / "jaxtalk-cache" / "landmarks"
  fitter = deca_bridge.DecaFitter(runner=fake_deca)
  preprocess(
    grid_clips[:1], out, config, fitter=fitter, cache_dir=cache, progress=False, log=lambda m: None
  )
  return out


def test_flame_parameters_written_in_dataset_format(deca_dataset):
  ds = open_dataset(deca_dataset)
  assert ds.face_model_kind == "deca" and ds.expression_dim == 53
  clip = ds.clip(ds.clip_names[0])
  t = clip.num_frames
  assert clip["expression"].shape == (t, 53) and clip["pose"].shape == (t, 6)
  assert clip["shape"].shape == (t, 64, 64, 3) and clip["shape"].dtype == np.uint8
  assert clip["flame_shape"].shape == (t, 100)  # the bridge's extra field
  want = fake_deca(np.asarray(clip["frames"][:5]))
  np.testing.assert_allclose(clip["expression"][:5, :50], want["exp"], rtol=1e-6)
  np.testing.assert_allclose(clip["expression"][:5, 50:], want["pose"][:, 3:], rtol=1e-6)  # jaw
  np.testing.assert_allclose(clip["pose"][:5, :3], want["pose"][:, :3], rtol=1e-6)
  np.testing.assert_allclose(clip["pose"][:5, 3:], want["cam"], rtol=1e-6)
  assert clip["shape"][0, 32, 32, 0] == round(255 * float(want["render"][0, 112, 112, 0]))
  assert clip["mask"][:].any() and clip["audio"].shape == (t, 20, 80)  # jaxtalk's own fields
  assert "landmark_error_mean_px" in clip.info["fit"]
  with pytest.raises(DatasetError, match="deca"):
    ds.face_model()
  with np.load(deca_dataset / "face_model.npz") as model:
    assert str(model["kind"]) == "deca" and int(model["flame_expression_dim"]) == 50


def test_flame_to_dataset_converts_shapes():
  out = deca_bridge.flame_to_dataset(fake_deca(np.zeros((3, 64, 64, 3), np.uint8)), 32)
  assert out["expression"].shape == (3, 53) and out["pose"].shape == (3, 6)
  assert out["shape"].shape == (3, 32, 32, 3) and out["shape"].dtype == np.uint8
  with pytest.raises(ValueError, match="FLAME shapes"):
    deca_bridge.flame_to_dataset(
      {**fake_deca(np.zeros((2, 8, 8, 3), np.uint8)), "exp": np.zeros((2, 10))}, 32
    )


def test_deca_needs_53_expression_parameters():
  fitter = deca_bridge.DecaFitter(runner=fake_deca)
  from jaxtalk.data.preprocess import Settings

  with pytest.raises(ConfigError, match="expression_dim=53"):
    fitter.check(Settings.from_config(load_config("tiny")))


def test_missing_deca_pieces_are_named(tmp_path, monkeypatch):
  real_find_spec = importlib.util.find_spec
  if real_find_spec("torch") is None:
    with pytest.raises(JaxtalkError, match="pip install torch"):
      deca_bridge.locate_deca(tmp_path, None)
  # Pretend PyTorch is installed to reach the DECA and FLAME checks.
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda n, *a: object() if n == "torch" else real_find_spec(n, *a)
  )
  with pytest.raises(JaxtalkError, match="github.com/yfeng95/DECA"):
    deca_bridge.locate_deca(None, None)
  with pytest.raises(JaxtalkError, match="not a DECA checkout"):
    deca_bridge.locate_deca(tmp_path, None)
  (tmp_path / "decalib").mkdir()
  (tmp_path / "decalib" / "deca.py").write_text("")
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "head_template.obj").write_text("")
  with pytest.raises(JaxtalkError, match=r"generic_model\.pkl.*flame\.is\.tue\.mpg\.de") as e:
    deca_bridge.locate_deca(tmp_path, None)
  assert "head_template.obj" not in str(e.value).split("missing DECA/FLAME files:")[1]


def test_preprocessing_never_imports_torch():
  """Only the bridge touches PyTorch; jaxtalk's preprocessing modules never do."""
  root = pathlib.Path(__file__).resolve().parents[1] / "jaxtalk"
  files = [*root.glob("data/*.py"), *root.glob("face/*.py"), *root.glob("audio/*.py")]
  files += [root / "commands" / "preprocess.py", root / "commands" / "dataset.py"]
  offenders = [
    str(p) for p in files if "import torch" in p.read_text() or "from torch" in p.read_text()
  ]
  assert offenders == []
