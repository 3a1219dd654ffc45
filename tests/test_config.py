"""Config loading and --set overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaxtalk.config import apply_overrides, load_config
from jaxtalk.errors import ConfigError, JaxtalkError


def test_shipped_configs_load_locked():
  for name in ("tiny", "grid"):
    c = load_config(name)
    assert c.is_locked
    with pytest.raises((AttributeError, KeyError)):
      c.model.not_a_field = 1
  assert load_config("tiny").data.image_size == 64
  assert load_config("grid").model.renderer.token_dim == 512


def test_overrides_typed_and_applied():
  c = load_config("configs/tiny.py", ["model.renderer.depth=3", "train.lr=1", "data.fps=30"])
  assert c.model.renderer.depth == 3
  assert c.train.lr == 1.0 and isinstance(c.train.lr, float)
  c = load_config("tiny", ["train.erosion=False", "data.landmark_backend=fan"])
  assert c.train.erosion is False and c.data.landmark_backend == "fan"


@pytest.mark.parametrize(
  "override, message",
  [
    (
      "model.renderer.dept=2",
      "unknown config key 'model.renderer.dept'; did you mean model.renderer.depth",
    ),
    ("model.renderer.depth=two", "not a Python literal"),
    ("model.renderer.depth=2.5", "expected int"),
    ("train.erosion=1", "expected True or False"),
    ("model=1", "is a section"),
    ("novalue", "key=value"),
  ],
)
def test_override_errors(override, message):
  c = load_config("tiny")
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
    apply_overrides(c, [override])


def test_missing_and_broken_config(tmp_path):
  with pytest.raises(ConfigError, match="not found"):
    load_config(str(tmp_path / "nope.py"))
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(:\n")
  with pytest.raises(ConfigError, match="could not load"):
    load_config(str(bad))
  assert issubclass(ConfigError, JaxtalkError)


def test_cli_reports_config_typo_without_traceback(tmp_path):
  r = subprocess.run(
    [sys.executable, "-m", "jaxtalk.cli", "msi", "x.mp4", "--set", "msi.epss=1"],
    capture_output=True,
    text=True,
  )
  assert r.returncode == 2
  assert "unknown config key 'msi.epss'; did you mean msi.eps?" in r.stderr
  assert "Traceback" not in r.stderr


def test_fan_backend_without_face_alignment_says_how_to_install(monkeypatch):
  import builtins

  from jaxtalk.face import landmarks

  real_import = builtins.__import__

  def no_fa(name, *a, **k):
    if name == "face_alignment":
      raise ImportError("No module named 'face_alignment'")
    return real_import(name, *a, **k)

  monkeypatch.setattr(builtins, "__import__", no_fa)
  with pytest.raises(JaxtalkError, match=r"pip install 'jaxtalk\[fan\]'"):
    landmarks.get_backend("fan")


def test_fan_backend_without_weights_says_where_to_put_them(monkeypatch):
  import types

  from jaxtalk.face import landmarks

  def offline(*a, **k):
    raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

  fake = types.SimpleNamespace(FaceAlignment=offline, LandmarksType=types.SimpleNamespace(TWO_D=1))
  monkeypatch.setitem(sys.modules, "face_alignment", fake)
  with pytest.raises(JaxtalkError, match="hub/checkpoints"):
    landmarks.get_backend("fan")
