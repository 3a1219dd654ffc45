"""Loading ml-collections config files and applying `--set key=value` overrides.

A config file is a Python file with `get_config()` returning a locked ConfigDict. Overrides are
type-checked against the existing value; an unknown key is an error that lists close matches,
never a silent new key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
import sys
from collections.abc import Iterable

import ml_collections

from jaxtalk.errors import ConfigError

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "grid"


def resolve_config_path(name_or_path: str | None) -> pathlib.Path:
  """A path, or the name of a config shipped in configs/ ("tiny", "grid")."""
  if not name_or_path:
    name_or_path = DEFAULT_CONFIG
  path = pathlib.Path(name_or_path)
  if path.suffix != ".py" and not path.exists():
    path = CONFIG_DIR / f"{name_or_path}.py"
  if not path.is_file():
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.py")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"config file not found: {name_or_path} (shipped configs: {shipped})")
  return path


def load_config_file(path: pathlib.Path) -> ml_collections.ConfigDict:
  # A config may import its sibling (tiny.py builds on grid.py), so its folder joins sys.path
  # for the duration of the import only.
  folder = str(path.parent)
  sys.path.insert(0, folder)
  try:
    spec = importlib.util.spec_from_file_location(f"_jaxtalk_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as e:  # a syntax or import error inside the user's config file
    raise ConfigError(f"could not load config {path}: {type(e).__name__}: {e}") from e
  finally:
    sys.path.remove(folder)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config {path} has no get_config()")
  config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() in {path} returned {type(config).__name__}, not ConfigDict")
  config.lock()
  return config


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    full = f"{prefix}{k}"
    keys.append(full)
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(_all_keys(v, full + "."))
  return keys


def _parse_value(text: str, current: object, key: str) -> object:
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(
      f"--set {key}={text}: not a Python literal (expected {type(current).__name__})"
    ) from e
  if isinstance(current, bool):
    if not isinstance(value, bool):
      raise ConfigError(f"--set {key}={text}: expected True or False")
    return value
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, int | float) and not isinstance(value, type(current)):
    raise ConfigError(f"--set {key}={text}: expected {type(current).__name__}")
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Applies "a.b.c=value" strings in place; unknown keys and wrong types raise ConfigError."""
  known = _all_keys(config)
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    if key not in known:
      close = difflib.get_close_matches(key, known, n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"unknown config key {key!r}{hint}")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"{key!r} is a section, not a value; set one of its fields")
    node[leaf] = _parse_value(text, node[leaf], key)


def load_config(
  name_or_path: str | None, overrides: Iterable[str] = ()
) -> ml_collections.ConfigDict:
  """The command-line entry point: a config file (or shipped name) plus overrides."""
  config = load_config_file(resolve_config_path(name_or_path))
  apply_overrides(config, overrides)
  return config
