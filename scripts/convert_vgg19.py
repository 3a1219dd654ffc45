"""Convert a torchvision VGG19 checkpoint (.pth state dict) to .npz for jaxtalk.

Run where PyTorch is installed (jaxtalk itself does not need it):

  python scripts/convert_vgg19.py vgg19-dcbb9e9d.pth vgg19.npz

The .npz keeps torchvision's key names and layouts (`features.0.weight` OIHW, ...); jaxtalk's
loader (jaxtalk/train/vgg_weights.py) does the layout conversion. Then set
`--set train.vgg_weights=vgg19.npz`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("src", help="torchvision vgg19 state dict (.pth)")
  parser.add_argument("dst", help="output .npz")
  parser.add_argument(
    "--all-keys", action="store_true", help="also keep the classifier (not needed for features)"
  )
  args = parser.parse_args(argv)
  try:
    import torch
  except ImportError:
    print("convert_vgg19: PyTorch is not installed here; run this where it is", file=sys.stderr)
    return 2
  state = torch.load(args.src, map_location="cpu", weights_only=True)
  if hasattr(state, "state_dict"):
    state = state.state_dict()
  arrays = {
    k: v.detach().cpu().numpy()
    for k, v in state.items()
    if hasattr(v, "detach") and (args.all_keys or k.startswith("features."))
  }
  if "features.0.weight" not in arrays:
    print(f"convert_vgg19: {args.src} has no features.0.weight; not a VGG19?", file=sys.stderr)
    return 2
  np.savez(args.dst, **arrays)
  print(f"wrote {len(arrays)} arrays to {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
