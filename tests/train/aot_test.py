"""AOT compile of the train step on an abstract state (8 fake CPU devices)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from onesearch_jax import sharding as sh
from onesearch_jax.model import ModelConfig
from onesearch_jax.train import aot, optimizers, state, synthetic

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
TINY = ModelConfig.tiny(sid_ranges=SID_RANGES, emb_placeholder_id=3)
OPT = optimizers.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, total_steps=10)


def _device0_bytes(tree):
  dev = jax.devices()[0]
  return sum(
    s.data.nbytes
    for x in jax.tree.leaves(tree)
    for s in x.addressable_shards
    if s.device == dev
  )


@pytest.fixture
def fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def test_tiny_aot_matches_a_real_state_and_runs(fast_compile):
  mesh_cfg = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
  report, compiled = aot.compile_train_step_aot(TINY, mesh_cfg, 8, 7, 6, opt_cfg=OPT)
  assert report.mesh_shape == {"data": 2, "fsdp": 4, "tensor": 1}
  # The same bytes a really allocated state holds on device 0.
  mesh = sh.make_mesh(mesh_cfg)
  ts = state.create_train_state(TINY, OPT, mesh, mesh_cfg.logical_rules)
  assert report.param_bytes_per_device == _device0_bytes(ts.state[0])
  assert report.opt_bytes_per_device == _device0_bytes(ts.state[1])
  n = sum(x.size for x in jax.tree.leaves(ts.state[0]))
  assert report.num_params == n and report.param_bytes_global == 4 * n
  # FSDP over 4 splits most bytes 4 ways (norms and small tables replicated).
  assert n * 4 / 4 < report.param_bytes_per_device < n * 4 / 2
  # The AOT executable runs on real inputs and keeps the state's layout.
  batch = synthetic.make_batch(TINY, 8, 7, seed=0)
  bsh = state.batch_shardings(batch, mesh, mesh_cfg.logical_rules)
  shardings = ts.shardings
  new_state, metrics = compiled(ts.state, state.shard_batch(batch, bsh))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["tokens"]) == 8 * 6
  got = jax.tree.leaves(jax.tree.map(lambda x: x.sharding, new_state))
  assert got == jax.tree.leaves(shardings)


def test_param_ema_state_is_counted_and_the_step_updates_it(fast_compile):
  """With the served parameter average (the main job's phase 3) the AOT state
  carries a third copy of the parameters: the report counts exactly the bytes
  a real state with that copy holds on device 0, and the compiled step runs on
  it and moves the average (decay 0.5 from step 0: halfway to the new
  parameters)."""
  from onesearch_jax.train import param_ema as param_ema_lib

  mesh_cfg = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
  ema = param_ema_lib.ParamEMAConfig(decay=0.5, start_step=0)
  plain, _ = aot.compile_train_step_aot(TINY, mesh_cfg, 8, 7, 6, opt_cfg=OPT)
  report, compiled = aot.compile_train_step_aot(
    TINY, mesh_cfg, 8, 7, 6, opt_cfg=OPT, param_ema=ema
  )
  assert plain.ema_bytes_per_device == 0
  assert "parameter average" not in plain.format()
  mesh = sh.make_mesh(mesh_cfg)
  ts = state.with_ema_teacher(
    state.create_train_state(TINY, OPT, mesh, mesh_cfg.logical_rules)
  )
  teacher = ts.state[state.TEACHER_KEY]
  assert report.ema_bytes_per_device == _device0_bytes(teacher)
  assert report.ema_bytes_per_device == report.param_bytes_per_device
  assert "parameter average" in report.format()
  before = jax.tree.map(np.asarray, jax.device_get(teacher))
  batch = synthetic.make_batch(TINY, 8, 7, seed=0)
  bsh = state.batch_shardings(batch, mesh, mesh_cfg.logical_rules)
  new_state, _ = compiled(ts.state, state.shard_batch(batch, bsh))
  params = jax.tree.leaves(jax.device_get(new_state[0]))
  got = jax.tree.leaves(jax.device_get(new_state[state.TEACHER_KEY]))
  for b, p, g in zip(jax.tree.leaves(before), params, got, strict=True):
    np.testing.assert_allclose(g, 0.5 * b + 0.5 * p, rtol=1e-5, atol=1e-7)


def test_batch_that_does_not_split_is_refused():
  with pytest.raises(ValueError, match="does not split over data x fsdp = 8"):
    aot.compile_train_step_aot(
      TINY, sh.MeshConfig(shape=(2, 4, 1), rules="fsdp"), 12, 7, 6
    )


def _base_param_count(c: ModelConfig) -> int:
  """Hand count of ModelConfig.base()'s parameters."""
  d, f, hk, v = c.d_model, c.d_ff, c.num_heads * c.head_dim, c.vocab_size
  attn, mlp = 4 * d * hk, 3 * d * f
  enc = c.num_encoder_layers * (attn + mlp + 2 * d)
  dec = c.num_decoder_layers * (2 * attn + mlp + 3 * d)
  qf = c.qformer_layers * (attn + mlp + 2 * d)
  qf += c.num_query_tokens * d + c.seq_feature_dim * d + 2 * d
  rel = 2 * c.rel_buckets * c.num_heads
  return 2 * v * d + enc + dec + qf + rel + 2 * d  # embed + logits, final norms


@pytest.mark.slow
@pytest.mark.parametrize(
  "shape,rules,split",
  [((2, 4, 1), "fsdp", 4), ((1, 4, 2), "fsdp_tp", 8)],
)
def test_base_config_compiles_for_a_pod_mesh(shape, rules, split, fast_compile):
  # Fewer XLA passes: the byte counts checked here come from the SPMD
  # partitioner's shardings, which every optimisation level runs.
  cfg = ModelConfig.base()
  report, _ = aot.compile_train_step_aot(
    cfg, sh.MeshConfig(shape=shape, rules=rules), 64, 128, 6
  )
  print(report.format())
  assert report.num_params == _base_param_count(cfg)
  assert 190e6 < report.num_params < 200e6
  # Nearly every byte is split `split` ways; replicated vectors add < 1%.
  ideal = report.param_bytes_global / split
  assert ideal <= report.param_bytes_per_device < 1.01 * ideal
  # AdamW: mu + nu per parameter (+ scalar counts).
  assert report.opt_bytes_per_device == pytest.approx(
    2 * report.param_bytes_per_device, rel=1e-3
  )
