"""Orbax checkpoints of the train state: save, keep-last-k, restore sharded.

The state is saved as the pure-dict form of the split NNX state
(`nnx.to_pure_dict`) next to a small JSON `meta` item (the data position, the
SID artefact hash, anything the loop needs to resume exactly). Restore reads
straight into the abstract sharded state, so every array lands on the mesh
in its training sharding without a host copy of the whole model.

Crash safety: orbax writes a step into `<step>.orbax-checkpoint-tmp-<t>` and
renames it to `<step>` when complete (on GCS, where there is no atomic
rename, it writes `commit_success.txt` last instead); unfinished steps are
never listed, so a kill during an async save cannot leave a half-written
"latest". A step that is complete on the listing but unreadable later
(truncated or deleted files) is skipped by `restore` with a warning, and the
previous step is used; see docs/RELIABILITY.md.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from onesearch_jax.train import param_ema
from onesearch_jax.train.state import TEACHER_KEY, TrainState, with_state

logger = logging.getLogger(__name__)


class CheckpointCorruptError(RuntimeError):
  """No saved step of a directory could be restored."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Checkpoint cadence and retention."""

  save_every_steps: int = 1000  # save when step % this == 0
  keep_last: int = 3  # older checkpoints are deleted
  async_save: bool = True  # write in a background thread

  def __post_init__(self):
    if self.save_every_steps <= 0 or self.keep_last <= 0:
      raise ValueError("save_every_steps and keep_last must be > 0")


def resolve_directory(directory: str | pathlib.Path) -> epath.Path:
  """An absolute local path, or a remote one (gs://...) kept as it is.

  epath keeps gs:// (and other remote) paths intact; pathlib would turn
  gs://b/x into the local directory gs:/b/x and lose checkpoints on
  preemption.
  """
  path = epath.Path(directory)
  return path if "://" in str(directory) else path.absolute()


class Checkpointer:
  """A thin wrapper over ocp.CheckpointManager for TrainState.

  Every process must call `save` (it is a collective); orbax writes once.
  """

  def __init__(
    self, directory: str | pathlib.Path, cfg: CheckpointConfig | None = None
  ):
    cfg = cfg or CheckpointConfig()
    self.cfg = cfg
    self.directory = resolve_directory(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=cfg.keep_last,
      save_interval_steps=cfg.save_every_steps,
      enable_async_checkpointing=cfg.async_save,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "meta")
    )

  def latest_step(self) -> int | None:
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(
    self,
    step: int,
    ts: TrainState,
    meta: dict[str, Any] | None = None,
    *,
    force: bool = False,
  ) -> bool:
    """Saves if `step` is on the cadence (or force). Returns whether it saved."""
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(nnx.to_pure_dict(ts.state)),
      meta=ocp.args.JsonSave(dict(meta or {})),
    )
    return self._manager.save(step, args=args, force=force)

  def wait(self) -> None:
    """Blocks until async saves are on disk."""
    self._manager.wait_until_finished()

  def should_save(self, step: int) -> bool:
    """Whether an unforced `save(step)` would write (the cadence)."""
    return self._manager.should_save(step)

  def step_directory(self, step: int) -> epath.Path:
    """Where `step` is stored."""
    return self.directory / str(step)

  def restore(
    self, ts: TrainState, step: int | None = None
  ) -> tuple[TrainState, dict[str, Any]]:
    """Restores `step` (default: the newest readable step) into ts's shardings.

    With `step=None`, a newest step that fails to restore (truncated or
    missing files, bad JSON) is skipped with a warning naming its directory
    and the next older one is tried. Once an older step restores, the
    unreadable newer ones are moved to `<directory>_corrupt/` (so training
    can save those steps again) - never deleted. If no step restores,
    nothing is moved (the cause may be a model/config mismatch, not
    corruption) and CheckpointCorruptError lists every step's error.

    Args:
      ts: a TrainState whose structure and shardings the checkpoint fills
        (e.g. fresh from create_train_state, or abstract: only the structure,
        dtypes and shardings of ts.state are used).
      step: the step to restore; an explicit step is not replaced by another.

    Returns:
      (the restored TrainState, the meta dict saved with it).

    Raises:
      FileNotFoundError: no checkpoint in the directory.
      CheckpointCorruptError: no step (or the explicit `step`) restores.
    """
    steps = sorted(self.all_steps(), reverse=True) if step is None else [step]
    if not steps:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    failed: list[tuple[int, Exception]] = []
    for s in steps:
      try:
        out = self._restore_step(ts, s)
      except Exception as e:  # noqa: BLE001 - any read failure means "unreadable"
        logger.warning(
          "checkpoint %s is unreadable (%s: %s); trying the previous step",
          self.step_directory(s),
          type(e).__name__,
          _first_line(e),
        )
        failed.append((s, e))
        continue
      for bad, _ in failed:
        self._quarantine(bad)
      return out
    detail = "; ".join(
      f"{self.step_directory(s)}: {type(e).__name__}: {_first_line(e)}"
      for s, e in failed
    )
    raise CheckpointCorruptError(
      f"no checkpoint under {self.directory} could be restored ({detail}). "
      "If the model or optimizer config changed, use a new workdir; if the "
      "files are damaged, move the directory away to start over."
    ) from failed[0][1]

  def _saved_keys(self, step: int) -> set[str]:
    """The top-level keys of `step`'s saved state ("0", "1"[, "2"])."""
    saved = ocp.StandardCheckpointHandler().metadata(
      self.step_directory(step) / "state"
    )
    return {str(k) for k in saved.keys()}

  def _restore_step(self, ts: TrainState, step: int):
    target = nnx.to_pure_dict(ts.state)
    abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      target,
      nnx.to_pure_dict(ts.shardings),
    )
    # An EMA teacher or a served parameter average (state.with_ema_teacher) is
    # the model's twin: a target without one (eval, serving, the next stage)
    # reads it and drops it - or, for a served average, takes it as the model;
    # a target with one needs it in the checkpoint.
    has_teacher = str(TEACHER_KEY) in self._saved_keys(step)
    if has_teacher and TEACHER_KEY not in abstract:
      abstract = {**abstract, TEACHER_KEY: abstract[0]}
    elif TEACHER_KEY in abstract and not has_teacher:
      raise ValueError(
        f"{self.step_directory(step)} holds no EMA teacher or parameter average: "
        "it was saved by a run without SDFTConfig.teacher = 'ema' and without "
        "SFTConfig.param_ema (use a new workdir, or the run's own settings)"
      )
    out = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    meta = out["meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"meta item is {type(meta).__name__}, expected a JSON object")
    restored = dict(out["state"])
    if TEACHER_KEY not in target:
      twin = restored.pop(TEACHER_KEY, None)
      twin = restored.pop(str(TEACHER_KEY), twin)
      if meta.get(param_ema.SERVE_META_KEY) == param_ema.SERVE_EMA:
        # A phase that serves its parameter average (train.param_ema): eval,
        # serving and the next phase or stage read the average as the model.
        key = 0 if 0 in restored else "0"
        restored[key] = twin
    new_state = jax.tree.map(lambda x: x, ts.state)  # structure copy
    nnx.replace_by_pure_dict(new_state, restored)
    return with_state(ts, new_state), dict(meta)

  def _quarantine(self, step: int) -> None:
    """Moves an unreadable step out of the managed directory (process 0)."""
    src = self.step_directory(step)
    dst_dir = self.directory.parent / f"{self.directory.name}_corrupt"
    dst = dst_dir / f"{step}-{int(time.time())}"
    if jax.process_index() == 0 and src.exists():
      try:
        dst_dir.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
      except Exception as e:
        raise CheckpointCorruptError(
          f"checkpoint {src} is unreadable and could not be moved to {dst} "
          f"({type(e).__name__}: {_first_line(e)}); move or delete it by hand "
          "and rerun (training would otherwise fail to save that step again)"
        ) from e
      logger.warning("moved unreadable checkpoint %s to %s", src, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    self._manager.reload()

  def close(self) -> None:
    self.wait()
    self._manager.close()


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:300] if text else ""
