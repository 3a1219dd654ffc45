"""Shared fixtures. Real clips live in ../shared/data/real/ beside the checkout; tests that need
them skip with the reason when that folder is absent, and FAIL instead when the environment sets
JAXTALK_REQUIRE_DATA=1 (CI does: a missing folder must not turn a third of the suite into silent
skips). Every test that needs shared data goes through `require_shared`."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile

import pytest

# One scratch folder per test run, made by the first process that imports this file (pytest, or
# pytest-xdist's controller before it starts its workers), inherited through the environment by
# the workers and every subprocess, and removed when that first process's session ends.
_SCRATCH_VAR = "JAXTALK_TEST_SCRATCH"
_OWN_SCRATCH = _SCRATCH_VAR not in os.environ
if _OWN_SCRATCH:
  os.environ[_SCRATCH_VAR] = tempfile.mkdtemp(prefix="jaxtalk-test-")
SCRATCH = pathlib.Path(os.environ[_SCRATCH_VAR])
SCRATCH.mkdir(parents=True, exist_ok=True)

# Tests must neither depend on nor fill the user's landmark cache: a fresh cache per process (set
# at import, so module-scoped fixtures and CLI subprocesses see it too).
os.environ["JAXTALK_CACHE"] = tempfile.mkdtemp(prefix="landmarks-", dir=SCRATCH)

# One XLA compilation cache per test run, shared by the workers (JAX reads these variables when
# it is imported, after this file). Many tests and their CLI subprocesses compile the same tiny
# train, inference and LPIPS programs; with the cache each distinct program is compiled once per
# run, which is most of a tiny test's time on a 2-core CPU. Fresh per run, so nothing carries over
# between runs.
os.environ["JAX_COMPILATION_CACHE_DIR"] = str(SCRATCH / "xla")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# Compile time is most of the suite's time, and LLVM's optimisation of the machine code a large
# part of each compile: at XLA backend level 0 the tiny train step compiles in 15 s instead of
# 24 s and runs in 0.16 s instead of 0.08 s, and a test compiles once and runs a few steps
# (docs/benchmarks.md, "CI time"). The HLO program, its fusions and its float semantics (no
# fast-math) are those the project runs with. A level in the user's XLA_FLAGS is kept.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  ).strip()
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S+")

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


def pytest_sessionfinish(session: pytest.Session) -> None:
  if _OWN_SCRATCH and not hasattr(session.config, "workerinput"):  # pytest or xdist's controller
    shutil.rmtree(SCRATCH, ignore_errors=True)


# pytest-xdist (--dist loadfile) hands whole files to its workers in collection order, which is
# alphabetical, and several of the slowest files sort late: started last, one of them kept a
# worker busy minutes after the other had finished. The files that take over 100 s go first,
# slowest first (docs/benchmarks.md, "CI time"); the order inside a file is kept.
SLOW_FILES = (
  "test_infer.py", "test_stability_trained.py", "test_train_parallel.py", "test_train.py",
  "test_a2e_train.py", "test_quality.py", "test_eval_metrics.py", "test_train_losses.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


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


@pytest.fixture
def child_env() -> dict[str, str]:
  """The environment for a child process that chooses its own CPU device count
  (`jax_num_cpu_devices`): this one's, XLA_FLAGS without a host device count."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(_DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split())
  env["JAX_PLATFORMS"] = "cpu"
  return env


@pytest.fixture(scope="session")
def x264_options():
  """path -> the settings x264 wrote into an mp4 it encoded (its SEI text), e.g. "... subme=7
  ... crf=18.0 ...": what the encoder was really told."""

  def read(path: pathlib.Path) -> str:
    data = pathlib.Path(path).read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\x00", start)].decode()

  return read


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
