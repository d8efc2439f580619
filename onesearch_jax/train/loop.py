"""The SFT train loop: one phase's init, jitted step, eval and checkpoints.

A thin wrapper over the loop core (train/step_loop.py: resume, progress
records, checkpoint cadence, the NaN guard, an unreadable newest checkpoint
skipped). This module adds what is SFT's own: a fresh state or one started
from a previous phase (`init_from`) or edited by `init_params`, the jitted
SFT step, teacher-forced eval, the timing fields of a log record
(steps_per_sec, tokens_per_sec, mfu, eta_sec), and the SID artefact hash in
the checkpoint meta (resuming against a different SID artefact is an
error). Resumption contract: `batches(position)` restarts the stream at
that batch (step_loop's module docstring).
"""

from __future__ import annotations

import dataclasses
import pathlib
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
from onesearch_jax.train import checkpoints, state, step_loop, steps
from onesearch_jax.train import param_ema as param_ema_lib
from onesearch_jax.train.optimizers import OptimizerConfig
from onesearch_jax.v2 import sdft_batches
from onesearch_jax.v2.sdft import SDFTConfig

Batch = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training phase; the defaults besides num_steps are the main job's
  per-phase SFT loop (``train.sft_config.SFTConfig.train``)."""

  num_steps: int = 1000  # total optimizer steps of this phase
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


# The NaN guard lives in the loop core; the names stay importable from here.
FINITE_METRICS = step_loop.FINITE_METRICS
NonFiniteMetricsError = step_loop.NonFiniteMetricsError


def train_config(**overrides: Any) -> TrainConfig:
  """Factory for gin: TrainConfig with keyword overrides."""
  return TrainConfig(**overrides)


TrainResult = step_loop.LoopResult  # state, history, evals, resumed_from, ...


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
  try:  # the phase's final step exactly: no fallback to an older one
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
  sdft: SDFTConfig | None = None,
  param_ema: param_ema_lib.ParamEMAConfig | None = None,
) -> TrainResult:
  """Trains one phase, resuming from `workdir`'s latest checkpoint.

  Args:
    model_cfg: the model.
    train_cfg: steps, loss, optimizer, checkpoint cadence.
    mesh_cfg: mesh shape and rules.
    batches: position -> iterator of host batches from that position on
      (this process's rows on a pod).
    workdir: checkpoints go to workdir/checkpoints.
    eval_batches: returns the eval set (a fresh iterable per eval).
    sid_hash: the SID artefact's content hash (stored, checked on resume).
    init_from: a previous phase's checkpoint directory, used when workdir has
      none: its parameters are loaded and the optimizer starts fresh (step 0,
      its own warmup), so phase 1 -> 2 -> 3 each run their own schedule.
    stop_after: stop (with a forced checkpoint) after this many steps of
      this call - simulates preemption in tests.
    log_fn: called with (step, metrics) every log_every steps.
    init_params: edits a freshly initialised model in place (e.g. SID
      embeddings from the codebooks); used only when the run neither
      resumes nor starts from `init_from`.
    sdft: self-distillation: `batches` gives paired batches
      (``v2/sdft_batches.py``) and the step minimises L_SDFT
      (``steps.compile_train_step``); the eval batches stay plain. With
      ``teacher = "ema"`` the state carries an EMA teacher, a copy of the
      phase's starting parameters, checkpointed with the rest (the returned
      state has it too: ``TrainState.teacher``).
    param_ema: keep and serve a parameter average (``train.param_ema``): the
      state's third object, checkpointed, with ``"serve": "ema"`` in every
      checkpoint's meta (restores without the third object get the average).

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
  if ckpt.latest_step() is None:  # else step_loop.run resumes
    if init_from is not None:
      ts = _params_from(ts, checkpoints.Checkpointer(init_from), sid_hash)
    elif init_params is not None:
      model, opt = ts.merge()
      init_params(model)
      ts = state.with_state(ts, nnx.state((model, opt)))
  if sdft is not None and sdft.teacher == "ema":
    # The teacher starts as the phase's starting student (on resume the
    # checkpoint's teacher replaces it).
    ts = state.with_ema_teacher(ts)
  meta = {"sid_hash": sid_hash}
  if param_ema is not None:
    # Starts as the phase's starting parameters (on resume the checkpoint's
    # average replaces it).
    ts = state.with_ema_teacher(ts)
    meta[param_ema_lib.SERVE_META_KEY] = param_ema_lib.SERVE_EMA

  def build(ts: state.TrainState, first: Batch) -> step_loop.Steps:
    bsh = state.batch_shardings(first, mesh, rules)
    train_fn = steps.compile_train_step(
      ts,
      bsh,
      train_cfg.loss,
      train_cfg.optimizer,
      seed=train_cfg.seed,
      sdft=sdft,
      param_ema=param_ema,
    )
    b, t_len = first["decoder_target_tokens"].shape
    flops = train_flops_per_batch(
      model_cfg, b * jax.process_count(), first["encoder_input_tokens"].shape[1], t_len
    )

    def annotate(host: dict[str, float], p: step_loop.Progress) -> None:
      host.update(
        steps_per_sec=p.steps / p.seconds,
        tokens_per_sec=host["tokens"] * p.steps / p.seconds,
      )
      if train_cfg.peak_flops > 0:
        host["mfu"] = flops * p.steps / p.seconds / train_cfg.peak_flops
      host["eta_sec"] = (p.num_steps - p.step) * p.seconds / p.steps

    evaluate = None
    if eval_batches:
      # The eval batches are plain model batches (no teacher features).
      ebsh = {k: v for k, v in bsh.items() if k not in sdft_batches.TEACHER_FEATURES}
      eval_fn = steps.compile_eval_step(ts, ebsh, train_cfg.loss)

      def evaluate(st):
        return _eval(eval_fn, st, eval_batches(), ebsh)

    return step_loop.Steps(
      train=lambda st, batch: train_fn(st, state.shard_batch(batch, bsh)),
      evaluate=evaluate,
      annotate=annotate,
    )

  return step_loop.run(
    ts,
    build,
    batches,
    step_loop.LoopConfig.of(train_cfg, stop_after),
    ckpt=ckpt,
    meta=meta,
    check_meta=lambda meta: _check_sid_hash(meta, sid_hash, ckpt.directory),
    log_fn=log_fn,
  )
