"""Pure train / eval steps and their jit wiring with shardings.

`train_step` and `eval_step` operate on live NNX objects (NNX in-place
update style) and do no I/O. `compile_train_step` / `compile_eval_step`
wrap them in the graphdef/state pattern: a function of (state, batch) that
merges, runs the step and splits again, compiled once with
`jax.jit(in_shardings=, out_shardings=, donate_argnames=)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import model as model_lib
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train import param_ema as param_ema_lib
from onesearch_jax.train.optimizers import OptimizerConfig, make_schedule
from onesearch_jax.train.state import TEACHER_KEY, TrainState
from onesearch_jax.v2 import sdft as sdft_lib
from onesearch_jax.v2 import sdft_batches
from onesearch_jax.v2.sdft import SDFTConfig


def train_step(
  model: EncoderDecoder,
  optimizer: nnx.Optimizer,
  batch: Mapping[str, jax.Array],
  key: jax.Array | None,
  loss_cfg: model_lib.LossConfig,
) -> dict[str, jax.Array]:
  """One optimizer update; mutates model and optimizer in place.

  Args:
    model: the encoder-decoder.
    optimizer: nnx.Optimizer over the model's nnx.Param.
    batch: the batch contract of model.model.
    key: dropout key (None: deterministic).
    loss_cfg: label smoothing and z-loss.

  Returns:
    Scalar metrics: loss (mean per weighted token), z_loss, accuracy,
    grad_norm, tokens (weight sum), sid_level_violations.
  """

  def objective(m):
    return model_lib.loss_fn(m, batch, loss_cfg, key)

  (loss, sums), grads = nnx.value_and_grad(objective, has_aux=True)(model)
  optimizer.update(model, grads)
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  return {
    "loss": loss,
    "z_loss": sums["z_loss_sum"] / denom,
    "accuracy": sums["correct_sum"] / denom,
    "grad_norm": optax.global_norm(grads),
    "tokens": sums["weight_sum"],
    "sid_level_violations": sums["sid_level_violations"],
  }


def eval_step(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  loss_cfg: model_lib.LossConfig,
) -> dict[str, jax.Array]:
  """Teacher-forced metric sums (loss_sum, correct_sum, weight_sum, ...).

  Sums, not means, so the host can add them over batches and hosts.
  """
  return model_lib.metric_sums(model, batch, loss_cfg, None)


class CompiledStep:
  """A jitted step that runs under its mesh and logical-axis rules."""

  def __init__(self, fn: Callable, mesh: jax.sharding.Mesh, rules: sh.Rules):
    self._fn = fn
    self._mesh = mesh
    self._rules = rules

  def __call__(self, *args):
    with jax.set_mesh(self._mesh), nnx.logical_axis_rules(self._rules):
      return self._fn(*args)

  def lower(self, *args):
    """AOT lowering (e.g. `.lower(abstract_state, abstract_batch).compile()`)."""
    with jax.set_mesh(self._mesh), nnx.logical_axis_rules(self._rules):
      return self._fn.lower(*args)


def compile_train_step(
  ts: TrainState,
  batch_shardings: Mapping[str, jax.sharding.NamedSharding],
  loss_cfg: model_lib.LossConfig,
  opt_cfg: OptimizerConfig | None = None,
  seed: int = 0,
  sdft: SDFTConfig | None = None,
  param_ema: param_ema_lib.ParamEMAConfig | None = None,
) -> CompiledStep:
  """jit(train) over (state, batch) -> (state, metrics), state donated.

  The dropout key is fold_in(key(seed), optimizer step), so a resumed run
  draws the same dropout masks as an uninterrupted one.

  Args:
    ts: the train state (its graphdef, shardings, mesh and rules are used).
    batch_shardings: from state.batch_shardings.
    loss_cfg: loss options.
    opt_cfg: when given, the metrics include the step's learning rate.
    seed: dropout seed.
    sdft: self-distillation (OneSearch-V2): the batches are paired batches
      (``v2/sdft_batches.py``) and the step is ``v2.sdft.sdft_train_step``
      (``teacher = "joint"``: one network is teacher and student; "ema":
      ts carries the EMA teacher, ``state.with_ema_teacher``, which the step
      moves towards the updated student); its metrics add base, kl, rdrop,
      adv and teacher_ce. None = ``train_step``.
    param_ema: ts carries the parameter average (``train.param_ema``; the
      state's third object), which the step updates after the optimizer.
  """
  ema = sdft is not None and sdft.teacher == "ema"
  if ema and param_ema is not None:
    raise ValueError(
      "compile_train_step: an EMA teacher (SDFTConfig.teacher = 'ema') and a "
      "served parameter average (param_ema) share the state's third slot; use one"
    )
  if ts.has_teacher != (ema or param_ema is not None):
    raise ValueError(
      "compile_train_step: an EMA-teacher step (SDFTConfig.teacher = 'ema') or a "
      "parameter-average step (param_ema) needs a state with a third object "
      "(state.with_ema_teacher) and no other step does; "
      f"teacher {None if sdft is None else sdft.teacher!r}, param_ema "
      f"{param_ema}, state has one: {ts.has_teacher}"
    )
  graphdef = ts.graphdef
  schedule = make_schedule(opt_cfg) if opt_cfg is not None else None
  replicated = sh.replicated(ts.mesh)

  def step(state, batch):
    objs = nnx.merge(graphdef, state)
    model, optimizer = objs[0], objs[1]
    count = optimizer.step[...]
    key = jax.random.fold_in(jax.random.key(seed), count)
    if sdft is None:
      metrics = train_step(model, optimizer, batch, key, loss_cfg)
    else:
      student, teacher = sdft_batches.split_pair(batch)
      metrics = sdft_lib.sdft_train_step(
        model, optimizer, student, teacher, loss_cfg, sdft, key,
        teacher_model=objs[TEACHER_KEY] if ema else None,
      )  # fmt: skip
    if param_ema is not None:  # any step kind; the third slot is the average
      param_ema_lib.update(objs[TEACHER_KEY], model, optimizer.step[...], param_ema)
    if schedule is not None:
      metrics["learning_rate"] = jnp.asarray(schedule(count), jnp.float32)
    return nnx.state(objs), metrics

  fn = jax.jit(
    step,
    in_shardings=(ts.shardings, dict(batch_shardings)),
    out_shardings=(ts.shardings, replicated),
    donate_argnames=("state",),
  )
  return CompiledStep(fn, ts.mesh, ts.rules)


def compile_eval_step(
  ts: TrainState,
  batch_shardings: Mapping[str, jax.sharding.NamedSharding],
  loss_cfg: model_lib.LossConfig,
) -> CompiledStep:
  """jit(eval) over (state, batch) -> metric sums (replicated)."""
  graphdef = ts.graphdef

  def step(state, batch):
    model = nnx.merge(graphdef, state)[0]  # the student (never an EMA teacher)
    return eval_step(model, batch, loss_cfg)

  fn = jax.jit(
    step,
    in_shardings=(ts.shardings, dict(batch_shardings)),
    out_shardings=sh.replicated(ts.mesh),
  )
  return CompiledStep(fn, ts.mesh, ts.rules)


def metrics_to_host(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Device scalars -> Python floats (call outside the step)."""
  return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
