"""jaxtalk <-> DECA bridge: FLAME expression (50) + jaw pose (3) = StableFace's 53 expression
parameters and DECA shape renders, written in jaxtalk's dataset format.

Used through `jaxtalk preprocess ... --face-model deca --deca-dir DECA [--deca-data DATA]`.
Nothing here imports PyTorch or DECA until a clip is actually fitted; missing pieces are
reported with what to install and where from (see README.md).
"""

from deca_bridge.fitter import (
  EXPRESSION_DIM,
  FLAME_EXPRESSION_DIM,
  JAW_POSE_DIM,
  DecaFitter,
  DecaRunner,
  flame_to_dataset,
  locate_deca,
)

__all__ = [
  "EXPRESSION_DIM",
  "FLAME_EXPRESSION_DIM",
  "JAW_POSE_DIM",
  "DecaFitter",
  "DecaRunner",
  "flame_to_dataset",
  "locate_deca",
]
