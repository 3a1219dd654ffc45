"""Writing dataset files so that a crash never leaves anything that reads as complete.

A clip is written into clips/<name>.partial/ as memory-mapped .npy files (long clips never sit
in memory whole), flushed and fsynced, then renamed to clips/<name>/ in one `os.replace`.
manifest.json and face_model.npz are written to a temporary name and renamed. Everything written
is a function of the content only: no timestamps (face_model.npz is a zip whose entries carry a
fixed 1980-01-01 date instead of the time of writing), sorted JSON keys.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxtalk.data.dataset import CLIPS_DIR, FIELDS, PARTIAL_SUFFIX, field_shape


def _fsync_path(path: pathlib.Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n"
  write_bytes_atomic(path, text.encode())


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  """An uncompressed .npz (readable by np.load) with fixed entry dates and sorted names."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
    for name in sorted(arrays):
      entry = io.BytesIO()
      np.lib.format.write_array(entry, np.asanyarray(arrays[name]), allow_pickle=False)
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.external_attr = 0o644 << 16
      zf.writestr(info, entry.getvalue())
  return buf.getvalue()


class ClipWriter:
  """Memory-mapped field arrays for one clip in clips/<name>.partial/, renamed on `finish`.

  dims: values of the shape symbols of `FIELDS` (T, S, P, E, W, F, M). extra: additional
  fields {name: (dtype, shape)} (the DECA bridge stores FLAME parameters this way).
  """

  def __init__(
    self,
    dataset_dir: str | os.PathLike,
    name: str,
    dims: Mapping[str, int],
    extra: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
  ):
    self.name = name
    clips = pathlib.Path(dataset_dir) / CLIPS_DIR
    clips.mkdir(parents=True, exist_ok=True)
    self.final = clips / name
    self.partial = clips / f"{name}{PARTIAL_SUFFIX}"
    if self.partial.exists():  # left by a run that died while writing this clip
      shutil.rmtree(self.partial)
    self.partial.mkdir()
    specs = {f: (FIELDS[f][0], field_shape(f, dims)) for f in FIELDS}
    specs.update(extra or {})
    self.arrays: dict[str, np.ndarray] = {}
    for field, (dtype, shape) in sorted(specs.items()):
      self.arrays[field] = np.lib.format.open_memmap(
        self.partial / f"{field}.npy", mode="w+", dtype=np.dtype(dtype), shape=tuple(shape)
      )

  def __getitem__(self, field: str) -> np.ndarray:
    return self.arrays[field]

  def __setitem__(self, field: str, value: np.ndarray) -> None:
    self.arrays[field][...] = value

  def finish(self) -> pathlib.Path:
    """Flushes every field to disk and publishes the clip under its final name."""
    for array in self.arrays.values():
      array.flush()
    self.arrays.clear()  # closes the maps
    for path in sorted(self.partial.iterdir()):
      _fsync_path(path)
    _fsync_path(self.partial)
    if self.final.exists():
      shutil.rmtree(self.final)
    os.replace(self.partial, self.final)
    _fsync_path(self.final.parent)
    return self.final

  def abort(self) -> None:
    self.arrays.clear()
    shutil.rmtree(self.partial, ignore_errors=True)
