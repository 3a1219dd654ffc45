"""Orbax checkpoints of a training run.

    WORKDIR/checkpoints/<step>/   the last train.keep checkpoints (and the one at the end of
                                  stage 1, written whatever the interval)
        state/                    the train state pytree (params, optimiser state, step, RNG
                                  key, batch statistics, audio statistics), sharded arrays
        data/                     the Grain iterator position, one JSON per host
        meta/                     JSON: kind, step, stage, config, validation split, best loss
    WORKDIR/best/<step>/          the checkpoint with the lowest validation loss (state, meta)

A checkpoint whose files are damaged (truncated by a full disk or a partial copy, deleted) is
reported in one line naming the file and the reason (`DamagedCheckpoint`). Resuming a run
(`restore_newest_readable`) then sets it aside into WORKDIR/damaged/<step>/ -- kept, never
deleted -- and continues from the newest readable checkpoint; inference stops with the error.

Saving is asynchronous (Orbax copies the arrays off the device, then writes in a background
thread); `wait()` must run before the process exits, and `close()` does it. Restoring into
an abstract state (ShapeDtypeStructs with shardings) puts every array straight onto its
devices.
"""

from __future__ import annotations

import pathlib
import re
import shutil
from collections.abc import Callable
from typing import Any

import grain
import orbax.checkpoint as ocp

from jaxtalk.errors import JaxtalkError

PyTree = Any


class CheckpointError(JaxtalkError):
  """A checkpoint that cannot be used (missing, or made with another model configuration)."""


class DamagedCheckpoint(CheckpointError):
  """A checkpoint whose files cannot be read back (truncated, deleted, corrupt)."""

  def __init__(self, path: pathlib.Path, why: str):
    self.path, self.why = path, why
    super().__init__(f"checkpoint {path} is unreadable: {why}")


_FILE = re.compile(r'local file "([^"]+)"')
_CODE = re.compile(r"^([A-Z][A-Z_]+): ")


def describe_failure(exc: BaseException) -> str:
  """One line saying which file failed and why, from an Orbax / TensorStore exception (whose
  messages run to kilobytes of JSON specs) or any other reading error."""
  text = str(exc)
  files = _FILE.findall(text)
  code = _CODE.match(text)
  if files:
    path = files[-1]
    rest = text[text.rindex(f'local file "{path}"') + len(path) + 13 :]
    detail = rest.split("[tensorstore_spec")[0].strip(" :;\n")
    kind = {"NOT_FOUND": "missing", "OUT_OF_RANGE": "truncated", "DATA_LOSS": "corrupt"}.get(
      code.group(1) if code else "", code.group(1) if code else type(exc).__name__
    )
    return f"{path}: {kind}" + (f" ({detail})" if detail else "")
  first = text.strip().splitlines()[0] if text.strip() else ""
  return f"{type(exc).__name__}: {first[:200]}"


class Checkpoints:
  """The checkpoints of one workdir (see the module docstring)."""

  def __init__(self, workdir: str | pathlib.Path, keep: int, *, async_save: bool = True):
    self.workdir = pathlib.Path(workdir).resolve()
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.manager = ocp.CheckpointManager(
      self.workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max(1, int(keep)), create=True, enable_async_checkpointing=async_save
      ),
      item_names=("state", "data", "meta"),
    )
    self.best = ocp.CheckpointManager(
      self.workdir / "best",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1,
        best_fn=lambda m: float(m["val_loss"]),
        best_mode="min",
        keep_checkpoints_without_metrics=False,
        create=True,
        enable_async_checkpointing=async_save,
      ),
      item_names=("state", "meta"),
    )

  # -- saving -------------------------------------------------------------------------------

  def save(self, step: int, state: PyTree, data_iter: Any, meta: dict) -> bool:
    """Saves (state, iterator position, meta) as checkpoint `step`; False if it exists."""
    if step in self.manager.all_steps():
      return False
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def best_loss(self) -> float | None:
    self.best.wait_until_finished()  # an in-flight save is not listed yet
    step = self.best.best_step()
    if step is None:
      return None
    metrics = self.best.metrics(step)
    return None if metrics is None else float(metrics["val_loss"])

  def save_best(self, step: int, state: PyTree, meta: dict, val_loss: float) -> bool:
    """Keeps `state` as the best checkpoint when val_loss is lower than the best so far."""
    best = self.best_loss()
    if best is not None and not val_loss < best:
      return False
    if step in self.best.all_steps():
      return False
    self.best.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**meta, "val_loss": val_loss})
      ),
      metrics={"val_loss": float(val_loss)},
      force=True,
    )
    return True

  # -- restoring ----------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.workdir / 'checkpoints'}")
    return self._reading(
      self.step_dir(step),
      lambda: self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())),
    )["meta"]

  def restore(
    self, abstract_state: PyTree, data_iter: Any, step: int | None = None
  ) -> tuple[PyTree, dict]:
    """(state, meta) of checkpoint `step` (default: the latest); the iterator is moved to the
    saved position in place."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.workdir / 'checkpoints'}")
    args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self._reading(
      self.step_dir(step), lambda: self.manager.restore(step, args=ocp.args.Composite(**args))
    )
    return out["state"], out["meta"]

  def restore_best(self, abstract_state: PyTree) -> tuple[PyTree, dict]:
    step = self.best.best_step()
    if step is None:
      raise CheckpointError(f"no best checkpoint in {self.workdir / 'best'}")
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
    )
    out = self._reading(
      self.workdir / "best" / str(step), lambda: self.best.restore(step, args=args)
    )
    return out["state"], out["meta"]

  def step_dir(self, step: int) -> pathlib.Path:
    return self.workdir / "checkpoints" / str(step)

  @staticmethod
  def _reading(where: pathlib.Path, read: Callable[[], Any]) -> Any:
    """Runs `read`; any failure but a CheckpointError becomes one DamagedCheckpoint line."""
    try:
      return read()
    except CheckpointError:
      raise
    except Exception as e:  # Orbax / TensorStore / JSON errors of damaged files
      raise DamagedCheckpoint(where, describe_failure(e)) from e

  def restore_newest_readable(
    self,
    abstract_state: PyTree,
    data_iter: Any,
    check: Callable[[dict], None] | None = None,
    say: Callable[[str], None] = print,
  ) -> tuple[PyTree, dict, int] | None:
    """(state, meta, step) of the newest checkpoint that reads back, or None when there is none.

    `check(meta)` runs first (e.g. `check_compatible`); its CheckpointError is not damage and
    propagates. Each damaged checkpoint on the way is reported in one line and moved to
    WORKDIR/damaged/<step>/ (kept for inspection; out of the way of the new saves).
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        meta = self.read_meta(step)
        if check is not None:
          check(meta)
        state, meta = self.restore(abstract_state, data_iter, step)
        return state, meta, step
      except DamagedCheckpoint as e:
        aside = self.set_aside(step)
        say(f"{e}; moved it to {aside} (not deleted); trying the next older checkpoint")
    return None

  def set_aside(self, step: int) -> pathlib.Path:
    """Moves checkpoint `step` to WORKDIR/damaged/<step>[.n]/ and forgets it."""
    self.manager.wait_until_finished()
    dest = self.workdir / "damaged" / str(step)
    n = 1
    while dest.exists():
      dest, n = self.workdir / "damaged" / f"{step}.{n}", n + 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(self.step_dir(step)), str(dest))
    self.manager.reload()
    return dest

  # -- lifetime -----------------------------------------------------------------------------

  def wait(self) -> None:
    """Blocks until every asynchronous save has been written."""
    self.manager.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.manager.close()
    self.best.close()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# Config keys that do not change what a checkpoint holds or how it is used: the holdout split
# decides which frames trained the model, not its shapes or inputs (a model trained by the demo
# with data.holdout=0.2 runs under the plain config).
NOT_COMPARED = {"data": ("holdout",)}
# Keys added to a section after checkpoints were made with it, with the value that means "as
# before": a saved config without the key compares as if it had this value.
ADDED_LATER = {"data": {"crop_shift": 0.0}}


def check_compatible(saved_config: dict, config: dict, sections=("model", "data")) -> None:
  """A checkpoint restores only into the model it was made with: the given config sections
  must match (train.* may change between runs, e.g. more steps; NOT_COMPARED keys may too)."""
  for sec in sections:
    a, b = saved_config.get(sec), config.get(sec)
    if isinstance(a, dict) and isinstance(b, dict):
      a, b = ({**ADDED_LATER.get(sec, {}), **x} for x in (a, b))
    skip = NOT_COMPARED.get(sec, ())
    if isinstance(a, dict) and isinstance(b, dict) and skip:
      a = {k: v for k, v in a.items() if k not in skip}
      b = {k: v for k, v in b.items() if k not in skip}
    if a != b:
      diff = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
      raise CheckpointError(
        f"the checkpoint was made with another {sec} configuration (differs in: "
        f"{', '.join(f'{sec}.{k}' for k in diff)}); use a new --workdir or the same config"
      )
