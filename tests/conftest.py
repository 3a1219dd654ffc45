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


def _run_scratch(prefix: str) -> str:
  """A folder for this test run, shared by its pytest-xdist workers (same run id) and their
  subprocesses, fresh for every run."""
  run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
  if run is None:
    return tempfile.mkdtemp(prefix=prefix)
  path = pathlib.Path(tempfile.gettempdir()) / f"{prefix}{run}"
  path.mkdir(exist_ok=True)
  return str(path)


# One XLA compilation cache per test run (JAX reads these variables when it is imported, after
# this file). Many tests and their CLI subprocesses compile the same tiny train, inference and
# LPIPS programs; with the cache each distinct program is compiled once per run, which is most of
# a tiny test's time on a 2-core CPU. Fresh per run, so nothing carries over between runs.
os.environ["JAX_COMPILATION_CACHE_DIR"] = _run_scratch("jaxtalk-test-xla-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

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


# ------------------------------------------------------------------------------ headless Chromium

CHECK_SCRIPT = """
<script>
(function () {
  const started = Date.now();
  function media() { return Array.from(document.querySelectorAll('img, video')); }
  function state(el) {
    if (el.tagName === 'IMG') {
      if (!el.complete) return 'pending';
      return el.naturalWidth > 0 ? 'ok' : 'failed';
    }
    if (el.error) return 'failed';
    return el.readyState >= 2 && el.videoWidth > 0 ? 'ok' : 'pending';
  }
  function poll() {
    const all = media();
    const states = all.map(state);
    if (states.includes('pending') && Date.now() - started < 20000) {
      setTimeout(poll, 100);
      return;
    }
    const out = {images: 0, videos: 0, failed: []};
    all.forEach(function (el, i) {
      if (el.tagName === 'IMG') out.images += 1; else out.videos += 1;
      if (states[i] !== 'ok') out.failed.push(el.getAttribute('src') + ': ' + states[i]);
    });
    const pre = document.createElement('pre');
    pre.id = 'jaxtalk-check';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  window.addEventListener('load', poll);
})();
</script>
"""


def chromium_binary() -> str | None:
  import shutil

  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    if path := shutil.which(name):
      return path
  return None


def check_page_in_chromium(page: pathlib.Path) -> dict:
  """Opens `page` (a local HTML file) in headless Chromium and reports how many images and
  videos it references and which of them did not load ({"images", "videos", "failed"})."""
  import json
  import re
  import subprocess

  binary = chromium_binary()
  if binary is None:
    reason = "Chromium is not installed (apt-get install chromium; .ci/run installs it)"
    if data_required():
      pytest.fail(f"JAXTALK_REQUIRE_DATA=1 but {reason}", pytrace=False)
    pytest.skip(reason)
  # a copy beside the page (same relative links) with the checking script appended
  probe = page.with_name(f".check-{page.name}")
  probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
  try:
    with tempfile.TemporaryDirectory() as profile:
      proc = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
         "--allow-file-access-from-files", f"--user-data-dir={profile}",
         "--virtual-time-budget=30000", "--dump-dom", probe.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
      )  # fmt: skip
  finally:
    probe.unlink(missing_ok=True)
  m = re.search(r'<pre id="jaxtalk-check">(.*?)</pre>', proc.stdout, re.S)
  assert m, f"no result from Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
  return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="session")
def chromium_check():
  """check_page_in_chromium, for tests (test modules do not import conftest)."""
  return check_page_in_chromium
