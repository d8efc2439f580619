"""Reliability drills: NaN stop, corrupt-checkpoint fallback, same seed twice.

One reference run (5 steps, a checkpoint every step, dropout on) is shared:
the corruption tests copy its workdir, damage it and resume; the seed test
reruns it. The kill -9 drill is in kill_drill_test.py.
"""

from __future__ import annotations

import logging
import shutil

import jax
import numpy as np
import pytest

from onesearch_jax import sharding as sh
from onesearch_jax.model import LossConfig, ModelConfig
from onesearch_jax.train import checkpoints, loop, optimizers, state, synthetic

# These tests damage checkpoints on purpose; orbax's aborted asynchronous
# reads of a damaged one leave a callback on a closed event loop and an
# unawaited tensorstore coroutine behind (noise from the failed read that the
# tests assert on, not a failure of their own).
pytestmark = [
  pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
  pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
CFG = ModelConfig.tiny(
  sid_ranges=SID_RANGES, emb_placeholder_id=3, dropout_rate=0.1, qformer_layers=1
)
MESH = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
OPT = optimizers.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, total_steps=10)
STEPS = 5
TRAIN = loop.TrainConfig(
  num_steps=STEPS,
  log_every=1,
  loss=LossConfig(),
  optimizer=OPT,
  checkpoint=checkpoints.CheckpointConfig(
    save_every_steps=1, keep_last=3, async_save=False
  ),
)
TIMING = {"steps_per_sec", "tokens_per_sec", "eta_sec"}


def batches(position, bad_position=None):
  def gen():
    for p in range(position, 100):
      b = synthetic.make_batch(CFG, 8, 7, seed=p, placeholder_rows=1.0)
      if p == bad_position:  # every row has a placeholder fed by these
        b["long_seq_features"] = np.full_like(b["long_seq_features"], np.nan)
      yield b

  return gen()


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """Fewer XLA passes, and every program stored in the session's persistent
  compile cache (tests/conftest.py): every run here has the same shapes, so
  only the first one compiles (the kill drill, in fresh processes without
  the cache, covers compile-to-compile determinism)."""
  options = {
    "jax_disable_most_optimizations": True,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
  }
  old = {k: jax.config.values[k] for k in options}
  for k, v in options.items():
    jax.config.update(k, v)
  yield
  for k, v in old.items():
    jax.config.update(k, v)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _fast_compile):
  """(workdir, TrainResult) of the uninterrupted reference run."""
  workdir = tmp_path_factory.mktemp("reference")
  return workdir, loop.train(CFG, TRAIN, MESH, batches, workdir, sid_hash="h")


@pytest.fixture(scope="module")
def fresh(_fast_compile):
  """A freshly initialised TrainState (the restore target)."""
  mesh = sh.make_mesh(MESH)
  return state.create_train_state(CFG, OPT, mesh, MESH.logical_rules)


def _leaves(ts):
  return [np.asarray(x) for x in jax.tree.leaves(ts.state)]


def _assert_same_params(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_array_equal(x, y)


def _metrics(history):
  return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _data_files(step_dir):
  """The OCDBT data files of the state item (the `d/` directories)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.parent.name == "d"]
  assert files, f"no data files under {step_dir}"
  return files


def _truncate_data_files(step_dir):
  for p in _data_files(step_dir):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _delete_data_files(step_dir):
  for p in _data_files(step_dir):
    p.unlink()


def _garble_meta(step_dir):
  for p in (step_dir / "meta").rglob("*"):
    if p.is_file():
      p.write_text('{"data_position": ')


def test_nan_loss_stops_without_checkpointing_the_bad_state(fresh, tmp_path):
  # save_every 2: the bad step 3 is caught by the one-step-late check (after
  # step 4 was dispatched) and neither step 3 nor step 4 is saved.
  cfg = loop.TrainConfig(
    num_steps=STEPS,
    log_every=10,
    optimizer=OPT,
    checkpoint=checkpoints.CheckpointConfig(
      save_every_steps=2, keep_last=3, async_save=True
    ),
  )
  with pytest.raises(loop.NonFiniteMetricsError) as err:
    loop.train(
      CFG, cfg, MESH, lambda p: batches(p, bad_position=2), tmp_path, sid_hash="h"
    )
  msg = str(err.value)
  assert err.value.step == 3 and "loss" in err.value.metrics
  assert "stopped at step 3" in msg and "loss=nan" in msg
  assert "data position 2" in msg
  assert "last checkpoint is step 2" in msg and str(tmp_path) in msg
  assert "lower the learning rate" in msg and "check the data" in msg

  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints", cfg.checkpoint)
  assert ckpt.all_steps() == [1, 2]  # orbax also saves the first step
  good, meta = ckpt.restore(fresh)
  ckpt.close()
  assert good.step == 2 and meta["data_position"] == 2
  assert all(np.isfinite(x).all() for x in _leaves(good))


def test_nan_at_a_save_step_is_not_saved(tmp_path):
  # The bad step 2 is a save step: the check runs before the save.
  with pytest.raises(loop.NonFiniteMetricsError, match="stopped at step 2"):
    loop.train(
      CFG, TRAIN, MESH, lambda p: batches(p, bad_position=1), tmp_path, sid_hash="h"
    )
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  assert ckpt.all_steps() == [1]
  ckpt.close()


def test_truncated_latest_checkpoint_falls_back_and_resumes_bitwise(
  reference, tmp_path, caplog
):
  ref_dir, ref = reference
  assert ref.resumed_from is None and ref.state.step == STEPS
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  ckpt_dir = work / "checkpoints"
  assert sorted(int(p.name) for p in ckpt_dir.iterdir()) == [3, 4, 5]
  _truncate_data_files(ckpt_dir / "5")

  with caplog.at_level(logging.WARNING):
    # num_steps 5 restores step 4 and trains step 5 again.
    got = loop.train(CFG, TRAIN, MESH, batches, work, sid_hash="h")
  assert got.resumed_from == 4
  assert any(
    "unreadable" in r.getMessage() and str(ckpt_dir / "5") in r.getMessage()
    for r in caplog.records
  )
  moved = list((work / "checkpoints_corrupt").iterdir())
  assert [p.name.split("-")[0] for p in moved] == ["5"]
  _assert_same_params(got.state, ref.state)
  assert _metrics(got.history) == _metrics(ref.history[-1:])
  assert sorted(int(p.name) for p in ckpt_dir.iterdir()) == [3, 4, 5]


@pytest.mark.parametrize(
  "damage", [_truncate_data_files, _delete_data_files, _garble_meta]
)
def test_restore_skips_each_kind_of_damage(reference, fresh, tmp_path, damage):
  ref_dir, _ = reference
  shutil.copytree(ref_dir / "checkpoints", tmp_path / "c")
  damage(tmp_path / "c" / "5")
  ckpt = checkpoints.Checkpointer(tmp_path / "c")
  ts, meta = ckpt.restore(fresh)
  assert ts.step == 4 and meta == {"data_position": 4, "sid_hash": "h"}
  assert ckpt.all_steps() == [3, 4]
  moved = list((tmp_path / "c_corrupt").iterdir())
  assert [p.name.split("-")[0] for p in moved] == ["5"]
  ckpt.close()

  # An explicit step never falls back.
  shutil.copytree(ref_dir / "checkpoints" / "5", tmp_path / "c" / "5")
  damage(tmp_path / "c" / "5")
  ckpt = checkpoints.Checkpointer(tmp_path / "c")
  with pytest.raises(checkpoints.CheckpointCorruptError, match="c/5: "):
    ckpt.restore(fresh, step=5)
  ckpt.close()


def test_all_checkpoints_damaged_is_a_clear_error(reference, fresh, tmp_path):
  ref_dir, _ = reference
  work = tmp_path / "c"
  shutil.copytree(ref_dir / "checkpoints", work)
  for s in (3, 4, 5):
    _truncate_data_files(work / str(s))
  ckpt = checkpoints.Checkpointer(work)
  with pytest.raises(checkpoints.CheckpointCorruptError) as err:
    ckpt.restore(fresh)
  ckpt.close()
  msg = str(err.value)
  for s in (3, 4, 5):
    assert str(work / str(s)) in msg
  assert "config changed" in msg
  assert sorted(int(p.name) for p in work.iterdir()) == [3, 4, 5]  # nothing moved
  assert not (tmp_path / "c_corrupt").exists()


def test_resume_refuses_another_sid_artefact(reference, tmp_path):
  ref_dir, _ = reference
  shutil.copytree(ref_dir, tmp_path / "run")
  with pytest.raises(ValueError, match="SID artefact 'h'.*uses 'other'"):
    loop.train(CFG, TRAIN, MESH, batches, tmp_path / "run", sid_hash="other")


def test_same_seed_twice_is_identical(reference, tmp_path):
  _, ref = reference
  again = loop.train(CFG, TRAIN, MESH, batches, tmp_path / "again", sid_hash="h")
  _assert_same_params(again.state, ref.state)
  assert _metrics(again.history) == _metrics(ref.history)
  assert len(ref.history) == STEPS
  # The runs are not trivially equal: dropout is on and the loss moves.
  assert CFG.dropout_rate > 0 and len({h["loss"] for h in ref.history}) == STEPS
