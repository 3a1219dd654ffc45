"""Where jaxtalk caches things ($JAXTALK_CACHE, default ~/.cache/jaxtalk: landmark tracks in
`landmarks/`, jaxtalk/face/cache.py), and the `jaxtalk` command's persistent cache of compiled
XLA programs in `xla/`.

Every `jaxtalk demo`, `train`, `infer` or `eval` compiles the same programs again for the same
config: on a 2-core CPU that is a large part of a small job. With the cache a second run loads
them instead: `jaxtalk demo` 3:03 -> 1:39, its renderer training 94 -> 47 s
(docs/benchmarks.md, "Issue 12"). The key is JAX's own: the program, its compile options,
the devices and the jax / XLA versions, so a changed config or an upgrade misses the cache and
compiles; a cached program is the compiled program itself, and outputs are bit-identical with
and without it (tests/test_caches.py).

    where        $JAXTALK_CACHE/xla, default ~/.cache/jaxtalk/xla (beside the landmark cache)
    off          JAXTALK_XLA_CACHE=off
    size         JAXTALK_XLA_CACHE_GB (default 2): least recently used programs are evicted; the
                 eviction's file lock (the `filelock` package) also keeps processes that share
                 the folder (multi-process training, parallel jobs) from reading a half-written
                 entry
    precedence   a JAX_COMPILATION_CACHE_DIR (or any other JAX_ cache variable) already in the
                 environment is left as it is

`jaxtalk bench` commands that print a compile time print the cache's load time on a second run:
JAXTALK_XLA_CACHE=off for cold figures.

Only the CLI turns it on (library users choose for themselves; JAX's own switch is
`jax.config.update("jax_compilation_cache_dir", ...)`). It works through JAX's environment
variables, which JAX reads when it is imported, so that `jaxtalk msi` still does not import JAX.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import MutableMapping

from jaxtalk.errors import ConfigError

OFF_VALUES = ("off", "0", "no", "false")
DEFAULT_GB = 2.0
# programs that compile faster than this are not worth a file (JAX's default is 1 s; most of the
# tiny config's programs take 0.5-1 s on this CPU)
MIN_COMPILE_SECONDS = 0.5


def cache_root(env: MutableMapping[str, str] = os.environ) -> pathlib.Path:
  """jaxtalk's cache folder: $JAXTALK_CACHE, else $XDG_CACHE_HOME/jaxtalk, else ~/.cache/jaxtalk."""
  root = env.get("JAXTALK_CACHE") or os.path.join(
    env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxtalk"
  )
  return pathlib.Path(root)


def xla_cache_settings(env: MutableMapping[str, str] = os.environ) -> dict[str, str]:
  """The JAX variables that turn the cache on, or {} when JAXTALK_XLA_CACHE is off. Raises
  ConfigError (one line) for a size that is not a positive number of GB."""
  if env.get("JAXTALK_XLA_CACHE", "").strip().lower() in OFF_VALUES:
    return {}
  text = env.get("JAXTALK_XLA_CACHE_GB", str(DEFAULT_GB))
  try:
    gb = float(text)
  except ValueError:
    gb = -1.0
  if not gb > 0:
    raise ConfigError(f"JAXTALK_XLA_CACHE_GB={text!r}: expected a positive number of gigabytes")
  return {
    "JAX_COMPILATION_CACHE_DIR": str(cache_root(env) / "xla"),
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(int(gb * 2**30)),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(MIN_COMPILE_SECONDS),
  }


def enable(env: MutableMapping[str, str] = os.environ) -> str | None:
  """Turns the cache on for this process and its children (unless off or already configured by
  the user): sets the JAX variables in `env`, and JAX's config too if JAX is already imported.
  Returns the cache folder in use, or None."""
  settings = xla_cache_settings(env)
  if not settings:
    return None
  if "JAX_COMPILATION_CACHE_DIR" in env:
    return env["JAX_COMPILATION_CACHE_DIR"]
  for key, value in settings.items():
    env.setdefault(key, value)
  if "jax" in sys.modules and env is os.environ:  # too late for the variables: set the config
    config = sys.modules["jax"].config
    config.update("jax_compilation_cache_dir", env["JAX_COMPILATION_CACHE_DIR"])
    config.update("jax_compilation_cache_max_size", int(env["JAX_COMPILATION_CACHE_MAX_SIZE"]))
    secs = float(env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
    config.update("jax_persistent_cache_min_compile_time_secs", secs)
  return env["JAX_COMPILATION_CACHE_DIR"]
