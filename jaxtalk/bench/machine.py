"""The machine a benchmark ran on, for the line every benchmark prints."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
  """The CPU model from /proc/cpuinfo (e.g. "AMD EPYC"), else what `platform` knows."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def describe() -> str:
  return f"{cpu_name()}, {os.cpu_count()} cores"
