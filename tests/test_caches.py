"""The CLI's XLA compilation cache (jaxtalk/caches.py): where it goes, its switches, and that a
second process loads the programs the first compiled and computes the same bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxtalk import caches
from jaxtalk.cli import main as cli_main
from jaxtalk.errors import ConfigError
from jaxtalk.face.cache import default_cache_dir


def test_settings_follow_the_cache_root_and_the_switches(tmp_path):
  env = {"JAXTALK_CACHE": str(tmp_path)}
  got = caches.xla_cache_settings(env)
  assert got["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xla")
  assert int(got["JAX_COMPILATION_CACHE_MAX_SIZE"]) == 2 * 2**30
  env = {"XDG_CACHE_HOME": str(tmp_path), "JAXTALK_XLA_CACHE_GB": "0.5"}
  got = caches.xla_cache_settings(env)
  assert got["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jaxtalk" / "xla")
  assert int(got["JAX_COMPILATION_CACHE_MAX_SIZE"]) == 2**29
  for off in ("off", "OFF", "0"):
    assert caches.xla_cache_settings({"JAXTALK_XLA_CACHE": off}) == {}
    env = {"JAXTALK_XLA_CACHE": off}
    assert caches.enable(env) is None and env == {"JAXTALK_XLA_CACHE": off}  # nothing set
  for bad in ("-1", "two", "0"):
    with pytest.raises(ConfigError, match="JAXTALK_XLA_CACHE_GB"):
      caches.xla_cache_settings({"JAXTALK_XLA_CACHE_GB": bad})


def test_enable_keeps_what_the_user_set(tmp_path):
  env = {"JAXTALK_CACHE": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": "/elsewhere"}
  assert caches.enable(env) == "/elsewhere"
  assert "JAX_COMPILATION_CACHE_MAX_SIZE" not in env  # the user's cache, the user's settings
  env = {"JAXTALK_CACHE": str(tmp_path)}
  assert caches.enable(env) == str(tmp_path / "xla")
  assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == str(caches.MIN_COMPILE_SECONDS)


def test_landmark_cache_shares_the_root(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXTALK_CACHE", str(tmp_path))
  assert default_cache_dir() == tmp_path / "landmarks"


def test_bad_size_is_one_line_from_the_cli(monkeypatch, capsys):
  monkeypatch.setenv("JAXTALK_XLA_CACHE_GB", "lots")
  assert cli_main(["msi", "clip.mp4"]) != 0  # stops before the command runs
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "JAXTALK_XLA_CACHE_GB='lots'" in err


# A child that turns the cache on as the CLI does, then compiles and runs the tiny renderer; it
# reports the cache's hit and miss events (jax.monitoring) and the output's bytes.
CHILD = textwrap.dedent(
  """
  import hashlib, json, sys
  from jaxtalk import caches
  caches.enable()
  import jax, jax.numpy as jnp
  events = []
  jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
  from jaxtalk.config import load_config
  from jaxtalk.models.renderer import renderer_from_config
  cfg = load_config("tiny")
  model = renderer_from_config(cfg)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 64, 64, 3), minval=-1.0, maxval=1.0)
  a = jax.random.normal(jax.random.PRNGKey(1), (1, 2, cfg.data.audio_window, cfg.data.n_mels))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(2), x, x, a)
  v = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes)
  y = jax.jit(model.apply)(v, x, x, a)
  print(json.dumps({
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
    "digest": hashlib.sha256(jax.device_get(y).tobytes()).hexdigest(),
  }))
  """
)


def _child(env: dict[str, str]) -> dict:
  out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_programs_and_computes_the_same(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_PLATFORMS"}
  env["JAXTALK_CACHE"] = str(tmp_path)
  # every program stored, however fast it compiled (the default skips those under 0.5 s, and
  # which ones those are depends on the machine's load)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  first, second = _child(env), _child(env)
  assert first["misses"] >= 1 and first["hits"] == 0  # compiled and stored
  assert any((tmp_path / "xla").iterdir())
  assert second["hits"] == first["misses"] and second["misses"] == 0  # loaded, not compiled
  assert second["digest"] == first["digest"]
  off = _child({**env, "JAXTALK_XLA_CACHE": "off", "JAXTALK_CACHE": str(tmp_path / "none")})
  assert off["hits"] == off["misses"] == 0 and off["digest"] == first["digest"]
  assert not (tmp_path / "none").exists()
