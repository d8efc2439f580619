"""Train state: model + optimizer created already sharded on the mesh.

The state is handled in the NNX split form: a static `graphdef` and an
`nnx.State` of arrays, which is what `jax.jit` shards, donates and what
orbax saves. `abstract_train_state` gives the same structure as
ShapeDtypeStructs carrying their NamedShardings (for jit and restore).
`params_hash` fingerprints a state's model parameters (the SFT and PARS
stage markers record it).

A self-distillation run with an EMA teacher (``v2.sdft.SDFTConfig.teacher =
"ema"``) carries the teacher as a third object, (model, optimizer, teacher)
(``with_ema_teacher``): the jitted step updates it, orbax saves it with the
rest, so a resumed run goes on with the same teacher. ``merge`` still gives
(model, optimizer), and ``params_hash`` covers the model (the student) only.
A phase that serves a parameter average (``train.param_ema``) keeps the
average in the same third slot.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from onesearch_jax import sharding as sh
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer


@dataclasses.dataclass(frozen=True)
class TrainState:
  """Split (model, optimizer) plus the mesh context that built it."""

  graphdef: Any  # nnx.GraphDef of (EncoderDecoder, nnx.Optimizer[, teacher])
  state: nnx.State  # arrays, sharded per `shardings`
  shardings: Any  # same structure as `state`, NamedSharding leaves
  mesh: jax.sharding.Mesh
  rules: sh.Rules
  # Optimizer updates per loop step (pars.grpo's updates_per_batch): `step`
  # counts loop steps, the optimizer counts updates.
  updates_per_step: int = 1

  def merge(self):
    """(model, optimizer) as live NNX objects (for eval / inspection); an
    EMA teacher is left out (``teacher``)."""
    objs = nnx.merge(self.graphdef, self.state)
    return objs[0], objs[1]

  @property
  def has_teacher(self) -> bool:
    """Whether the state carries an EMA teacher (``with_ema_teacher``)."""
    return TEACHER_KEY in self.state

  def teacher(self) -> EncoderDecoder | None:
    """The EMA teacher as a live model, or None."""
    if not self.has_teacher:
      return None
    return nnx.merge(self.graphdef, self.state)[TEACHER_KEY]

  @property
  def step(self) -> int:
    """Loop step count (host int): the optimizer's update count divided by
    ``updates_per_step``."""
    _, opt = self.merge()
    return int(opt.step[...]) // self.updates_per_step


TEACHER_KEY = 2  # the EMA teacher's key in the state: (model, optimizer, teacher)


def _init_fn(model_cfg: ModelConfig, opt_cfg: OptimizerConfig, seed: int) -> Callable:
  def init():
    model = EncoderDecoder(model_cfg, rngs=nnx.Rngs(params=seed))
    return model, nnx.Optimizer(model, make_optimizer(opt_cfg), wrt=nnx.Param)

  return init


def count_params(cfg: ModelConfig) -> int:
  """The model's parameter count (from shapes only: nothing is allocated)."""
  with jax.set_mesh(sh.single_device_mesh()), nnx.logical_axis_rules(sh.DP_RULES):
    abstract = nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(params=0)))
  return sum(
    int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))
  )


def abstract_train_state(
  model_cfg: ModelConfig,
  opt_cfg: OptimizerConfig,
  mesh: jax.sharding.Mesh,
  rules: sh.Rules,
  seed: int = 0,
):
  """(graphdef, abstract state of ShapeDtypeStructs with shardings, shardings)."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef, abstract = nnx.get_abstract_model(
      _init_fn(model_cfg, opt_cfg, seed), mesh
    )
    shardings = nnx.get_named_sharding(abstract, mesh)
  return graphdef, abstract, shardings


def create_train_state(
  model_cfg: ModelConfig,
  opt_cfg: OptimizerConfig,
  mesh: jax.sharding.Mesh,
  rules: sh.Rules,
  seed: int = 0,
  *,
  initialise: bool = True,
) -> TrainState:
  """Initialises parameters and optimizer state directly in their shardings.

  The init runs under jax.jit with out_shardings from the abstract state, so
  no device ever holds an unsharded copy of a large weight. With
  ``initialise=False`` the state holds ShapeDtypeStructs (with shardings)
  instead: the target of a checkpoint restore, without compiling and running
  the initialiser (~10 s for the main model on CPU without a warm
  compilation cache).
  """
  init = _init_fn(model_cfg, opt_cfg, seed)
  graphdef, abstract, shardings = abstract_train_state(
    model_cfg, opt_cfg, mesh, rules, seed
  )
  if not initialise:
    return TrainState(graphdef, abstract, shardings, mesh, tuple(rules))

  def make_state():
    return nnx.state(init())

  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    state = jax.jit(make_state, out_shardings=shardings)()
  return TrainState(graphdef, state, shardings, mesh, tuple(rules))


def with_state(ts: TrainState, state: nnx.State) -> TrainState:
  """The same TrainState with new arrays."""
  return dataclasses.replace(ts, state=state)


def with_ema_teacher(ts: TrainState) -> TrainState:
  """ts plus an EMA teacher: a copy of its model (own buffers, the model's
  shardings), as the state's third object.

  Args:
    ts: a (model, optimizer) state, concrete or abstract (a restore target).

  Returns:
    The TrainState of (model, optimizer, teacher).
  """
  if ts.has_teacher:
    raise ValueError("with_ema_teacher: the state already has a teacher")
  model, opt = ts.merge()
  graphdef, st = nnx.split((model, opt, nnx.clone(model)))
  # Own buffers: the step donates the state, and a buffer shared by the
  # student and the teacher would be donated twice.
  st[TEACHER_KEY] = jax.tree.map(
    lambda x: x.copy() if isinstance(x, jax.Array) else x, st[TEACHER_KEY]
  )
  shardings = jax.tree.map(lambda x: x.sharding, st)
  return dataclasses.replace(ts, graphdef=graphdef, state=st, shardings=shardings)


def batch_shardings(
  batch: Mapping[str, Any], mesh: jax.sharding.Mesh, rules: sh.Rules
) -> dict[str, jax.sharding.NamedSharding]:
  """Leading (batch) axis split per the BATCH rule, other axes replicated."""
  return {
    k: sh.named_sharding(mesh, (sh.BATCH,) + (None,) * (np.ndim(v) - 1), rules)
    for k, v in batch.items()
  }


def shard_batch(
  batch: Mapping[str, Any], shardings: Mapping[str, jax.sharding.NamedSharding]
) -> dict[str, jax.Array]:
  """Host arrays (this process's slice) -> global jax.Arrays on the mesh.

  On one host the slice is the whole batch; on a pod each process passes
  its rows (seqio ShardInfo(process_index, process_count)).
  """
  return {
    k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
    for k, v in batch.items()
  }


def params_hash(ts: TrainState, *, twin: bool = False) -> str:
  """sha256 over the model parameters (path-sorted, raw bytes); with
  ``twin``, over the third object's (a served parameter average)."""
  model = ts.teacher() if twin else ts.merge()[0]
  if model is None:
    raise ValueError("params_hash(twin=True): the state has no third object")
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  h = hashlib.sha256()
  for path, var in sorted(flat, key=lambda kv: tuple(map(str, kv[0]))):
    arr = np.asarray(multihost_utils.process_allgather(var[...], tiled=True))
    h.update("/".join(map(str, path)).encode())
    h.update(arr.tobytes())
  return h.hexdigest()
