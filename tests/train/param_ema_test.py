"""The served parameter average (train.param_ema) in the one training loop.

Tiny model, synthetic batches. The average is checked against an EMA
recomputed in numpy from the trained parameters of every step (read back
from per-step checkpoints), readers without the third object (eval, serving,
PARS, the next phase) get the average, a killed run resumes to the same
average, and the config's JSON form leaves the switch out while it is off.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import configs, testing
from onesearch_jax import sharding as sh
from onesearch_jax.model import LossConfig, ModelConfig
from onesearch_jax.train import (
  checkpoints,
  loop,
  optimizers,
  param_ema,
  sft_config,
  state,
  steps,
  synthetic,
)
from onesearch_jax.v2.sdft import SDFTConfig

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
CFG = ModelConfig.tiny(sid_ranges=SID_RANGES, emb_placeholder_id=-1, qformer_layers=0)
MESH = sh.MeshConfig()
OPT = optimizers.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=10)
EMA = param_ema.ParamEMAConfig(decay=0.6, start_step=2)


def _train_cfg(num_steps: int) -> loop.TrainConfig:
  return loop.TrainConfig(
    num_steps=num_steps,
    log_every=1,
    eval_every=0,
    loss=LossConfig(),
    optimizer=OPT,
    checkpoint=checkpoints.CheckpointConfig(
      save_every_steps=1, keep_last=20, async_save=False
    ),
  )


def _batches(position):
  def one(p):
    b = synthetic.make_batch(CFG, 8, 7, seed=p)
    del b["long_seq_features"]
    return b

  return (one(p) for p in range(position, 100))


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  with testing.fast_compile():
    yield


def _params(model) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _run(workdir, num_steps=5, **kw):
  return loop.train(
    CFG, _train_cfg(num_steps), MESH, _batches, workdir, param_ema=EMA, **kw
  )


def _restore(workdir, step, *, twin: bool):
  """(model, average or None) of a step; twin=False: a reader's target."""
  ts = state.create_train_state(
    CFG, OPT, sh.single_device_mesh(), sh.DP_RULES, initialise=False
  )
  if twin:
    ts = state.with_ema_teacher(ts)
  ckpt = checkpoints.Checkpointer(workdir / "checkpoints")
  try:
    ts, meta = ckpt.restore(ts, step=step)
  finally:
    ckpt.close()
  assert meta[param_ema.SERVE_META_KEY] == param_ema.SERVE_EMA
  return ts.merge()[0], ts.teacher()


def test_update_by_hand():
  """A copy up to start_step, then decay·avg + (1 − decay)·params."""
  avg = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  model = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
  a0, m0 = _params(avg), _params(model)
  cfg = param_ema.ParamEMAConfig(decay=0.75, start_step=3)
  param_ema.update(avg, model, np.int32(3), cfg)  # count <= start: a copy
  for a, m in zip(_params(avg), m0, strict=True):
    np.testing.assert_array_equal(a, m)
  nnx.update(avg, jax.tree.map(lambda x: x * 0 + 1.0, nnx.state(avg, nnx.Param)))
  param_ema.update(avg, model, np.int32(4), cfg)
  for a, m in zip(_params(avg), m0, strict=True):
    np.testing.assert_allclose(a, 0.75 * 1.0 + 0.25 * m, rtol=1e-6)
  assert a0  # the average had its own start values


def test_config_checks_and_json_form():
  with pytest.raises(ValueError, match="decay"):
    param_ema.ParamEMAConfig(decay=1.0)
  with pytest.raises(ValueError, match="start_step"):
    param_ema.ParamEMAConfig(start_step=-1)
  main = sft_config.SFTConfig()  # the main job serves the average
  assert main.param_ema == param_ema.ParamEMAConfig()
  assert configs.sft_config().param_ema == main.param_ema
  raw = sft_config.config_to_dict(main)
  assert raw["param_ema"] == {"decay": 0.995, "start_step": 1000}
  assert sft_config.config_from_dict(raw) == main
  # Off: left out of the JSON form, which is also what a file written before
  # the switch existed reads back as.
  off = configs.sft_config(param_ema=False)
  assert off.param_ema is None
  off_raw = sft_config.config_to_dict(off)
  assert "param_ema" not in off_raw
  assert sft_config.config_from_dict(off_raw).param_ema is None
  on = configs.sft_config(param_ema={"decay": 0.9})
  assert on.param_ema == param_ema.ParamEMAConfig(decay=0.9)
  assert configs.sft_config(param_ema=True).param_ema == param_ema.ParamEMAConfig()
  with pytest.raises(ValueError, match="ParamEMAConfig"):
    configs.sft_config(param_ema={"half_life": 3})
  with pytest.raises(ValueError, match="param_ema must be"):
    configs.sft_config(param_ema=0.99)


@pytest.mark.slow
def test_average_is_the_ema_of_the_trained_parameters(tmp_path):
  """Per-step checkpoints give the trained parameters p_1..p_5; the average
  is p_2 after step 2 (start_step) and 0.6·avg + 0.4·p_k after each later
  step. A reader's restore gets the average, and the returned hash of the
  served parameters is the average's."""
  wd = tmp_path / "run"
  res = _run(wd)
  assert res.state.step == 5 and res.state.has_teacher
  trained = [_params(_restore(wd, k, twin=True)[0]) for k in range(1, 6)]
  expect = trained[1]
  for p in trained[2:]:
    expect = [0.6 * a + 0.4 * b for a, b in zip(expect, p, strict=True)]
  avg = _params(res.state.teacher())
  for a, e in zip(avg, expect, strict=True):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
  for a, p in zip(avg, trained[-1], strict=True):
    assert a.shape == p.shape
  assert any(not np.allclose(a, p) for a, p in zip(avg, trained[-1], strict=True))
  served, none = _restore(wd, 5, twin=False)
  assert none is None
  for a, s in zip(avg, _params(served), strict=True):
    np.testing.assert_array_equal(a, s)
  reader = state.create_train_state(CFG, OPT, sh.single_device_mesh(), sh.DP_RULES)
  reader = state.with_state(reader, nnx.state((served, reader.merge()[1])))
  assert state.params_hash(res.state, twin=True) == state.params_hash(reader)
  assert state.params_hash(res.state) != state.params_hash(reader)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_average(tmp_path):
  full = _run(tmp_path / "a")
  part = _run(tmp_path / "b", stop_after=3)
  assert part.state.step == 3
  rest = _run(tmp_path / "b")
  assert rest.resumed_from == 3 and rest.state.step == 5
  assert state.params_hash(rest.state) == state.params_hash(full.state)
  assert state.params_hash(rest.state, twin=True) == state.params_hash(
    full.state, twin=True
  )


@pytest.mark.slow
def test_next_phase_starts_from_the_average(tmp_path):
  """A phase started from a serving-average phase (init_from) gets the
  average as its parameters, as eval and serving do."""
  first = _run(tmp_path / "p1", num_steps=3)
  fresh = state.create_train_state(CFG, OPT, sh.make_mesh(MESH), MESH.logical_rules)
  nxt = loop._params_from(
    fresh, checkpoints.Checkpointer(tmp_path / "p1" / "checkpoints"), ""
  )
  avg = _params(first.state.teacher())
  for a, b in zip(_params(nxt.merge()[0]), avg, strict=True):
    np.testing.assert_array_equal(a, b)
  assert not nxt.has_teacher


def test_step_needs_the_third_object():
  ts = state.create_train_state(CFG, OPT, sh.single_device_mesh(), sh.DP_RULES)
  b = next(_batches(0))
  bsh = state.batch_shardings(b, ts.mesh, ts.rules)
  with pytest.raises(ValueError, match="needs a state with a third object"):
    steps.compile_train_step(ts, bsh, LossConfig(), param_ema=EMA)
  with pytest.raises(ValueError, match="share the state's third slot"):
    steps.compile_train_step(
      state.with_ema_teacher(ts), bsh, LossConfig(), sdft=SDFTConfig(teacher="ema"),
      param_ema=EMA,
    )  # fmt: skip


def test_self_distillation_steps_update_the_average_too():
  """With self-distillation (joint teacher) the step must move the served
  average as the plain step does: after step 1 (<= start_step 2) it is an
  exact copy of the parameters, after step 3 0.6·avg_2 + 0.4·p_3. (It once
  stayed at the phase's starting parameters, so eval served phase 2.)"""
  from onesearch_jax.v2 import sdft_batches

  ts = state.with_ema_teacher(
    state.create_train_state(CFG, OPT, sh.single_device_mesh(), sh.DP_RULES)
  )
  start = _params(ts.teacher())

  def paired(p):
    b = next(_batches(p))
    return sdft_batches.pair_batch(b, synthetic.make_batch(CFG, 8, 9, seed=50 + p)[
      "encoder_input_tokens"])  # fmt: skip

  bsh = state.batch_shardings(paired(0), ts.mesh, ts.rules)
  fn = steps.compile_train_step(
    ts, bsh, LossConfig(), OPT, sdft=SDFTConfig(kl_weight=0.1), param_ema=EMA
  )
  st, avgs, params = ts.state, [], []
  for p in range(3):
    st, _ = fn(st, state.shard_batch(paired(p), bsh))
    now = state.with_state(ts, st)
    avgs.append(_params(now.teacher()))
    params.append(_params(now.merge()[0]))
  for a, p in zip(avgs[0], params[0], strict=True):
    np.testing.assert_array_equal(a, p)
  assert any(not np.array_equal(a, s0) for a, s0 in zip(avgs[0], start, strict=True))
  for a, prev, p in zip(avgs[2], avgs[1], params[2], strict=True):
    np.testing.assert_allclose(a, 0.6 * prev + 0.4 * p, rtol=1e-5, atol=1e-6)


def test_sdft_ema_teacher_and_average_conflict():
  keywords = {"keywords": "builtin", "keywords_in": "teacher"}
  with pytest.raises(ValueError, match="third slot"):
    configs.sft_config(museq=keywords, sdft={"teacher": "ema"})
  cfg = configs.sft_config(museq=keywords, sdft={"teacher": "ema"}, param_ema=False)
  assert cfg.sdft == SDFTConfig(teacher="ema") and cfg.param_ema is None
