"""A damaged checkpoint is survived (jaxtalk.checkpoints): a real tiny renderer run with
checkpoints at steps 1 and 2, then the newest one's array files truncated (a full disk, a partial
copy) or deleted. Resuming says in one line which checkpoint is unreadable and why, continues from
step 1 (and says so), keeps the damaged files; inference's restore stops with one line naming the
file."""

from __future__ import annotations

import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from jaxtalk import model_io
from jaxtalk.checkpoints import DamagedCheckpoint, describe_failure
from jaxtalk.config import load_config
from jaxtalk.train.synthetic import write_synthetic_dataset
from jaxtalk.train.train import train_renderer

QUIET = [
  "train.log_every=1", "train.sample_every=0", "train.eval_every=0", "train.ckpt_every=1",
  "train.val_fraction=0.0", "train.keep=5", "train.stage2_steps=0",
]  # fmt: skip


def tiny(steps: int):
  return load_config("tiny", [*QUIET, f"train.stage1_steps={steps}"])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  root = tmp_path_factory.mktemp("damage")
  # the shapes of a tiny-config GRID dataset, as in test_train (the compiled programs are shared)
  data = write_synthetic_dataset(root / "ds", n_clips=1, n_frames=8, size=64, expression_dim=16,
                                 n_points=18)  # fmt: skip
  train_renderer(tiny(2), data, root / "w", show_progress=False)
  assert sorted(int(p.name) for p in (root / "w/checkpoints").iterdir()) == [1, 2]
  return data, root / "w"


def array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  # the array chunks of the state item (OCDBT data files), not its metadata
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files, step_dir
  return sorted(files)


def damage(workdir: pathlib.Path, how: str) -> dict[pathlib.Path, bytes]:
  """Damages checkpoint 2's array files; returns what is left of them (path -> bytes)."""
  for p in array_files(workdir / "checkpoints/2"):
    if how == "truncate":
      os.truncate(p, p.stat().st_size // 2)
    else:
      p.unlink()
  return {p.relative_to(workdir / "checkpoints/2"): p.read_bytes()
          for p in (workdir / "checkpoints/2").rglob("*") if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("how, why", [("truncate", "truncated"), ("delete", "missing")])
def test_resume_skips_a_damaged_checkpoint_and_keeps_it(run, tmp_path, capsys, how, why):
  data, original = run
  w = tmp_path / "w"
  shutil.copytree(original, w)
  left = damage(w, how)
  capsys.readouterr()
  result = train_renderer(tiny(3), data, w, resume=True, show_progress=False)
  out = capsys.readouterr()
  assert result.step == 3
  lines = out.out.splitlines()
  damaged = [s for s in lines if "is unreadable" in s]
  assert len(damaged) == 1, out.out
  # which checkpoint, which file, why, and where it went
  assert f"{w.resolve() / 'checkpoints/2'}" in damaged[0]
  assert "/checkpoints/2/state/" in damaged[0] and why in damaged[0]
  assert str(w.resolve() / "damaged/2") in damaged[0]
  assert any("resumed from step 1" in s for s in lines), out.out
  assert "Traceback" not in out.out + out.err and len((out.out + out.err).splitlines()) < 20
  # the damaged checkpoint is kept, byte for byte, out of the way of the new saves
  kept = w / "damaged/2"
  assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == left
  # step 2 was redone from step 1 and training went on to 3: the same state as an intact run
  ref = tmp_path / "ref"
  shutil.copytree(original, ref)
  train_renderer(tiny(3), data, ref, resume=True, show_progress=False)
  cfg = tiny(3)
  a, b = model_io.restore_renderer(cfg, w), model_io.restore_renderer(cfg, ref)
  assert int(a.step) == int(b.step) == 3
  for x, y in zip(jax.tree.leaves(a.g_params), jax.tree.leaves(b.g_params), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_inference_restore_names_the_damaged_file(run, tmp_path, how):
  _, original = run
  w = tmp_path / "w"
  shutil.copytree(original, w)
  files = [p.resolve() for p in array_files(w / "checkpoints/2")]
  damage(w, how)
  with pytest.raises(DamagedCheckpoint) as info:
    model_io.restore_renderer(tiny(2), w)
  message = str(info.value)
  assert "\n" not in message and len(message) < 400, message
  assert message.startswith(f"checkpoint {w.resolve() / 'checkpoints/2'} is unreadable: ")
  named = pathlib.Path(message.split("is unreadable: ")[1].split(":")[0])
  assert named in files, (named, files)  # the very file that was damaged
  assert message.endswith("missing") if how == "delete" else "truncated (" in message
  # nothing was moved or deleted by a read
  assert (w / "checkpoints/2").is_dir() and not (w / "damaged").exists()
  # the intact older checkpoint still reads
  assert int(model_io.restore_renderer(tiny(2), w, step=1).step) == 1


def test_describe_failure_is_one_line():
  long = ValueError(
    'OUT_OF_RANGE: Error opening "zarr" driver: Error reading "x/.zarray" in OCDBT database at '
    'local file "/w/checkpoints/2/state/": Error reading Byte range [0, 10) of local file '
    '"/w/checkpoints/2/state/d/abc": Requested byte range [0, 10) is not valid for value of size '
    "5 [tensorstore_spec='{\"a\": 1}']"
  )
  assert describe_failure(long) == (
    "/w/checkpoints/2/state/d/abc: truncated (Requested byte range [0, 10) is not valid for "
    "value of size 5)"
  )
  assert describe_failure(KeyError("state")) == "KeyError: 'state'"
