"""Shared fixtures. Real clips live in ../shared/data/real/grid beside the checkout; tests that
need them skip with the reason when that folder is absent."""

from __future__ import annotations

import os
import pathlib

import pytest

# Tests must not depend on (or fill) the user's landmark cache.
os.environ.setdefault("JAXTALK_CACHE", str(pathlib.Path(__file__).parent / ".cache-unused"))

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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("JAXTALK_CACHE", str(tmp_path_factory.getbasetemp() / "jaxtalk-cache"))
