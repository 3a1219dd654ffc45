"""Pretrained weights from a path the user gives, as PyTorch-named numpy arrays.

`.npz` files (arrays under the state dict's key names) read anywhere; torch files (`.pth`,
`.pt`, `.model`) only where PyTorch is installed, imported here and nowhere else in jaxtalk.
Nothing is ever downloaded. Every failure is a WeightsError that names the file.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxtalk.errors import WeightsError

TORCH_SUFFIXES = (".model", ".pth", ".pt")


def read_npz(path: pathlib.Path, what: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise WeightsError(f"cannot read {what} weights {path} as .npz: {e}") from e


def read_torch(
  path: pathlib.Path,
  what: str,
  convert_hint: str,
  unsafe_pickle: bool = False,
  pickle_hint: str = "",
) -> dict[str, np.ndarray]:
  """A torch state dict (or a module holding one) as numpy arrays. Only plain tensors are
  unpickled unless `unsafe_pickle`; `pickle_hint` tells how to load a trusted pickled model."""
  try:
    import torch  # optional dependency, only for torch files
  except ImportError:
    raise WeightsError(
      f"{path} is a PyTorch file but torch is not installed; {convert_hint}"
    ) from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
  except Exception as e:  # torch raises many types for corrupt or non-state-dict files
    hint = "" if unsafe_pickle else pickle_hint
    raise WeightsError(f"cannot read {what} weights {path} with torch: {e}{hint}") from e
  if hasattr(state, "state_dict"):
    state = state.state_dict()
  if not isinstance(state, dict):
    raise WeightsError(f"{path} holds a {type(state).__name__}, not a {what} state dict")
  return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def read_state_dict(
  path: pathlib.Path, what: str, convert_hint: str, *, pickle_hint: str = ""
) -> dict[str, np.ndarray]:
  """The arrays of an existing `.npz` or torch weights file, by its suffix."""
  if path.suffix == ".npz":
    return read_npz(path, what)
  if path.suffix in TORCH_SUFFIXES:
    return read_torch(path, what, convert_hint, pickle_hint=pickle_hint)
  raise WeightsError(f"{what} weights {path}: expected a .npz, {', '.join(TORCH_SUFFIXES)} file")
