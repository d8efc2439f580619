"""The one training loop core: resume, jitted steps, logging, checkpoints, NaN guard.

SFT (`train.loop.train`), the PARS phases (`pars.listwise.train_phase`) and
the reward model (`pars.reward_training.train_reward_model`) are thin wrappers
that build their step function and call `run`; the shape follows
t5x/nanodo: a compiled step `(state, batch) -> (state, metrics)`, a
`batches(position)` stream, a checkpointer and a small LoopConfig.

Resumption contract: one batch per step, so the data position after step s
is s. `batches(position)` must return an iterator starting at that batch
(the data pipeline's deterministic skip), which makes a resumed run see the
same examples as an uninterrupted one. `run` restores the checkpointer's
newest readable checkpoint (an unreadable newest one is skipped for the
previous one, see checkpoints.Checkpointer.restore) and reads the position
from its meta (`data_position`).

NaN guard (docs/RELIABILITY.md): a non-finite FINITE_METRICS value stops the
run with NonFiniteMetricsError before that state is checkpointed. Each
step's metrics are checked on the host one step late, so the check does not
stall the device, and always before a log line, an eval, a save and the
return.

Not here: the khqe text encoder (khqe/ sits below train/ and may not import
it) and the MCA baseline's ranker (eval/ never imports train/; it is one
jitted lax.scan over full-batch steps). Neither resumes or checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from onesearch_jax.train import checkpoints
from onesearch_jax.train.optimizers import OptimizerConfig
from onesearch_jax.train.state import TrainState, with_state

Batch = Mapping[str, np.ndarray]
Metrics = Mapping[str, jax.Array]
StepFn = Callable[[nnx.State, Batch], tuple[nnx.State, Metrics]]
LogFn = Callable[[int, dict[str, float]], None]
logger = logging.getLogger(__name__)

FINITE_METRICS = ("loss", "z_loss", "grad_norm")  # must stay finite every step


class NonFiniteMetricsError(FloatingPointError):
  """A train step produced a NaN/Inf loss, z-loss or gradient norm."""

  def __init__(self, message: str, step: int, metrics: dict[str, float]):
    super().__init__(message)
    self.step = step  # the optimizer step whose metrics were bad
    self.metrics = metrics  # the non-finite ones


def optimizer_hints(opt: OptimizerConfig) -> str:
  """The NonFiniteMetricsError hints of a run with an OptimizerConfig."""
  return (
    f"Hints: lower the learning rate (optimizer.learning_rate = "
    f"{opt.learning_rate}), lengthen warmup or keep gradient clipping on "
    f"(clip_norm = {opt.clip_norm}); check the data at that position for huge or "
    "NaN/Inf values (features, loss weights)."
  )


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """What the core needs besides the step; checkpoint cadence is the
  checkpointer's (checkpoints.CheckpointConfig)."""

  num_steps: int  # total optimizer steps (a resumed run continues to it)
  log_every: int  # host metrics (history + log_fn) every N steps and at the end
  eval_every: int = 0  # Steps.evaluate every N steps; 0 = never
  stop_after: int | None = None  # stop (forced save) after N steps of this call
  hints: str = ""  # appended to the NonFiniteMetricsError message

  def __post_init__(self):
    if self.num_steps <= 0 or self.log_every <= 0 or self.eval_every < 0:
      raise ValueError("num_steps, log_every must be > 0 and eval_every >= 0")

  @classmethod
  def of(cls, train_cfg: Any, stop_after: int | None = None) -> LoopConfig:
    """From a run config with num_steps, log_every, optimizer and optionally
    eval_every (train.loop.TrainConfig, pars.listwise.ListwiseTrainConfig)."""
    return cls(
      num_steps=train_cfg.num_steps,
      log_every=train_cfg.log_every,
      eval_every=getattr(train_cfg, "eval_every", 0),
      stop_after=stop_after,
      hints=optimizer_hints(train_cfg.optimizer),
    )


@dataclasses.dataclass(frozen=True)
class Progress:
  """Timing of a log step, for Steps.annotate."""

  step: int  # the step just logged
  num_steps: int  # LoopConfig.num_steps
  steps: int  # steps since the previous log line (or the loop start)
  seconds: float  # wall seconds of those steps
  total_seconds: float  # wall seconds since the loop started (this call)


@dataclasses.dataclass(frozen=True)
class Steps:
  """The functions of a run, built from its first batch (`build`).

  Attributes:
    train: (state, host batch) -> (state, device metrics); shards the batch
      and runs the jitted step (the state may be donated).
    evaluate: state -> host metrics, every LoopConfig.eval_every steps.
    annotate: (host metrics, Progress) -> None; adds timing fields to a log
      record in place (after 'step').
  """

  train: StepFn
  evaluate: Callable[[nnx.State], dict[str, float]] | None = None
  annotate: Callable[[dict[str, float], Progress], None] | None = None


@dataclasses.dataclass
class LoopResult:
  """The final state and the host-side history of one call."""

  state: TrainState
  history: list[dict[str, float]]  # log records: metrics + 'step' (+ annotate's)
  evals: list[dict[str, float]]  # Steps.evaluate records + 'step'
  resumed_from: int | None  # the restored step, None for a fresh start
  steps_run: int  # steps of this call


def _check_finite(
  step: int,
  position: int,
  metrics: Metrics,
  ckpt: checkpoints.Checkpointer | None,
  hints: str,
) -> None:
  """Raises NonFiniteMetricsError if a FINITE_METRICS value of `step` is not finite.

  Args:
    step: the step (1-based optimizer count after the update) of `metrics`.
    position: data position of the batch that step consumed.
    metrics: the step's device metrics.
    ckpt: the run's checkpointer (for the message), or None.
    hints: appended to the message.
  """
  keys = [k for k in FINITE_METRICS if k in metrics]
  vals = jax.device_get({k: metrics[k] for k in keys})
  bad = {k: float(vals[k]) for k in keys if not np.isfinite(vals[k])}
  if not bad:
    return
  if ckpt is None:
    where = "this run writes no checkpoints"
  elif (last := ckpt.latest_step()) is not None:
    where = (
      f"the last checkpoint is step {last} in {ckpt.directory}, and rerunning "
      "resumes from it"
    )
  else:
    where = f"there is no checkpoint in {ckpt.directory} yet"
  listed = ", ".join(f"{k}={v}" for k, v in bad.items())
  raise NonFiniteMetricsError(
    f"training stopped at step {step}: non-finite {listed} (from the batch at "
    f"data position {position}). The state after this step was not saved; "
    f"{where}. {hints}".rstrip(),
    step,
    bad,
  )


def run(
  ts: TrainState,
  build: Callable[[TrainState, Batch], Steps],
  batches: Callable[[int], Iterator[Batch]],
  cfg: LoopConfig,
  *,
  ckpt: checkpoints.Checkpointer | None = None,
  meta: Mapping[str, Any] | None = None,
  check_meta: Callable[[dict[str, Any]], None] | None = None,
  log_fn: LogFn | None = None,
) -> LoopResult:
  """Runs steps to cfg.num_steps, resuming from `ckpt`'s newest checkpoint.

  Args:
    ts: the starting state (used as it is when `ckpt` has no checkpoint;
      otherwise only its structure and shardings, as the restore target).
    build: (state, first batch) -> Steps; called once, after the resume,
      with the first batch of the stream (for batch shardings and shapes).
    batches: position -> iterator of host batches from that position on.
    cfg: steps, log / eval cadence, stop_after, NaN hints.
    ckpt: checkpointer (its cadence, plus a forced save at the last step and
      at stop_after); None = neither resume nor save. Closed on return.
    meta: JSON meta saved with every checkpoint, plus 'data_position'.
    check_meta: called with a restored checkpoint's meta (raise to refuse).
    log_fn: called with (step, record) at every log and eval record.

  Returns:
    LoopResult (history and evals of this call only).

  Raises:
    NonFiniteMetricsError: a step's FINITE_METRICS were NaN/Inf.
  """
  resumed_from, position = None, 0
  try:
    if ckpt is not None and ckpt.latest_step() is not None:
      ts, saved = ckpt.restore(ts)
      if check_meta is not None:
        check_meta(saved)
      resumed_from = ts.step
      position = int(saved.get("data_position", 0))
    start = ts.step
    it = batches(position)
    first = next(it, None)
    if first is None or start >= cfg.num_steps:
      if first is None:
        logger.warning("no data at position %d (step %d)", position, start)
      return LoopResult(ts, [], [], resumed_from, 0)
    fns = build(ts, first)
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    st, step, pending = ts.state, start, first
    unchecked = None  # (step, data position, device metrics) not yet checked

    def check():
      nonlocal unchecked
      if unchecked is not None:
        _check_finite(*unchecked, ckpt, cfg.hints)
        unchecked = None

    t_start = t_log = time.perf_counter()
    last_log = start
    while step < cfg.num_steps:
      batch = pending if pending is not None else next(it, None)
      pending = None
      if batch is None:
        logger.warning("data ran out at position %d (step %d)", position, step)
        break
      st, metrics = fns.train(st, batch)
      check()  # the previous step's metrics, while this step runs
      unchecked = (step + 1, position, metrics)
      step += 1
      position += 1
      if step % cfg.log_every == 0 or step == cfg.num_steps:
        check()
        host = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
        host["step"] = step
        if fns.annotate is not None:
          now = time.perf_counter()
          fns.annotate(
            host,
            Progress(step, cfg.num_steps, step - last_log, now - t_log, now - t_start),
          )
        history.append(host)
        if log_fn:
          log_fn(step, host)
        t_log, last_log = time.perf_counter(), step
      if fns.evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0:
        check()
        ev = fns.evaluate(st)
        ev["step"] = step
        evals.append(ev)
        if log_fn:
          log_fn(step, ev)
      stopping = cfg.stop_after is not None and step - start >= cfg.stop_after
      force = stopping or step == cfg.num_steps
      if ckpt is not None and (force or ckpt.should_save(step)):
        check()  # never checkpoint a non-finite state
        saved_meta = dict(meta or {}, data_position=position)
        ckpt.save(step, with_state(ts, st), saved_meta, force=force)
      if stopping:
        break
    check()
  finally:
    if ckpt is not None:
      ckpt.close()  # finishes pending async saves of good states
  return LoopResult(with_state(ts, st), history, evals, resumed_from, step - start)
