"""Multi-host start-up and per-host data -> global arrays.

On a TPU pod slice (or any multi-process launch) every host runs the same
program; `maybe_initialize` must run before the first JAX computation so the
processes find each other (`jax.distributed.initialize`). On one host it does
nothing. `host_batch_to_global` turns the rows this process read (seqio
`ShardInfo(process_index, process_count)`) into global jax.Arrays laid out
by the batch shardings; it is `train.state.shard_batch` plus the checks that
catch a wrong per-host batch size with a message instead of a shape error
deep inside jit.

How a multi-host launch is recognised (first match wins):
1. explicit arguments (coordinator, num_processes, process_id);
2. JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID in the env;
3. ONESEARCH_MULTIHOST=1 (set by experiments/tpu/launch.sh on pod slices):
   jax.distributed.initialize() auto-detects the TPU pod from the metadata;
4. a Cloud TPU pod env (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES with
   more than one host), SLURM_NTASKS > 1 or OMPI_COMM_WORLD_SIZE > 1: JAX's
   own cluster auto-detection fills in the parameters.
Anything else is a single-host run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from onesearch_jax import sharding as sh
from onesearch_jax.train import state as state_lib

logger = logging.getLogger(__name__)

MULTIHOST_ENV = "ONESEARCH_MULTIHOST"


@dataclasses.dataclass(frozen=True)
class Launch:
  """How this process was launched (the result of `detect_launch`).

  Attributes:
    multihost: whether jax.distributed.initialize should run.
    source: what decided it ('arguments', 'JAX_* env', 'ONESEARCH_MULTIHOST',
      'TPU pod env', 'SLURM env', 'Open MPI env', 'single host').
    coordinator: 'host:port' or None (auto-detected by JAX).
    num_processes: or None (auto-detected).
    process_id: or None (auto-detected).
  """

  multihost: bool
  source: str
  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def _int_env(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except ValueError as e:
    raise ValueError(f"environment variable {name}={env[name]!r} is not an int") from e


def _hosts(value: str) -> int:
  return len([h for h in value.split(",") if h.strip()])


def detect_launch(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  env: Mapping[str, str] | None = None,
) -> Launch:
  """Decides whether this is a multi-host launch (see the module docstring).

  Args:
    coordinator: 'host:port' of process 0's coordination service.
    num_processes: total processes.
    process_id: this process's index.
    env: defaults to os.environ.

  Raises:
    ValueError: some but not all explicit arguments are given, or an env
      variable is malformed.
  """
  env = os.environ if env is None else env
  given = [coordinator is not None, num_processes is not None, process_id is not None]
  if any(given):
    if not all(given):
      raise ValueError(
        "maybe_initialize: pass coordinator, num_processes and process_id "
        f"together (got coordinator={coordinator!r}, num_processes="
        f"{num_processes!r}, process_id={process_id!r})"
      )
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id {process_id} not in [0, {num_processes})")
    return Launch(
      num_processes > 1, "arguments", coordinator, num_processes, process_id
    )
  jax_vars = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  if all(v in env for v in jax_vars):
    n = _int_env(env, "JAX_NUM_PROCESSES")
    return Launch(
      n > 1,
      "JAX_* env",
      env["JAX_COORDINATOR_ADDRESS"],
      n,
      _int_env(env, "JAX_PROCESS_ID"),
    )
  if env.get(MULTIHOST_ENV, "") not in ("", "0"):
    return Launch(True, MULTIHOST_ENV)
  for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
    if _hosts(env.get(name, "")) > 1:
      return Launch(True, "TPU pod env")
  if "SLURM_NTASKS" in env and _int_env(env, "SLURM_NTASKS") > 1:
    return Launch(True, "SLURM env")
  if "OMPI_COMM_WORLD_SIZE" in env and _int_env(env, "OMPI_COMM_WORLD_SIZE") > 1:
    return Launch(True, "Open MPI env")
  return Launch(False, "single host")


def maybe_initialize(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  env: Mapping[str, str] | None = None,
  initialize: Callable[..., Any] | None = None,
) -> Launch:
  """Calls jax.distributed.initialize on a multi-host launch, else nothing.

  Call it first thing in main(), before any JAX computation. Calling it
  again after a successful initialisation is a no-op.

  Args:
    coordinator: 'host:port' of process 0 (None: from env / auto-detect).
    num_processes: total processes (None: from env / auto-detect).
    process_id: this process (None: from env / auto-detect).
    env: defaults to os.environ (tests pass a dict).
    initialize: defaults to jax.distributed.initialize (tests pass a fake).

  Returns:
    The Launch that was acted on.
  """
  launch = detect_launch(coordinator, num_processes, process_id, env)
  if not launch.multihost:
    logger.info("distributed: single-host run (%s); not initialising", launch.source)
    return launch
  if initialize is None:
    if jax.distributed.is_initialized():
      logger.info("distributed: already initialised")
      return launch
    initialize = jax.distributed.initialize
  logger.info(
    "distributed: multi-host launch (%s); jax.distributed.initialize("
    "coordinator=%s, num_processes=%s, process_id=%s)",
    launch.source,
    launch.coordinator or "auto",
    launch.num_processes if launch.num_processes is not None else "auto",
    launch.process_id if launch.process_id is not None else "auto",
  )
  initialize(
    coordinator_address=launch.coordinator,
    num_processes=launch.num_processes,
    process_id=launch.process_id,
  )
  logger.info(
    "distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return launch


def batch_axis_size(sharding: jax.sharding.NamedSharding) -> int:
  """How many ways the sharding splits an array's leading (batch) axis."""
  spec = sharding.spec
  first = spec[0] if len(spec) else None
  if first is None:
    return 1
  axes = first if isinstance(first, tuple) else (first,)
  return math.prod(sharding.mesh.shape[a] for a in axes)


def per_host_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """Rows each process reads for a global batch (checks divisibility).

  Raises:
    ValueError: the global batch does not split evenly over the processes or
      over the mesh's batch axes (data x fsdp).
  """
  split = mesh.shape[sh.DATA] * mesh.shape[sh.FSDP]
  n_proc = jax.process_count()
  if global_batch_size % split or global_batch_size % n_proc:
    raise ValueError(
      f"global batch {global_batch_size} must be divisible by the batch mesh "
      f"axes (data x fsdp = {split}) and the process count {n_proc}"
    )
  return global_batch_size // n_proc


def host_batch_to_global(
  host_batch: Mapping[str, Any],
  mesh: jax.sharding.Mesh,
  shardings: Mapping[str, jax.sharding.NamedSharding] | None = None,
  rules: sh.Rules | None = None,
) -> dict[str, jax.Array]:
  """This process's rows -> global jax.Arrays (process_count x rows each).

  Args:
    host_batch: name -> [rows, ...] host array (this process's slice; on one
      host, the whole batch).
    mesh: the training mesh.
    shardings: name -> NamedSharding on `mesh` (state.batch_shardings);
      None builds them from `rules` (default: the dp rules).
    rules: used only when `shardings` is None.

  Returns:
    name -> global jax.Array of shape [rows * process_count, ...].

  Raises:
    ValueError: a key without a sharding, a sharding on another mesh, rows
      that differ between features, or rows that do not split over this
      process's devices along the batch axes.
  """
  if shardings is None:
    shardings = state_lib.batch_shardings(
      host_batch, mesh, rules if rules is not None else sh.DP_RULES
    )
  missing = sorted(set(host_batch) - set(shardings))
  if missing:
    raise ValueError(f"host_batch_to_global: no sharding for {missing}")
  rows = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in host_batch.items()}
  if len(set(rows.values())) > 1:
    raise ValueError(f"host_batch_to_global: features disagree on rows: {rows}")
  n_proc = jax.process_count()
  for key, s in shardings.items():
    if key not in host_batch:
      continue
    if s.mesh.shape != mesh.shape or s.mesh.axis_names != mesh.axis_names:
      raise ValueError(f"host_batch_to_global: sharding of {key!r} is on another mesh")
    ways = batch_axis_size(s)
    if rows[key] is None:
      raise ValueError(f"host_batch_to_global: {key!r} is a scalar, not [rows, ...]")
    global_rows = rows[key] * n_proc
    if global_rows % ways:
      raise ValueError(
        f"host_batch_to_global: {key!r} has {rows[key]} rows per host x "
        f"{n_proc} processes = {global_rows}, not divisible by the {ways}-way "
        "batch split (data x fsdp)"
      )
  return state_lib.shard_batch(host_batch, shardings)
