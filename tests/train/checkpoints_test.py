"""Orbax round trip: save -> new process-like manager -> restore is bitwise equal."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from onesearch_jax import sharding as sh
from onesearch_jax.model import LossConfig, ModelConfig
from onesearch_jax.train import checkpoints, optimizers, state, steps, synthetic

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
CFG = ModelConfig.tiny(
  sid_ranges=SID_RANGES, emb_placeholder_id=3, dropout_rate=0.1, qformer_layers=1
)
OPT = optimizers.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, total_steps=10)


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _leaves(st):
  return [np.asarray(x) for x in jax.tree.leaves(st)]


@pytest.mark.slow
def test_save_restore_is_bitwise_and_resumes_identically(tmp_path):
  mesh_cfg = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
  mesh = sh.make_mesh(mesh_cfg)
  rules = mesh_cfg.logical_rules
  batches = [synthetic.make_batch(CFG, 8, 7, seed=s) for s in range(3)]
  ts = state.create_train_state(CFG, OPT, mesh, rules, seed=0)
  bsh = state.batch_shardings(batches[0], mesh, rules)
  train = steps.compile_train_step(ts, bsh, LossConfig(), OPT)
  st = ts.state
  for b in batches[:2]:
    st, _ = train(st, state.shard_batch(b, bsh))
  ts = state.with_state(ts, st)
  saved = _leaves(st)

  ckpt = checkpoints.Checkpointer(
    tmp_path / "ckpt", checkpoints.CheckpointConfig(save_every_steps=1, keep_last=2)
  )
  assert ckpt.save(2, ts, {"data_position": 2, "sid_hash": "abc"})
  ckpt.close()

  # "Restart": a fresh state with another seed, a fresh manager.
  fresh = state.create_train_state(CFG, OPT, mesh, rules, seed=123)
  assert not all(
    np.array_equal(a, b) for a, b in zip(_leaves(fresh.state), saved, strict=True)
  )
  ckpt2 = checkpoints.Checkpointer(tmp_path / "ckpt")
  assert ckpt2.latest_step() == 2
  restored, meta = ckpt2.restore(fresh)
  ckpt2.close()
  assert meta == {"data_position": 2, "sid_hash": "abc"}
  assert restored.step == 2
  got = _leaves(restored.state)
  assert len(got) == len(saved)
  for a, b in zip(got, saved, strict=True):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  for x, s in zip(
    jax.tree.leaves(restored.state), jax.tree.leaves(ts.shardings), strict=True
  ):
    assert x.sharding.is_equivalent_to(s, x.ndim)

  # The next step (batch chosen by the restored data position) is identical.
  nxt = state.shard_batch(batches[meta["data_position"]], bsh)
  _, m_orig = train(st, nxt)
  _, m_rest = train(restored.state, nxt)
  assert steps.metrics_to_host(m_orig) == steps.metrics_to_host(m_rest)


def test_restore_without_checkpoint_raises(tmp_path):
  ckpt = checkpoints.Checkpointer(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    ckpt.restore(None)
  ckpt.close()


def test_remote_checkpoint_paths_stay_remote(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  remote = checkpoints.resolve_directory("gs://bucket/run/checkpoints")
  assert str(remote) == "gs://bucket/run/checkpoints"
  local = checkpoints.resolve_directory("rel/ckpt")
  assert str(local) == str(tmp_path / "rel" / "ckpt")
