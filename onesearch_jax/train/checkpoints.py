"""Orbax checkpoints of the train state: save, keep-last-k, restore sharded.

The state is saved as the pure-dict form of the split NNX state
(`nnx.to_pure_dict`) next to a small JSON `meta` item (the data position, the
SID artefact hash, anything the loop needs to resume exactly). Restore reads
straight into the abstract sharded state, so every array lands on the mesh
in its training sharding without a host copy of the whole model.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from onesearch_jax.train.state import TrainState, with_state


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

  def restore(
    self, ts: TrainState, step: int | None = None
  ) -> tuple[TrainState, dict[str, Any]]:
    """Restores `step` (default latest) into ts's shardings.

    Args:
      ts: a TrainState whose structure and shardings the checkpoint fills
        (e.g. fresh from create_train_state, or abstract: only the structure,
        dtypes and shardings of ts.state are used).
      step: the step to restore.

    Returns:
      (the restored TrainState, the meta dict saved with it).

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    target = nnx.to_pure_dict(ts.state)
    abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      target,
      nnx.to_pure_dict(ts.shardings),
    )
    out = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    new_state = jax.tree.map(lambda x: x, ts.state)  # structure copy
    nnx.replace_by_pure_dict(new_state, out["state"])
    return with_state(ts, new_state), dict(out["meta"] or {})

  def close(self) -> None:
    self.wait()
    self._manager.close()
