"""Regenerates the reference numbers of tests/test_syncnet.py from the original implementations.

  test_embeddings_match_pytorch_syncnet   syncnet_python's SyncNetModel.S (PyTorch), eval mode,
                                          on the tests' random state dict and inputs
  test_mfcc_matches_python_speech_features python_speech_features.mfcc on the tests' signal

Neither PyTorch nor python_speech_features is a jaxtalk dependency (nothing in jaxtalk/ imports
torch), so this runs from a separate virtual environment, without jaxtalk installed:

  python3.11 -m venv /tmp/ref && /tmp/ref/bin/pip install torch numpy \\
      scipy python_speech_features   # CPU wheels are enough
  /tmp/ref/bin/python scripts/syncnet_reference.py

and prints the numbers to paste into tests/test_syncnet.py. The model below is syncnet_python's
`S` (github.com/joonson/syncnet_python, SyncNetModel.py, MIT licence), layer for layer: the
state-dict names and shapes must equal jaxtalk.metrics.syncnet_weights.expected_shapes() (the
tests check that layout). The random weights and inputs follow the tests' make_state_dict /
make_inputs exactly (same NumPy generator, same draw order).
"""

from __future__ import annotations

import numpy as np

try:  # each part runs where its reference implementation is installed
  import torch
  from torch import nn
except ImportError:
  torch = nn = None


def syncnet_s(embed_dim: int = 1024):
  """syncnet_python's SyncNetModel.S."""

  class S(nn.Module):
    def __init__(self):
      super().__init__()
      self.netcnnaud = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
        nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(192), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
        nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(384), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
        nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
        nn.BatchNorm2d(512), nn.ReLU(),
      )  # fmt: skip
      self.netfcaud = nn.Sequential(
        nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
      )
      self.netfclip = nn.Sequential(
        nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
      )
      self.netcnnlip = nn.Sequential(
        nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
        nn.BatchNorm3d(96), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
        nn.BatchNorm3d(512), nn.ReLU(inplace=True),
      )  # fmt: skip

    def forward_aud(self, x):
      mid = self.netcnnaud(x)
      return self.netfcaud(mid.view((mid.size()[0], -1)))

    def forward_lip(self, x):
      mid = self.netcnnlip(x)
      return self.netfclip(mid.view((mid.size()[0], -1)))

  return S()


def key_order(model) -> list[str]:
  """The state-dict keys in the order of jaxtalk's expected_shapes(): the two conv stacks, then
  the two heads (the tests draw the random weights in that order)."""
  keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
  order = ("netcnnaud", "netcnnlip", "netfcaud", "netfclip")
  return sorted(keys, key=lambda k: order.index(k.split(".")[0]))  # stable within a stack


def make_state_dict(model, seed: int = 0) -> dict[str, np.ndarray]:
  """tests/test_syncnet.py make_state_dict: the same generator, rules and draw order."""
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  rng = np.random.default_rng(seed)
  state = {}
  for key in key_order(model):
    shape = shapes[key]
    name = key.rsplit(".", 1)[1]
    if name == "running_var":
      a = rng.uniform(0.5, 1.5, shape)
    elif name == "weight" and len(shape) == 1:
      a = rng.uniform(0.5, 1.5, shape)
    elif name == "weight":
      a = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    else:
      a = rng.normal(0.0, 0.1, shape)
    state[key] = a.astype(np.float32)
  return state


def make_inputs(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """tests/test_syncnet.py make_inputs: audio (N, 13, 20, 1) MFCC windows, lips (N, 5, 224,
  224, 3) RGB, channels last (jaxtalk's layout)."""
  rng = np.random.default_rng(seed)
  audio = rng.normal(0, 5, (2, 13, 20, 1)).astype(np.float32)
  lips = rng.uniform(0, 255, (1, 5, 224, 224, 3)).astype(np.float32)
  return audio, lips


def embeddings() -> None:
  if torch is None:
    print("test_embeddings_match_pytorch_syncnet: pip install torch")
    return
  model = syncnet_s()
  state = make_state_dict(model)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
  model.eval()
  audio, lips = make_inputs()
  with torch.no_grad():
    emb_a = model.forward_aud(torch.from_numpy(audio).permute(0, 3, 1, 2)).numpy()  # NCHW
    emb_v = model.forward_lip(torch.from_numpy(lips).permute(0, 4, 1, 2, 3)).numpy()  # NCDHW
  np.set_printoptions(precision=8, suppress=False)
  print("test_embeddings_match_pytorch_syncnet:")
  print("  torch_a (first 4 entries per row) =", emb_a[:, :4].tolist())
  print("  |emb_a| =", np.linalg.norm(emb_a, axis=1).tolist())
  print("  torch_v (first 4 entries) =", emb_v[:, :4].tolist())
  print("  |emb_v| =", np.linalg.norm(emb_v, axis=1).tolist())


def mfcc() -> None:
  try:
    from python_speech_features import mfcc as psf_mfcc
  except ImportError:
    print("test_mfcc_matches_python_speech_features: pip install python_speech_features scipy")
    return
  t = np.arange(1600) / 16000.0
  sig = np.round(8000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1234 * t) * t * 10)
  feat = psf_mfcc(sig.astype(np.int16), 16000)
  print("test_mfcc_matches_python_speech_features:")
  print("  shape", feat.shape)
  print("  feat[0] =", [float(f"{v:.10g}") for v in feat[0]])
  print("  feat[5] =", [float(f"{v:.10g}") for v in feat[5]])


if __name__ == "__main__":
  embeddings()
  mfcc()
