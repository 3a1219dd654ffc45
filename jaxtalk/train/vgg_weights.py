"""Loading pretrained VGG19 weights for the perceptual loss from a path the user gives.

Accepted files:
  .npz         arrays under torchvision's names (`features.0.weight` (64, 3, 3, 3) OIHW,
               `features.0.bias`, ...), as written by scripts/convert_vgg19.py;
  .pth / .pt   a torchvision `vgg19().state_dict()`, read only where PyTorch is installed.
Nothing is ever downloaded.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxtalk.errors import WeightsError
from jaxtalk.models.vgg import check_torchvision_vgg19, convert_torchvision_vgg19

CONVERT_HINT = (
  "convert it to .npz where PyTorch is installed: python scripts/convert_vgg19.py IN.pth OUT.npz"
)


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise WeightsError(f"cannot read VGG19 weights {path} as .npz: {e}") from e


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # optional dependency, only for .pth files
  except ImportError:
    raise WeightsError(
      f"{path} is a PyTorch file but torch is not installed; {CONVERT_HINT}"
    ) from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or non-state-dict files
    raise WeightsError(f"cannot read VGG19 weights {path} with torch: {e}") from e
  if hasattr(state, "state_dict"):
    state = state.state_dict()
  if not isinstance(state, dict):
    raise WeightsError(f"{path} holds a {type(state).__name__}, not a VGG19 state dict")
  return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def load_vgg19_params(path: str | pathlib.Path) -> dict:
  """The `params` of jaxtalk.models.vgg.VGG19Features from a .npz or torch file.

  Raises WeightsError when the file is missing or unreadable, or when a needed key is missing
  or has the wrong shape (naming the first such key).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise WeightsError(f"VGG19 weights not found: {path} (set train.vgg_weights to a .npz or .pth)")
  if path.suffix == ".npz":
    state = _read_npz(path)
  elif path.suffix in (".pth", ".pt"):
    state = _read_torch(path)
  else:
    raise WeightsError(f"VGG19 weights {path}: expected a .npz or .pth file")
  problem = check_torchvision_vgg19(state)
  if problem is not None:
    raise WeightsError(f"VGG19 weights {path} do not match torchvision's vgg19: {problem}")
  return convert_torchvision_vgg19(state)
