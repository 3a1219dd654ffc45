"""JAXTALK_REQUIRE_DATA turns "shared data missing" skips into failures (tests/conftest.py).

Each case runs a one-test pytest session in a subprocess whose checkout has NO ../shared beside it
(a copy of conftest.py in a temporary folder), with and without the variable set."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent

FIXTURES = ("grid_dir", "grid_clip", "obama_clip", "tedlieu_clip")


def run_session(
  tmp_path: pathlib.Path, fixture: str, require: str | None
) -> subprocess.CompletedProcess:
  tests = tmp_path / "repo" / "tests"  # repo/../shared does not exist under tmp_path
  tests.mkdir(parents=True)
  shutil.copy(HERE / "conftest.py", tests / "conftest.py")
  (tests / "test_one.py").write_text(f"def test_needs_data({fixture}):\n  assert {fixture}\n")
  env = {k: v for k, v in os.environ.items() if k != "JAXTALK_REQUIRE_DATA"}
  if require is not None:
    env["JAXTALK_REQUIRE_DATA"] = require
  return subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)],
    cwd=tests.parent, env=env, capture_output=True, text=True, timeout=120,
  )  # fmt: skip


@pytest.mark.parametrize("fixture", FIXTURES)
def test_missing_data_skips_by_default(tmp_path, fixture):
  out = run_session(tmp_path, fixture, None)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "1 skipped" in out.stdout and "shared/ is not beside the checkout" in out.stdout


@pytest.mark.parametrize("fixture", FIXTURES)
def test_missing_data_fails_when_required(tmp_path, fixture):
  out = run_session(tmp_path, fixture, "1")
  assert out.returncode == 1, out.stdout + out.stderr
  # a fixture that fails is reported as an error of the test, which fails the run all the same
  assert "1 error" in out.stdout and "JAXTALK_REQUIRE_DATA=1 but" in out.stdout
  assert "skipped" not in out.stdout


def test_present_data_passes_when_required(tmp_path, require_data):
  # the rule only bites on missing files: an existing one passes with the variable set
  present = tmp_path / "clip.mp4"
  present.write_bytes(b"x")
  os.environ["JAXTALK_REQUIRE_DATA"] = "1"
  try:
    require_data([present], "a clip")
  finally:
    os.environ.pop("JAXTALK_REQUIRE_DATA")


def test_ci_sets_the_variable():
  ci = (HERE.parent / ".ci" / "run").read_text()
  assert "export JAXTALK_REQUIRE_DATA=1" in ci
  assert ci.index("JAXTALK_REQUIRE_DATA=1") < ci.index("python -m pytest")
