"""Reading a preprocessed dataset (format: docs/dataset_format.md). Small and stable on purpose:
the Grain sources and every other reader build on this file.

    from jaxtalk.data.dataset import open_dataset

    ds = open_dataset("data/grid")    # JaxtalkError: missing, not a dataset, other version,
                                      # or preprocessing not finished
    ds.manifest                       # dict: manifest.json (config, sources, clips, fit quality)
    ds.clip_names                     # sorted list of clip names
    ds.num_frames(name), ds.total_frames
    ds.train_frames(name)             # its first train_frames frames are for training, the rest
                                      # held out (num_frames when the dataset has no split)
    ds.holdout                        # the held-out fraction per source (0.0: no split)
    ds.fps, ds.image_size, ds.expression_dim, ds.audio_window, ds.n_mels, ds.face_model_kind
    clip = ds.clip(name)              # Clip: a read-only Mapping field -> np.memmap
    clip["frames"][t0 : t0 + 12]      # (12, S, S, 3) uint8, read from disk on access
    clip.num_frames, clip.info        # the clip's manifest entry
    ds.face_model_arrays()            # dict of the arrays in face_model.npz
    ds.face_model()                   # jaxtalk.face.landmark3d.FaceModel (landmark3d datasets):
                                      # .render(expression, pose, size), .project(...)

`FIELDS` lists every per-clip field with its dtype and shape (symbols: T frames, S image_size,
P mask points, E expression_dim, W audio_window, F n_mels, M mel frames). A clip folder may hold
extra fields (the DECA bridge adds some); `Clip` serves them too, unchecked.

Datasets and clips pickle without their memory maps (each process maps the files itself), so
they can be handed to Grain worker processes.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxtalk.errors import JaxtalkError

FORMAT_NAME = "jaxtalk-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FACE_MODEL = "face_model.npz"
CLIPS_DIR = "clips"
PARTIAL_SUFFIX = ".partial"

# field -> (dtype, shape in symbols). The first axis of every field but "mel" is T.
FIELDS: dict[str, tuple[str, tuple[str | int, ...]]] = {
  "frames": ("uint8", ("T", "S", "S", 3)),
  "shape": ("uint8", ("T", "S", "S", 3)),
  "mask": ("uint8", ("T", "S", "S")),
  "landmarks": ("float32", ("T", 68, 2)),
  "mask_points": ("float32", ("T", "P", 2)),
  "expression": ("float32", ("T", "E")),
  "pose": ("float32", ("T", 6)),
  "audio": ("float32", ("T", "W", "F")),
  "mel": ("float32", ("M", "F")),
}


class DatasetError(JaxtalkError):
  """A dataset folder that is missing, foreign, of another format version, or damaged."""


def field_shape(field: str, dims: Mapping[str, int]) -> tuple[int, ...]:
  """The concrete shape of a field given its symbols' values."""
  return tuple(int(dims[s]) if isinstance(s, str) else s for s in FIELDS[field][1])


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
  """manifest.json of a dataset folder, checked for format and version."""
  root = pathlib.Path(path)
  if not root.exists():
    raise DatasetError(f"{root}: no such dataset folder")
  if not root.is_dir():
    raise DatasetError(f"{root}: is a file, not a dataset folder")
  manifest_path = root / MANIFEST
  if not manifest_path.is_file():
    raise DatasetError(
      f"{root}: not a jaxtalk dataset (no {MANIFEST}); make one with jaxtalk preprocess"
    )
  try:
    manifest = json.loads(manifest_path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DatasetError(f"{manifest_path}: unreadable ({e})") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
    raise DatasetError(f"{root}: {MANIFEST} is not a {FORMAT_NAME} manifest")
  version = manifest.get("version")
  if version != FORMAT_VERSION:
    raise DatasetError(
      f"{root}: dataset format version {version}, this jaxtalk reads version {FORMAT_VERSION};"
      " re-run jaxtalk preprocess into a new folder"
    )
  return manifest


class Clip(Mapping):
  """One clip's fields as read-only memory maps, opened on first access."""

  def __init__(self, folder: pathlib.Path, name: str, info: dict[str, Any], dims: dict[str, int]):
    self.folder = folder
    self.name = name
    self.info = info
    self.num_frames = int(info["num_frames"])
    self._dims = {**dims, "T": self.num_frames, "M": int(info.get("mel_frames", -1))}
    self._arrays: dict[str, np.ndarray] = {}

  def _fields(self) -> list[str]:
    return sorted(p.stem for p in self.folder.glob("*.npy"))

  def __getitem__(self, field: str) -> np.ndarray:
    if field not in self._arrays:
      path = self.folder / f"{field}.npy"
      if not path.is_file():
        raise KeyError(field)
      try:
        array = np.load(path, mmap_mode="r")
      except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from e
      if field in FIELDS:
        want_dtype = np.dtype(FIELDS[field][0])
        want = field_shape(field, self._dims)
        ok = all(w < 0 or w == g for w, g in zip(want, array.shape, strict=False))
        if array.dtype != want_dtype or len(want) != array.ndim or not ok:
          raise DatasetError(
            f"{path}: {array.dtype}{array.shape}, expected {want_dtype}{want}; the dataset is"
            " damaged, re-run jaxtalk preprocess"
          )
      self._arrays[field] = array
    return self._arrays[field]

  def __iter__(self) -> Iterator[str]:
    return iter(self._fields())

  def __len__(self) -> int:
    return len(self._fields())

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_arrays": {}}

  def __repr__(self) -> str:
    return f"Clip({self.name!r}, {self.num_frames} frames)"


class Dataset:
  """A finished dataset folder (see the module docstring)."""

  def __init__(self, path: pathlib.Path, manifest: dict[str, Any]):
    self.path = path
    self.manifest = manifest
    self.clip_names: list[str] = sorted(manifest.get("clips", {}))
    self.fps = float(manifest["fps"])
    self.image_size = int(manifest["image_size"])
    self.expression_dim = int(manifest["expression_dim"])
    self.audio_window = int(manifest["audio_window"])
    self.n_mels = int(manifest["n_mels"])
    self.face_model_kind = str(manifest["face_model"])
    self._dims = {
      "S": self.image_size,
      "E": self.expression_dim,
      "W": self.audio_window,
      "F": self.n_mels,
      "P": int(manifest["mask_points"]),
    }
    self._clips: dict[str, Clip] = {}

  def __len__(self) -> int:
    return len(self.clip_names)

  def num_frames(self, name: str) -> int:
    return int(self.manifest["clips"][name]["num_frames"])

  def train_frames(self, name: str) -> int:
    """How many of the clip's first frames are for training (and validation); the frames from
    there on are held out for evaluation. num_frames when no holdout split is recorded (datasets
    made before the split existed, or with data.holdout = 0)."""
    info = self.manifest["clips"][name]
    return int(info.get("train_frames", info["num_frames"]))

  @property
  def holdout(self) -> float:
    """The fraction of each source's frames held out at its end (0.0: no split)."""
    return float(self.manifest.get("holdout", 0.0))

  @property
  def total_frames(self) -> int:
    return sum(self.num_frames(n) for n in self.clip_names)

  def clip(self, name: str) -> Clip:
    if name not in self._clips:
      if name not in self.manifest.get("clips", {}):
        raise DatasetError(f"{self.path}: no clip {name!r}")
      folder = self.path / CLIPS_DIR / name
      if not folder.is_dir():
        raise DatasetError(
          f"{folder}: listed in the manifest but missing; re-run jaxtalk preprocess"
        )
      self._clips[name] = Clip(folder, name, self.manifest["clips"][name], self._dims)
    return self._clips[name]

  def face_model_arrays(self) -> dict[str, np.ndarray]:
    path = self.path / FACE_MODEL
    if not path.is_file():
      raise DatasetError(f"{path}: missing; re-run jaxtalk preprocess")
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}

  def face_model(self):
    """The landmark3d `FaceModel` (DatasetError for other face models, e.g. deca)."""
    from jaxtalk.face.landmark3d import KIND, FaceModel

    if self.face_model_kind != KIND:
      raise DatasetError(
        f"{self.path}: made with the {self.face_model_kind!r} face model; only landmark3d models"
        " are rendered by jaxtalk itself"
      )
    return FaceModel.from_arrays(self.face_model_arrays())

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_clips": {}}

  def __repr__(self) -> str:
    return f"Dataset({str(self.path)!r}, {len(self)} clips, {self.total_frames} frames)"


def open_dataset(path: str | os.PathLike, allow_incomplete: bool = False) -> Dataset:
  """Opens a dataset folder written by `jaxtalk preprocess`.

  allow_incomplete: also open a dataset whose preprocessing has not finished (only its finished
  clips are listed); by default that is an error, so nothing trains on half a dataset.
  """
  root = pathlib.Path(path)
  manifest = read_manifest(root)
  if manifest.get("status") != "complete" and not allow_incomplete:
    done = len(manifest.get("clips", {}))
    raise DatasetError(
      f"{root}: preprocessing has not finished ({done} clips written so far); re-run the same"
      " jaxtalk preprocess command to finish it"
    )
  return Dataset(root, manifest)
