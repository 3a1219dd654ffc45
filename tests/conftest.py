"""Shared fixtures. Real clips live in ../shared/data/real/grid beside the checkout; tests that
need them skip with the reason when that folder is absent."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

# Tests must neither depend on nor fill the user's landmark cache: one fresh cache per run (set at
# import, so module-scoped fixtures and CLI subprocesses see it too).
os.environ["JAXTALK_CACHE"] = tempfile.mkdtemp(prefix="jaxtalk-test-cache-")

REPO = pathlib.Path(__file__).resolve().parents[1]
GRID_DIR = REPO.parent / "shared" / "data" / "real" / "grid"


@pytest.fixture(scope="session")
def grid_dir() -> pathlib.Path:
  if not GRID_DIR.is_dir() or not any(GRID_DIR.glob("*.mpg")):
    pytest.skip(f"real GRID clips not found at {GRID_DIR} (shared/ is not beside the checkout)")
  return GRID_DIR


@pytest.fixture(scope="session")
def grid_clips(grid_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(grid_dir.glob("*.mpg"))


@pytest.fixture(scope="session")
def grid_clip(grid_clips: list[pathlib.Path]) -> pathlib.Path:
  return grid_clips[0]
