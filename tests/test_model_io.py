"""Clean boundaries (issue 12 item 4): inference and evaluation load models through the neutral
jaxtalk.model_io / jaxtalk.checkpoints and import nothing of jaxtalk.train; training uses the same
module (its names are re-exported, not copied); function-local imports only in commands/ (and
for optional dependencies)."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import jaxtalk
from jaxtalk.checkpoints import CheckpointError, check_compatible

PKG = pathlib.Path(jaxtalk.__file__).parent
# optional dependencies, imported where they are used so jaxtalk runs without them
OPTIONAL = {"dlib", "face_recognition_models", "face_alignment", "torch", "deca_bridge"}
# modules whose imports are all at module level (those this issue touched)
MODULE_LEVEL = ("infer.py", "demo.py", "ablate.py", "model_io.py", "checkpoints.py", "report.py",
                "metrics/slice.py", "synthesis/panels.py")  # fmt: skip


def test_inference_and_evaluation_import_nothing_of_train():
  code = (
    "import json, sys\n"
    "import jaxtalk.infer, jaxtalk.metrics.evaluate, jaxtalk.model_io, jaxtalk.checkpoints\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.startswith('jaxtalk'))))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  loaded = json.loads(out.stdout.strip().splitlines()[-1])
  assert "jaxtalk.infer" in loaded and "jaxtalk.model_io" in loaded
  assert not [m for m in loaded if m.startswith("jaxtalk.train")], loaded


def test_training_uses_the_same_objects():
  from jaxtalk import checkpoints, model_io
  from jaxtalk.train import a2e_train, erosion, state, step, train
  from jaxtalk.train import checkpoint as train_checkpoint

  assert state.renderer_models is model_io.renderer_models
  assert state.init_renderer_state is model_io.init_renderer_state
  assert state.RendererState is model_io.RendererState
  assert step.generator_forward is model_io.generator_forward
  assert erosion.erode is model_io.erode
  assert train.restore_renderer_params is model_io.restore_renderer
  assert a2e_train.restore_a2e_params is model_io.restore_a2e
  assert train.config_json is model_io.config_json
  assert train_checkpoint.Checkpoints is checkpoints.Checkpoints is model_io.Checkpoints


def local_imports(path: pathlib.Path) -> list[str]:
  """'line: module' of every import inside a function body."""
  tree = ast.parse(path.read_text())
  found = []
  for fn in ast.walk(tree):
    if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
      continue
    for node in ast.walk(fn):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
      else:
        continue
      found += [f"{node.lineno}: {n}" for n in names if n.split(".")[0] not in OPTIONAL]
  return found


def test_imports_at_module_level():
  offenders = {name: local_imports(PKG / name) for name in MODULE_LEVEL}
  assert not any(offenders.values()), offenders


def test_the_local_import_check_finds_one(tmp_path):
  # the checker itself: it must see an import inside a function (and skip optional ones)
  f = tmp_path / "m.py"
  f.write_text("import os\n\ndef g():\n  import json\n  import torch\n  return json\n")
  assert local_imports(f) == ["4: json"]


def test_compatibility_ignores_only_the_holdout_split():
  saved = {"model": {"depth": 2}, "data": {"image_size": 64, "holdout": 0.2}}
  check_compatible(saved, {"model": {"depth": 2}, "data": {"image_size": 64, "holdout": 0.0}})
  with pytest.raises(CheckpointError, match=r"data\.image_size"):
    check_compatible(saved, {"model": {"depth": 2}, "data": {"image_size": 96, "holdout": 0.2}})
  with pytest.raises(CheckpointError, match=r"model\.depth"):
    check_compatible(saved, {"model": {"depth": 3}, "data": {"image_size": 64, "holdout": 0.2}})


def test_a_key_added_later_compares_at_its_old_meaning():
  # Checkpoints made before data.crop_shift existed were made without a shift: they restore under
  # a config with crop_shift 0, not under one with another shift.
  saved = {"model": {"depth": 2}, "data": {"image_size": 64}}
  check_compatible(saved, {"model": {"depth": 2}, "data": {"image_size": 64, "crop_shift": 0.0}})
  with pytest.raises(CheckpointError, match=r"data\.crop_shift"):
    check_compatible(saved, {"model": {"depth": 2}, "data": {"image_size": 64, "crop_shift": 0.05}})
