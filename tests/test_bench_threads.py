"""`jaxtalk bench infer`'s CPU time per thread role (jaxtalk/bench/threads.py) against each
thread's own clock and a child's rusage."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from jaxtalk.bench.threads import CHILDREN, ThreadClock, role

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux /proc only")


def test_role_drops_a_pool_index_only():
  assert role("host_12") == "host" and role("encoder-feed_0") == "encoder-feed"
  assert role("read_ahead") == "read_ahead" and role("MainThread") == "MainThread"


def test_thread_clock_measures_each_role_and_the_children():
  # Every thread stays alive until the clock has stopped, so the clock's last sample (taken in
  # __exit__) sees each of them: the test does not depend on the sampler being scheduled while
  # the machine is loaded (CI runs two pytest workers on two cores).
  own: dict[str, float] = {}
  spun = [threading.Event() for _ in range(2)]
  release = threading.Event()

  def spin(seconds: float, done: threading.Event) -> None:
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
      sum(range(1000))
    own[threading.current_thread().name] = time.thread_time() - t0
    done.set()
    release.wait()

  threads = [threading.Thread(target=spin, args=(0.3, spun[i]), name=f"busy_{i}") for i in range(2)]
  threads.append(threading.Thread(target=release.wait, name="idle"))
  try:
    with ThreadClock(interval=0.02) as clock:
      for t in threads:
        t.start()
      burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
      subprocess.run([sys.executable, "-c", burn], check=True)
      for done in spun:
        assert done.wait(timeout=60)
  finally:
    release.set()
    for t in threads:
      t.join()
  tick = 1.0 / os.sysconf("SC_CLK_TCK")
  assert clock.threads["busy"] == 2 and clock.threads["idle"] == 1
  # /proc counts in clock ticks: each thread within two of its own clock
  assert abs(clock.seconds["busy"] - sum(own.values())) <= 4 * tick, (clock.seconds, own)
  assert clock.seconds["idle"] <= 2 * tick
  # the child's own 0.4 s plus its interpreter's start
  assert 0.4 <= clock.seconds[CHILDREN] < 2.0, clock.seconds
  assert clock.wall >= 0.4
