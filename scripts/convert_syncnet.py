"""Convert syncnet_python's SyncNet weights (`syncnet_v2.model`, a torch state dict) to .npz.

Run where PyTorch is installed (jaxtalk itself does not need it):

  python scripts/convert_syncnet.py syncnet_v2.model syncnet_v2.npz

The .npz keeps syncnet_python's key names and torch layouts (`netcnnaud.0.weight` (64, 1, 3, 3),
`netcnnlip.0.weight` (96, 3, 5, 7, 7), ...); jaxtalk's loader (jaxtalk/metrics/syncnet_weights.py)
checks every key and shape and converts the layouts. Then: `jaxtalk eval ... --syncnet
syncnet_v2.npz`. Files that are a whole pickled model rather than a state dict can only be read
with `--unsafe-pickle`, which runs the file's pickle code: use it only on files you trust.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("src", help="syncnet_python weights (syncnet_v2.model / .pth)")
  parser.add_argument("dst", help="output .npz")
  parser.add_argument(
    "--unsafe-pickle",
    action="store_true",
    help="torch.load with weights_only=False (arbitrary code in the file runs; trusted files only)",
  )
  args = parser.parse_args(argv)
  try:
    import torch
  except ImportError:
    print("convert_syncnet: PyTorch is not installed here; run this where it is", file=sys.stderr)
    return 2
  try:
    state = torch.load(args.src, map_location="cpu", weights_only=not args.unsafe_pickle)
  except Exception as e:  # torch raises many types for corrupt or non-state-dict files
    hint = "" if args.unsafe_pickle else " (if you trust the file, retry with --unsafe-pickle)"
    print(f"convert_syncnet: cannot read {args.src}: {e}{hint}", file=sys.stderr)
    return 2
  if hasattr(state, "state_dict"):
    state = state.state_dict()
  arrays = {
    k: v.detach().cpu().numpy()
    for k, v in state.items()
    if hasattr(v, "detach") and not k.endswith("num_batches_tracked")
  }
  if not any(k.endswith("netcnnlip.0.weight") for k in arrays):
    print(f"convert_syncnet: {args.src} has no netcnnlip.0.weight; not SyncNet?", file=sys.stderr)
    return 2
  np.savez(args.dst, **arrays)
  print(f"wrote {len(arrays)} arrays to {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
