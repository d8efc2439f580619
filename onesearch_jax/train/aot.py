"""Ahead-of-time compile check of the train step for a mesh, without weights.

Builds the train state only abstractly (ShapeDtypeStructs carrying their
NamedShardings, `state.abstract_train_state`), lowers the same jitted step
`train.loop` runs (`steps.compile_train_step`) on abstract batch inputs and
compiles it. Nothing of parameter size is allocated, so the base config's
pod layout can be checked on fake CPU devices
(--xla_force_host_platform_device_count) before a TPU slice is booked: the
shardings propagate, every collective is legal, and the per-device bytes of
parameters and optimizer state come out of the shardings.

What it cannot check on CPU: TPU code generation, HBM fit of the TPU
executable (XLA:TPU fuses and schedules differently), and ICI/DCN speed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.model import LossConfig
from onesearch_jax.train import param_ema as param_ema_lib
from onesearch_jax.train import state, steps
from onesearch_jax.train.optimizers import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class AotReport:
  """Result of `compile_train_step_aot`.

  Attributes:
    mesh_shape: {'data': n, 'fsdp': n, 'tensor': n}.
    rules: rule set name or 'custom'.
    num_params: parameter count (global).
    param_bytes_global: bytes of all parameters (unsharded).
    param_bytes_per_device: max over devices of the parameter bytes it holds.
    opt_bytes_per_device: the same for the optimizer state (AdamW mu, nu, count).
    ema_bytes_per_device: the same for the served parameter average
      (``param_ema``: the state's third object, a copy of the model's
      parameters and their shardings); 0 without one.
    batch: global (B, L, T).
    lower_s: seconds spent tracing + lowering.
    compile_s: seconds spent in XLA compilation.
    memory: the compiled executable's per-device memory analysis
      (argument/output/temp bytes) where the backend reports it, else {}.
  """

  mesh_shape: dict[str, int]
  rules: str
  num_params: int
  param_bytes_global: int
  param_bytes_per_device: int
  opt_bytes_per_device: int
  batch: tuple[int, int, int]
  lower_s: float
  compile_s: float
  memory: dict[str, int]
  ema_bytes_per_device: int = 0

  def format(self) -> str:
    mib = 2**20
    mem = ", ".join(f"{k} {v / mib:,.1f} MiB" for k, v in self.memory.items())
    return (
      f"mesh {self.mesh_shape} rules {self.rules}: {self.num_params / 1e6:.1f}M "
      f"params ({self.param_bytes_global / mib:,.1f} MiB); per device: params "
      f"{self.param_bytes_per_device / mib:,.1f} MiB, optimizer "
      f"{self.opt_bytes_per_device / mib:,.1f} MiB"
      + (
        f", parameter average {self.ema_bytes_per_device / mib:,.1f} MiB"
        if self.ema_bytes_per_device
        else ""
      )
      + f"; batch B,L,T={self.batch}; "
      f"lower {self.lower_s:.1f}s compile {self.compile_s:.1f}s"
      + (f"; executable: {mem}" if mem else "")
    )


def per_device_bytes(abstract_tree: Any) -> int:
  """Max over devices of the bytes of the tree's shards on that device.

  Args:
    abstract_tree: leaves are jax.ShapeDtypeStruct (or arrays) with a
      NamedSharding.
  """
  per_device: dict[Any, int] = {}
  for leaf in jax.tree.leaves(abstract_tree):
    sharding = leaf.sharding
    nbytes = math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    for device in sharding.device_set:
      per_device[device] = per_device.get(device, 0) + nbytes
  return max(per_device.values(), default=0)


def abstract_batch(
  model_cfg: ModelConfig,
  batch_size: int,
  enc_len: int,
  dec_len: int,
  mesh: jax.sharding.Mesh,
  rules: sh.Rules,
) -> dict[str, jax.ShapeDtypeStruct]:
  """The batch contract as ShapeDtypeStructs sharded along the batch axes."""
  shapes = {
    "encoder_input_tokens": ((batch_size, enc_len), jnp.int32),
    "decoder_input_tokens": ((batch_size, dec_len), jnp.int32),
    "decoder_target_tokens": ((batch_size, dec_len), jnp.int32),
    "decoder_loss_weights": ((batch_size, dec_len), jnp.float32),
  }
  if model_cfg.use_qformer:
    shapes["long_seq_features"] = (
      (batch_size, model_cfg.num_seq_vectors, model_cfg.seq_feature_dim),
      jnp.float32,
    )
  shardings = state.batch_shardings(
    {k: np.zeros((1,) * len(s)) for k, (s, _) in shapes.items()}, mesh, rules
  )
  return {
    k: jax.ShapeDtypeStruct(s, d, sharding=shardings[k]) for k, (s, d) in shapes.items()
  }


def compile_train_step_aot(
  model_cfg: ModelConfig,
  mesh_cfg: sh.MeshConfig,
  batch_size: int,
  enc_len: int,
  dec_len: int,
  opt_cfg: OptimizerConfig | None = None,
  loss_cfg: LossConfig | None = None,
  devices: list[jax.Device] | None = None,
  param_ema: param_ema_lib.ParamEMAConfig | None = None,
) -> tuple[AotReport, Any]:
  """Lowers and compiles the train step on an abstract state.

  Args:
    model_cfg: e.g. ModelConfig.base().
    mesh_cfg: the pod layout, e.g. MeshConfig(shape=(2, 4, 1), rules='fsdp').
    batch_size: the global batch B (must split over data x fsdp).
    enc_len: L.
    dec_len: T.
    opt_cfg: defaults to OptimizerConfig() (AdamW).
    loss_cfg: defaults to LossConfig().
    devices: defaults to jax.devices() (fake CPU devices in tests).
    param_ema: the step also updates a served parameter average (the main
      job's phase 3, ``train/param_ema.py``): the state carries it as a third
      object and the report counts its bytes.

  Returns:
    (AotReport, the jax.stages.Compiled executable).
  """
  opt_cfg = opt_cfg or OptimizerConfig()
  loss_cfg = loss_cfg or LossConfig()
  mesh = sh.make_mesh(mesh_cfg, devices)
  split = mesh.shape[sh.DATA] * mesh.shape[sh.FSDP]
  if batch_size % split:
    raise ValueError(
      f"batch {batch_size} does not split over data x fsdp = {split} "
      f"(mesh {dict(mesh.shape)})"
    )
  rules = mesh_cfg.logical_rules
  graphdef, abstract, shardings = state.abstract_train_state(
    model_cfg, opt_cfg, mesh, rules
  )
  ts = state.TrainState(graphdef, abstract, shardings, mesh, tuple(rules))
  if param_ema is not None:
    ts = state.with_ema_teacher(ts)
    abstract = ts.state
  batch = abstract_batch(model_cfg, batch_size, enc_len, dec_len, mesh, rules)
  bsh = {k: v.sharding for k, v in batch.items()}
  fn = steps.compile_train_step(ts, bsh, loss_cfg, opt_cfg, param_ema=param_ema)
  t = time.perf_counter()
  lowered = fn.lower(abstract, batch)
  lower_s = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  params = nnx.filter_state(abstract[0], nnx.Param)  # the model's part
  opt_state = abstract[1]  # the nnx.Optimizer's part (mu, nu, counts)
  leaves = jax.tree.leaves(params)
  memory = {}
  analysis = compiled.memory_analysis()
  if analysis is not None:
    for name in (
      "argument_size_in_bytes",
      "output_size_in_bytes",
      "temp_size_in_bytes",
      "generated_code_size_in_bytes",
    ):
      if hasattr(analysis, name):
        memory[name.removesuffix("_size_in_bytes")] = int(getattr(analysis, name))
  report = AotReport(
    mesh_shape=dict(mesh.shape),
    rules="custom" if mesh_cfg.custom_rules else mesh_cfg.rules,
    num_params=sum(math.prod(x.shape) for x in leaves),
    param_bytes_global=sum(
      math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves
    ),
    param_bytes_per_device=per_device_bytes(params),
    opt_bytes_per_device=per_device_bytes(opt_state),
    batch=(batch_size, enc_len, dec_len),
    lower_s=lower_s,
    compile_s=compile_s,
    memory=memory,
    ema_bytes_per_device=(
      per_device_bytes(nnx.filter_state(abstract[state.TEACHER_KEY], nnx.Param))
      if param_ema is not None
      else 0
    ),
  )
  return report, compiled
