"""Train loop: preemption + resume equals an uninterrupted run; phase hand-off."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import LossConfig, ModelConfig
from onesearch_jax.train import checkpoints, loop, optimizers, synthetic

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
CFG = ModelConfig.tiny(
  sid_ranges=SID_RANGES, emb_placeholder_id=3, dropout_rate=0.1, qformer_layers=1
)
MESH = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
TRAIN = loop.TrainConfig(
  num_steps=4,
  log_every=1,
  eval_every=2,
  loss=LossConfig(),
  optimizer=optimizers.OptimizerConfig(
    learning_rate=1e-3, warmup_steps=1, total_steps=10
  ),
  checkpoint=checkpoints.CheckpointConfig(
    save_every_steps=2, keep_last=2, async_save=False
  ),
)
SEEN: list[int] = []


def batches(position):
  def gen():
    for p in range(position, 100):
      SEEN.append(p)
      yield synthetic.make_batch(CFG, 8, 7, seed=p)

  return gen()


def eval_batches():
  return [synthetic.make_batch(CFG, 8, 7, seed=1000)]


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _leaves(ts):
  return [np.asarray(x) for x in jax.tree.leaves(ts.state)]


@pytest.mark.slow
def test_preempted_run_resumes_to_the_same_state(tmp_path):
  SEEN.clear()
  full = loop.train(
    CFG, TRAIN, MESH, batches, tmp_path / "a", eval_batches=eval_batches, sid_hash="h1"
  )
  assert [h["step"] for h in full.history] == [1, 2, 3, 4]
  assert [e["step"] for e in full.evals] == [2, 4]
  assert full.state.step == 4 and full.resumed_from is None
  assert all(np.isfinite(h["loss"]) and h["tokens_per_sec"] > 0 for h in full.history)

  SEEN.clear()
  part = loop.train(
    CFG, TRAIN, MESH, batches, tmp_path / "b", sid_hash="h1", stop_after=3
  )
  assert part.state.step == 3
  ckpt = checkpoints.Checkpointer(tmp_path / "b" / "checkpoints")
  assert ckpt.all_steps() == [2, 3]  # cadence save at 2, forced save at 3
  ckpt.close()
  SEEN.clear()
  rest = loop.train(CFG, TRAIN, MESH, batches, tmp_path / "b", sid_hash="h1")
  assert rest.resumed_from == 3
  assert SEEN[0] == 3  # the data resumes at the 4th batch
  assert rest.state.step == 4
  for a, b in zip(_leaves(rest.state), _leaves(full.state), strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(rest.history[-1]["loss"], full.history[-1]["loss"], rtol=0)

  with pytest.raises(ValueError, match="SID artefact"):
    loop.train(CFG, TRAIN, MESH, batches, tmp_path / "b", sid_hash="other")

  # Phase hand-off: parameters from phase "a", a fresh optimizer at step 0.
  phase2 = loop.TrainConfig(num_steps=1, log_every=1, checkpoint=TRAIN.checkpoint)
  nxt = loop.train(
    CFG, phase2, MESH, batches, tmp_path / "c", sid_hash="h1",
    init_from=tmp_path / "a" / "checkpoints",
  )  # fmt: skip
  assert nxt.resumed_from is None and nxt.state.step == 1
  # A fresh schedule has lr 0 at its step 0 (warmup), so after that one step
  # the parameters are exactly phase 1's: they were loaded, not re-initialised.
  p_full = nnx.state(full.state.merge()[0], nnx.Param)
  p_next = nnx.state(nxt.state.merge()[0], nnx.Param)
  diffs = [
    float(np.abs(np.asarray(a) - np.asarray(b)).max())
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_next), strict=True)
  ]
  assert nxt.history[0]["learning_rate"] == 0.0
  assert max(diffs) == 0.0
