"""Re-export: the checkpoint store moved to the neutral jaxtalk.checkpoints (inference uses it
without importing train/)."""

from jaxtalk.checkpoints import CheckpointError, Checkpoints, check_compatible  # noqa: F401
