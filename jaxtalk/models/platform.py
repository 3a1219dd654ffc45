"""The platform whose forms the models trace.

Some layers choose their form when the program is traced (models/conv.py's convs and reflect
pads, models/layers.py's UpConv interleave, models/attention.py's kernel), by the platform it
will run on. That is JAX's default backend, unless the program is lowered for another platform:
`traced_for("gpu")` around the tracing gives a GPU's forms on a machine without one, for a
deviceless compile (`jaxtalk bench gpu-kernels`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

_OVERRIDES: list[str] = []  # the traced_for() platforms, innermost last


def forms_platform() -> str:
  """'cpu', 'gpu', 'tpu', ...: the innermost `traced_for` platform, else JAX's default backend."""
  return _OVERRIDES[-1] if _OVERRIDES else jax.default_backend()


@contextlib.contextmanager
def traced_for(platform: str) -> Iterator[None]:
  """Within this block, the models trace the forms of `platform` (as JAX names backends)."""
  _OVERRIDES.append(platform)
  try:
    yield
  finally:
    _OVERRIDES.pop()
