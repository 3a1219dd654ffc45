"""Shared fixtures. Real clips live in ../shared/data/real/ beside the checkout; tests that need
them skip with the reason when that folder is absent, and FAIL instead when the environment sets
JAXTALK_REQUIRE_DATA=1 (CI does: a missing folder must not turn a third of the suite into silent
skips). Every test that needs shared data goes through `require_shared`."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

# Tests must neither depend on nor fill the user's landmark cache: one fresh cache per run (set at
# import, so module-scoped fixtures and CLI subprocesses see it too).
os.environ["JAXTALK_CACHE"] = tempfile.mkdtemp(prefix="jaxtalk-test-cache-")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GRID_DIR = SHARED / "data" / "real" / "grid"
LONG_DIR = SHARED / "data" / "real" / "long"


def data_required() -> bool:
  """True when missing shared data must fail the run instead of skipping (JAXTALK_REQUIRE_DATA)."""
  return os.environ.get("JAXTALK_REQUIRE_DATA", "").strip().lower() in ("1", "true", "yes")


def require_shared(paths: list[pathlib.Path] | pathlib.Path, what: str) -> None:
  """Skips the calling test (or fixture) with a reason when any of `paths` is missing; fails it
  when JAXTALK_REQUIRE_DATA=1."""
  paths = [paths] if isinstance(paths, pathlib.Path) else list(paths)
  missing = [p for p in paths if not p.exists()]
  if not missing:
    return
  reason = f"{what} not found at {missing[0]} (shared/ is not beside the checkout)"
  if data_required():
    pytest.fail(f"JAXTALK_REQUIRE_DATA=1 but {reason}", pytrace=False)
  pytest.skip(reason)


@pytest.fixture(scope="session")
def grid_dir() -> pathlib.Path:
  require_shared(GRID_DIR, "real GRID clips")
  if not any(GRID_DIR.glob("*.mpg")):
    require_shared(GRID_DIR / "*.mpg", "real GRID clips")
  return GRID_DIR


@pytest.fixture(scope="session")
def grid_clips(grid_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(grid_dir.glob("*.mpg"))


@pytest.fixture(scope="session")
def grid_clip(grid_clips: list[pathlib.Path]) -> pathlib.Path:
  return grid_clips[0]


@pytest.fixture(scope="session")
def obama_clip() -> pathlib.Path:
  """The 20 s single-speaker clip (450x450, public domain)."""
  path = LONG_DIR / "obama_20s.mp4"
  require_shared(path, "the long Obama clip")
  return path


@pytest.fixture(scope="session")
def tedlieu_clip() -> pathlib.Path:
  """The 60 s single-speaker clip (256x256, HDTF)."""
  path = LONG_DIR / "tedlieu_60s.mp4"
  require_shared(path, "the long Ted Lieu clip")
  return path


@pytest.fixture(scope="session")
def require_data():
  """`require_shared` for fixtures and tests that need particular shared files (test modules do
  not import conftest)."""
  return require_shared
