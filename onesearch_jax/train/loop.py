"""The train loop: init or resume, jitted steps, periodic eval and checkpoints.

Resumption contract: one batch per step, so the data position after step s
is s. `batches(position)` must return an iterator starting at that batch
(the data pipeline's deterministic skip), which makes a resumed run see the
same examples as an uninterrupted one. The checkpoint meta also stores the
SID artefact hash; resuming against a different SID artefact is an error.

Failure handling (docs/RELIABILITY.md): a non-finite loss, z-loss or
gradient norm stops the run with NonFiniteMetricsError before that state is
checkpointed (each step's metrics are checked on the host one step late, so
the check does not stall the device, and always before a save); an
unreadable newest checkpoint is skipped for the previous one on resume.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.flops import train_flops_per_batch
from onesearch_jax.model.model import LossConfig
from onesearch_jax.train import checkpoints, state, steps
from onesearch_jax.train.optimizers import OptimizerConfig

Batch = Mapping[str, np.ndarray]
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training stage; the defaults besides num_steps are the main job's
  per-stage SFT loop (``train.sft.SFTConfig.train``)."""

  num_steps: int = 1000  # total optimizer steps of this stage
  log_every: int = 10  # host metrics every N steps
  eval_every: int = 200  # teacher-forced eval every N steps; 0 = never
  seed: int = 0  # parameter init and dropout seed
  loss: LossConfig = LossConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  checkpoint: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(
    save_every_steps=200, keep_last=2
  )
  peak_flops: float = 0.0  # device peak FLOP/s (all devices) for MFU; 0 = skip

  def __post_init__(self):
    if self.num_steps <= 0 or self.log_every <= 0 or self.eval_every < 0:
      raise ValueError("num_steps, log_every must be > 0 and eval_every >= 0")


FINITE_METRICS = ("loss", "z_loss", "grad_norm")  # must stay finite every step


class NonFiniteMetricsError(FloatingPointError):
  """A train step produced a NaN/Inf loss, z-loss or gradient norm."""

  def __init__(self, message: str, step: int, metrics: dict[str, float]):
    super().__init__(message)
    self.step = step  # the optimizer step whose metrics were bad
    self.metrics = metrics  # the non-finite ones


def _check_finite(
  step: int,
  position: int,
  metrics: Mapping[str, Any],
  ckpt: checkpoints.Checkpointer,
  train_cfg: TrainConfig,
) -> None:
  """Raises NonFiniteMetricsError if a FINITE_METRICS value of `step` is not finite.

  Args:
    step: the step (1-based optimizer count after the update) of `metrics`.
    position: data position of the batch that step consumed.
    metrics: the step's device metrics.
    ckpt: the run's checkpointer (for the message).
    train_cfg: the stage config (for the message).
  """
  keys = [k for k in FINITE_METRICS if k in metrics]
  vals = jax.device_get({k: metrics[k] for k in keys})
  bad = {k: float(vals[k]) for k in keys if not np.isfinite(vals[k])}
  if not bad:
    return
  last = ckpt.latest_step()
  where = (
    f"the last checkpoint is step {last} in {ckpt.directory}, and rerunning "
    "resumes from it"
    if last is not None
    else f"there is no checkpoint in {ckpt.directory} yet"
  )
  listed = ", ".join(f"{k}={v}" for k, v in bad.items())
  raise NonFiniteMetricsError(
    f"training stopped at step {step}: non-finite {listed} (from the batch at "
    f"data position {position}). The state after this step was not saved; "
    f"{where}. Hints: lower the learning rate (optimizer.learning_rate = "
    f"{train_cfg.optimizer.learning_rate}), lengthen warmup or keep gradient "
    f"clipping on (clip_norm = {train_cfg.optimizer.clip_norm}); check the data "
    "at that position for huge or NaN/Inf values (features, loss weights).",
    step,
    bad,
  )


def train_config(**overrides: Any) -> TrainConfig:
  """Factory for gin: TrainConfig with keyword overrides."""
  return TrainConfig(**overrides)


@dataclasses.dataclass
class TrainResult:
  """What a run returns: final state and the host-side history."""

  state: state.TrainState
  history: list[dict[str, float]]
  evals: list[dict[str, float]]
  resumed_from: int | None


def _eval(eval_fn, st, eval_batches: Iterable[Batch], bsh) -> dict[str, float]:
  totals: dict[str, float] = {}
  for b in eval_batches:
    sums = steps.metrics_to_host(eval_fn(st, state.shard_batch(b, bsh)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + v
  w = max(totals.get("weight_sum", 0.0), 1.0)
  return {
    "eval_loss": totals.get("loss_sum", 0.0) / w,
    "eval_accuracy": totals.get("correct_sum", 0.0) / w,
    "eval_tokens": totals.get("weight_sum", 0.0),
  }


def _check_sid_hash(meta, sid_hash, where):
  if meta.get("sid_hash", "") != sid_hash:
    raise ValueError(
      f"checkpoint in {where} was trained on SID artefact "
      f"{meta.get('sid_hash')!r}, this run uses {sid_hash!r}"
    )


def _params_from(ts, source: checkpoints.Checkpointer, sid_hash: str):
  """Fresh optimizer (new schedule, step 0) with parameters from `source`."""
  try:  # the stage's final step exactly: no fallback to an older one
    restored, meta = source.restore(ts, step=source.latest_step())
  finally:
    source.close()
  _check_sid_hash(meta, sid_hash, source.directory)
  model, _ = restored.merge()
  _, fresh_opt = ts.merge()
  return state.with_state(ts, nnx.state((model, fresh_opt)))


def train(
  model_cfg: ModelConfig,
  train_cfg: TrainConfig,
  mesh_cfg: sh.MeshConfig,
  batches: Callable[[int], Iterator[Batch]],
  workdir: str | pathlib.Path,
  *,
  eval_batches: Callable[[], Iterable[Batch]] | None = None,
  sid_hash: str = "",
  init_from: str | pathlib.Path | None = None,
  stop_after: int | None = None,
  log_fn: Callable[[int, dict[str, float]], None] | None = None,
  init_params: Callable[[Any], None] | None = None,
) -> TrainResult:
  """Trains one stage, resuming from `workdir`'s latest checkpoint.

  Args:
    model_cfg: the model.
    train_cfg: steps, loss, optimizer, checkpoint cadence.
    mesh_cfg: mesh shape and rules.
    batches: position -> iterator of host batches from that position on
      (this process's rows on a pod).
    workdir: checkpoints go to workdir/checkpoints.
    eval_batches: returns the eval set (a fresh iterable per eval).
    sid_hash: the SID artefact's content hash (stored, checked on resume).
    init_from: a previous stage's checkpoint directory, used when workdir has
      none: its parameters are loaded and the optimizer starts fresh (step 0,
      its own warmup), so stage 1 -> 2 -> 3 each run their own schedule.
    stop_after: stop (with a forced checkpoint) after this many steps of
      this call - simulates preemption in tests.
    log_fn: called with (step, metrics) every log_every steps.
    init_params: edits a freshly initialised model in place (e.g. SID
      embeddings from the codebooks); used only when the run neither
      resumes nor starts from `init_from`.

  Returns:
    TrainResult.
  """
  mesh = sh.make_mesh(mesh_cfg)
  rules = mesh_cfg.logical_rules
  ts = state.create_train_state(
    model_cfg, train_cfg.optimizer, mesh, rules, seed=train_cfg.seed
  )
  ckpt = checkpoints.Checkpointer(
    epath.Path(workdir) / "checkpoints", train_cfg.checkpoint
  )
  resumed_from, position = None, 0
  if ckpt.latest_step() is not None:
    ts, meta = ckpt.restore(ts)
    _check_sid_hash(meta, sid_hash, ckpt.directory)
    resumed_from = ts.step
    position = int(meta.get("data_position", 0))
  elif init_from is not None:
    ts = _params_from(ts, checkpoints.Checkpointer(init_from), sid_hash)
  elif init_params is not None:
    model, opt = ts.merge()
    init_params(model)
    ts = state.with_state(ts, nnx.state((model, opt)))
  start = ts.step
  it = batches(position)
  first = next(it)
  bsh = state.batch_shardings(first, mesh, rules)
  train_fn = steps.compile_train_step(
    ts, bsh, train_cfg.loss, train_cfg.optimizer, seed=train_cfg.seed
  )
  eval_fn = steps.compile_eval_step(ts, bsh, train_cfg.loss) if eval_batches else None
  b, t_len = first["decoder_target_tokens"].shape
  flops = train_flops_per_batch(
    model_cfg, b * jax.process_count(), first["encoder_input_tokens"].shape[1], t_len
  )

  history, evals, st = [], [], ts.state
  t0, last_step, pending = time.perf_counter(), start, first
  step = start
  unchecked = None  # (step, data position, device metrics) not yet checked

  def check():
    nonlocal unchecked
    if unchecked is not None:
      _check_finite(*unchecked, ckpt, train_cfg)
      unchecked = None

  try:
    while step < train_cfg.num_steps:
      batch = pending if pending is not None else next(it, None)
      pending = None
      if batch is None:
        log.warning("data ran out at position %d (step %d)", position, step)
        break
      st, metrics = train_fn(st, state.shard_batch(batch, bsh))
      check()  # the previous step's metrics, while this step runs
      unchecked = (step + 1, position, metrics)
      step += 1
      position += 1
      if step % train_cfg.log_every == 0 or step == train_cfg.num_steps:
        check()
        host = steps.metrics_to_host(metrics)
        dt = time.perf_counter() - t0
        n = step - last_step
        host.update(
          step=step, steps_per_sec=n / dt, tokens_per_sec=host["tokens"] * n / dt
        )
        if train_cfg.peak_flops > 0:
          host["mfu"] = flops * n / dt / train_cfg.peak_flops
        host["eta_sec"] = (train_cfg.num_steps - step) * dt / n
        history.append(host)
        if log_fn:
          log_fn(step, host)
        t0, last_step = time.perf_counter(), step
      if eval_fn and train_cfg.eval_every and step % train_cfg.eval_every == 0:
        check()
        ev = _eval(eval_fn, st, eval_batches(), bsh)
        ev["step"] = step
        evals.append(ev)
        if log_fn:
          log_fn(step, ev)
      stopping = stop_after is not None and step - start >= stop_after
      force = stopping or step == train_cfg.num_steps
      if force or ckpt.should_save(step):
        check()  # never checkpoint a non-finite state
        meta = {"data_position": position, "sid_hash": sid_hash}
        ckpt.save(step, state.with_state(ts, st), meta, force=force)
      if stopping:
        break
    check()
  finally:
    ckpt.close()  # finishes pending async saves of good states
  return TrainResult(state.with_state(ts, st), history, evals, resumed_from)
