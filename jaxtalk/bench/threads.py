"""CPU seconds per thread of a timed run, by role, from Linux's /proc: which of inference's
threads is busy enough to bound the pipeline (issue 10).

Inference's host work runs on named threads (`infer.synthesize`): the main thread, `read_ahead`
(the render: shape renders' windows, dispatch, fetch, seams), the `host` pool (shape renders,
smoothing, paste), `encoder-feed` (frames into the encoder's pipe), plus the x264 encoder in a
child process and threads no Python code runs on (XLA's, PyAV's). A role whose CPU seconds come
close to the run's wall time per thread is serial work that bounds the frame rate however many
cores the machine has; a pool's share is spread over its threads.

Sampled every `interval` seconds (a thread's last sample is its total: threads that end between
two samples lose at most one interval). Off Linux, `ThreadClock` records nothing.
"""

from __future__ import annotations

import collections
import os
import re
import resource
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_TASKS = "/proc/self/task"
CHILDREN = "child processes"  # the role of the CPU time of child processes waited for inside


def _cpu_seconds(tid: int) -> float | None:
  """user + system seconds of thread `tid` of this process, None when it is gone."""
  try:
    with open(f"{_TASKS}/{tid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return None
  return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (stat fields 14, 15)


def role(name: str) -> str:
  """A thread's role: its name without a pool's `_N` index ("host_3" -> "host")."""
  return re.sub(r"_\d+$", "", name)


class ThreadClock:
  """Context manager: CPU seconds per role of the threads that ran inside it (`seconds`, and
  `threads`: how many threads each role had), plus the child processes waited for inside it
  (role `CHILDREN`)."""

  def __init__(self, interval: float = 0.05) -> None:
    self.interval = interval
    self.seconds: dict[str, float] = {}
    self.threads: dict[str, int] = {}
    self.wall = 0.0
    self._enabled = os.path.isdir(_TASKS)
    self._last: dict[int, tuple[str, float]] = {}
    self._base: dict[int, float] = {}
    self._stop = threading.Event()
    self._monitor: threading.Thread | None = None

  def _sample(self) -> None:
    names = {t.native_id: t.name for t in threading.enumerate()}
    for entry in os.listdir(_TASKS):
      tid = int(entry)
      if self._monitor is not None and tid == self._monitor.native_id:
        continue
      cpu = _cpu_seconds(tid)
      if cpu is not None:
        name = names.get(tid) or self._last.get(tid, ("other (no Python thread)", 0.0))[0]
        self._last[tid] = (name, cpu)

  def _run(self) -> None:
    while not self._stop.wait(self.interval):
      self._sample()

  def __enter__(self) -> ThreadClock:
    self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
    self._t0 = time.perf_counter()
    if self._enabled:
      self._sample()
      self._base = {tid: cpu for tid, (_, cpu) in self._last.items()}
      self._monitor = threading.Thread(target=self._run, name="thread-clock", daemon=True)
      self._monitor.start()
    return self

  def __exit__(self, *exc) -> None:
    self.wall = time.perf_counter() - self._t0
    if not self._enabled:
      return
    self._stop.set()
    self._monitor.join()
    self._sample()
    seconds: dict[str, float] = collections.defaultdict(float)
    threads: dict[str, int] = collections.defaultdict(int)
    for tid, (name, cpu) in self._last.items():
      used = cpu - self._base.get(tid, 0.0)
      if used > 0 or tid not in self._base:
        seconds[role(name)] += used
        threads[role(name)] += 1
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds[CHILDREN] = (after.ru_utime - self._children.ru_utime) + (
      after.ru_stime - self._children.ru_stime
    )
    self.seconds, self.threads = dict(seconds), dict(threads)
