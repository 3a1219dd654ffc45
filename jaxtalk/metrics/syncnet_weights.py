"""Loading SyncNet weights (syncnet_python's `syncnet_v2.model`) from a path the user gives.

Accepted files:
  .npz                   arrays under syncnet_python's state-dict names, as written by
                         scripts/convert_syncnet.py (`netcnnaud.0.weight` (64, 1, 3, 3),
                         `netcnnaud.1.running_mean` (64,), ..., `netcnnlip.0.weight`
                         (96, 3, 5, 7, 7), ..., `netfcaud.3.weight` (1024, 512));
  .model / .pth / .pt    the torch state dict itself, read only where PyTorch is installed.
Keys may carry a `__S__.` or `module.` prefix (a saved SyncNetInstance or DataParallel);
`num_batches_tracked` entries are ignored. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from jaxtalk.errors import WeightsError
from jaxtalk.io.state_dict import read_state_dict
from jaxtalk.models.syncnet import AUDIO_CONVS, EMBED_DIM, LIP_CONVS

CONVERT_HINT = (
  "convert it to .npz where PyTorch is installed: "
  "python scripts/convert_syncnet.py syncnet_v2.model syncnet_v2.npz"
)
_PREFIXES = ("__S__.", "module.")


def expected_shapes(embed_dim: int = EMBED_DIM) -> dict[str, tuple[int, ...]]:
  """Every tensor of syncnet_python's `S` state dict (without num_batches_tracked), by name."""
  shapes: dict[str, tuple[int, ...]] = {}
  for stack, convs, in_ch in (("netcnnaud", AUDIO_CONVS, 1), ("netcnnlip", LIP_CONVS, 3)):
    for index, out, kernel, *_ in convs:
      shapes[f"{stack}.{index}.weight"] = (out, in_ch, *kernel)
      shapes[f"{stack}.{index}.bias"] = (out,)
      for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{stack}.{index + 1}.{name}"] = (out,)
      in_ch = out
  for head in ("netfcaud", "netfclip"):
    shapes[f"{head}.0.weight"] = (512, 512)
    shapes[f"{head}.0.bias"] = (512,)
    for name in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{head}.1.{name}"] = (512,)
    shapes[f"{head}.3.weight"] = (embed_dim, 512)
    shapes[f"{head}.3.bias"] = (embed_dim,)
  return shapes


def _strip(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in state.items():
    for prefix in _PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix) :]
    if not key.endswith("num_batches_tracked"):
      out[key] = value
  return out


def check_state_dict(state: dict[str, np.ndarray]) -> str | None:
  """None when `state` is a complete syncnet_python `S` state dict, else the first problem."""
  shapes = expected_shapes()
  for key, shape in shapes.items():
    if key not in state:
      return f"missing key {key!r} (expected shape {shape})"
    got = tuple(np.shape(state[key]))
    if got != shape:
      return f"key {key!r} has shape {got}, expected {shape}"
  extra = sorted(set(state) - set(shapes))
  if extra:
    return f"unexpected key {extra[0]!r}" + (
      f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
    )
  return None


def convert_state_dict(state: dict[str, np.ndarray]) -> dict:
  """syncnet_python `S` state dict (torch layouts) -> flax variables of models.syncnet.SyncNet."""
  params: dict = {}
  stats: dict = {}

  def f32(key: str) -> np.ndarray:
    return np.asarray(state[key], np.float32)

  def batch_norm(stack: str, prefix: str, name: str) -> None:
    params[stack][name] = {"scale": f32(f"{prefix}.weight"), "bias": f32(f"{prefix}.bias")}
    stats[stack][name] = {
      "mean": f32(f"{prefix}.running_mean"),
      "var": f32(f"{prefix}.running_var"),
    }

  for stack, convs in (("netcnnaud", AUDIO_CONVS), ("netcnnlip", LIP_CONVS)):
    params[stack], stats[stack] = {}, {}
    for index, *_ in convs:
      w = f32(f"{stack}.{index}.weight")
      # torch (O, I, *k) -> flax (*k, I, O)
      kernel = np.transpose(w, (*range(2, w.ndim), 1, 0))
      params[stack][f"conv{index}"] = {"kernel": kernel, "bias": f32(f"{stack}.{index}.bias")}
      batch_norm(stack, f"{stack}.{index + 1}", f"bn{index + 1}")
  for head in ("netfcaud", "netfclip"):
    params[head], stats[head] = {}, {}
    for index in (0, 3):
      params[head][f"fc{index}"] = {
        "kernel": f32(f"{head}.{index}.weight").T,
        "bias": f32(f"{head}.{index}.bias"),
      }
    batch_norm(head, f"{head}.1", "bn1")
  return {"params": params, "batch_stats": stats}


def load_syncnet_variables(path: str | os.PathLike) -> dict:
  """The flax variables (`params`, `batch_stats`) of models.syncnet.SyncNet from a file.

  Raises WeightsError when the file is missing or unreadable, or when a key is missing, has the
  wrong shape or is unexpected (naming the first such key).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise WeightsError(f"SyncNet weights not found: {path}")
  state = read_state_dict(
    path,
    "SyncNet",
    CONVERT_HINT,
    pickle_hint=f"; if you trust the file, {CONVERT_HINT} --unsafe-pickle",
  )
  state = _strip(state)
  problem = check_state_dict(state)
  if problem is not None:
    raise WeightsError(f"SyncNet weights {path} do not match syncnet_python's model: {problem}")
  return convert_state_dict(state)
