"""Loading pretrained VGG19 weights for the perceptual loss from a path the user gives.

Accepted files:
  .npz         arrays under torchvision's names (`features.0.weight` (64, 3, 3, 3) OIHW,
               `features.0.bias`, ...), as written by scripts/convert_vgg19.py;
  .pth / .pt   a torchvision `vgg19().state_dict()`, read only where PyTorch is installed.
Nothing is ever downloaded.
"""

from __future__ import annotations

import pathlib

from jaxtalk.errors import WeightsError
from jaxtalk.io.state_dict import read_state_dict
from jaxtalk.models.vgg import check_torchvision_vgg19, convert_torchvision_vgg19

CONVERT_HINT = (
  "convert it to .npz where PyTorch is installed: python scripts/convert_vgg19.py IN.pth OUT.npz"
)


def load_vgg19_params(path: str | pathlib.Path) -> dict:
  """The `params` of jaxtalk.models.vgg.VGG19Features from a .npz or torch file.

  Raises WeightsError when the file is missing or unreadable, or when a needed key is missing
  or has the wrong shape (naming the first such key).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise WeightsError(f"VGG19 weights not found: {path} (set train.vgg_weights to a .npz or .pth)")
  state = read_state_dict(path, "VGG19", CONVERT_HINT)
  problem = check_torchvision_vgg19(state)
  if problem is not None:
    raise WeightsError(f"VGG19 weights {path} do not match torchvision's vgg19: {problem}")
  return convert_torchvision_vgg19(state)
