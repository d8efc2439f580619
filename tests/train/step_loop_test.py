"""The loop core on a toy linear model: resume, records, eval cadence, NaN guard."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.train import checkpoints, state, step_loop


def _fresh() -> state.TrainState:
  model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
  graphdef, st = nnx.split((model, opt))
  shardings = jax.tree.map(lambda x: x.sharding, st)
  return state.TrainState(graphdef, st, shardings, sh.single_device_mesh(), sh.DP_RULES)


def _build(ts: state.TrainState, first) -> step_loop.Steps:
  assert first["x"].shape == (4, 3)
  graphdef = ts.graphdef

  def loss_fn(model, x, y):
    return jnp.mean((model(x)[:, 0] - y) ** 2)

  @jax.jit
  def step(st, x, y):
    model, opt = nnx.merge(graphdef, st)
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    opt.update(model, grads)
    return nnx.state((model, opt)), {
      "loss": loss,
      "grad_norm": optax.global_norm(grads),
    }

  def evaluate(st):
    model, _ = nnx.merge(graphdef, st)
    b = next(_batches(100))
    return {"eval_loss": float(loss_fn(model, b["x"], b["y"]))}

  def annotate(host, p: step_loop.Progress):
    host["steps_since_log"] = p.steps

  return step_loop.Steps(
    train=lambda st, b: step(st, b["x"], b["y"]), evaluate=evaluate, annotate=annotate
  )


def _batches(position, bad_position=None):
  for p in itertools.count(position):
    rng = np.random.default_rng(p)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    if p == bad_position:
      x[:] = np.nan
    yield {"x": x, "y": x.sum(-1)}


def _params(ts):
  return [np.asarray(x) for x in jax.tree.leaves(ts.state)]


def _ckpt(path, every=100):
  return checkpoints.Checkpointer(
    path, checkpoints.CheckpointConfig(save_every_steps=every, keep_last=5)
  )


def test_records_eval_cadence_and_no_checkpointer():
  seen = []
  cfg = step_loop.LoopConfig(num_steps=5, log_every=2, eval_every=2)
  res = step_loop.run(
    _fresh(), _build, _batches, cfg, log_fn=lambda s, r: seen.append((s, r))
  )
  assert res.steps_run == 5 and res.state.step == 5 and res.resumed_from is None
  assert [h["step"] for h in res.history] == [2, 4, 5]  # and the last step
  assert [h["steps_since_log"] for h in res.history] == [2, 2, 1]
  assert [e["step"] for e in res.evals] == [2, 4]
  assert [s for s, _ in seen] == [2, 2, 4, 4, 5]
  assert res.evals[-1]["eval_loss"] < res.evals[0]["eval_loss"]


def test_stop_and_resume_equals_uninterrupted_run(tmp_path):
  cfg = step_loop.LoopConfig(num_steps=6, log_every=1)
  full = step_loop.run(_fresh(), _build, _batches, cfg, ckpt=_ckpt(tmp_path / "a"))
  stopped = dict(cfg.__dict__, stop_after=3)
  part = step_loop.run(
    _fresh(), _build, _batches, step_loop.LoopConfig(**stopped),
    ckpt=_ckpt(tmp_path / "b"), meta={"tag": "x"},
  )  # fmt: skip
  assert part.steps_run == 3
  metas = []
  rest = step_loop.run(
    _fresh(), _build, _batches, cfg, ckpt=_ckpt(tmp_path / "b"),
    meta={"tag": "x"}, check_meta=metas.append,
  )  # fmt: skip
  assert rest.resumed_from == 3 and rest.steps_run == 3
  assert metas == [{"tag": "x", "data_position": 3}]
  for a, b in zip(_params(full.state), _params(rest.state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert [h["loss"] for h in part.history + rest.history] == [
    h["loss"] for h in full.history
  ]
  done = step_loop.run(_fresh(), _build, _batches, cfg, ckpt=_ckpt(tmp_path / "b"))
  assert done.steps_run == 0 and done.resumed_from == 6


def test_nan_is_caught_one_step_late_and_never_saved(tmp_path):
  # Step 3 (data position 2) is bad and not a save step: its check runs after
  # step 4 is dispatched, before step 4's save. Only step 2 stays on disk.
  cfg = step_loop.LoopConfig(num_steps=6, log_every=10, hints="Hints: none.")
  with pytest.raises(step_loop.NonFiniteMetricsError) as err:
    step_loop.run(
      _fresh(), _build, lambda p: _batches(p, bad_position=2), cfg,
      ckpt=_ckpt(tmp_path, every=2),
    )  # fmt: skip
  assert err.value.step == 3 and set(err.value.metrics) == {"loss", "grad_norm"}
  msg = str(err.value)
  assert "stopped at step 3" in msg and "data position 2" in msg
  assert "last checkpoint is step 2" in msg and msg.endswith("Hints: none.")
  ckpt = _ckpt(tmp_path)
  assert max(ckpt.all_steps()) == 2
  ckpt.close()
