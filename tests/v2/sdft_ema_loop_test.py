"""The EMA teacher of self-distillation in the one training loop (train.loop).

Tiny model, synthetic paired batches: the teacher starts as the phase's
starting student, decay 1 keeps it there, decay 0 makes it the student after
every step (so the run is the joint run), it lives in the checkpoints and a
killed run resumes to the uninterrupted student and teacher, and a reader
without a teacher (eval, serving) gets the student.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax import testing
from onesearch_jax.model import LossConfig, ModelConfig
from onesearch_jax.train import checkpoints, loop, optimizers, state, steps, synthetic
from onesearch_jax.v2 import sdft_batches
from onesearch_jax.v2.sdft import SDFTConfig

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
CFG = ModelConfig.tiny(
  sid_ranges=SID_RANGES, emb_placeholder_id=-1, qformer_layers=0, dropout_rate=0.1
)
MESH = sh.MeshConfig()  # data parallel over the test devices
OPT = optimizers.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=10)


def _train_cfg(num_steps: int) -> loop.TrainConfig:
  return loop.TrainConfig(
    num_steps=num_steps,
    log_every=1,
    eval_every=0,
    loss=LossConfig(),
    optimizer=OPT,
    checkpoint=checkpoints.CheckpointConfig(
      save_every_steps=100, keep_last=3, async_save=False
    ),
  )


def _paired(position: int) -> dict[str, np.ndarray]:
  """A student batch and its teacher prompts (the student's + 4 tokens)."""
  b = synthetic.make_batch(CFG, 8, 7, seed=position)
  del b["long_seq_features"]
  s = b["encoder_input_tokens"]
  kw = np.tile(np.asarray([[5, 6, 7, 8]], np.int32), (s.shape[0], 1))
  return sdft_batches.pair_batch(b, np.concatenate([s, kw], axis=1))


def _plain(position: int) -> dict[str, np.ndarray]:
  b = synthetic.make_batch(CFG, 8, 7, seed=position)
  del b["long_seq_features"]
  return b


def _stream(make):
  def batches(position):
    return (make(p) for p in range(position, 100))

  return batches


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  with testing.fast_compile():
    yield


def _params(model) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _run(workdir, sdft, num_steps=3, **kw):
  return loop.train(
    CFG, _train_cfg(num_steps), MESH, _stream(_paired), workdir, sdft=sdft, **kw
  )


@pytest.mark.slow
def test_decay_one_keeps_the_teacher_at_the_phase_start(tmp_path):
  """The teacher is a copy of the parameters the phase starts from (here
  edited by init_params, as a previous phase's would be), and decay 1 never
  moves it."""
  shift = 0.01

  def init_params(model):
    nnx.update(model, jax.tree.map(lambda x: x + shift, nnx.state(model, nnx.Param)))

  fresh = state.create_train_state(CFG, OPT, sh.make_mesh(MESH), MESH.logical_rules)
  start = [x + np.float32(shift) for x in _params(fresh.merge()[0])]
  res = _run(
    tmp_path / "ema", SDFTConfig(teacher="ema", ema_decay=1.0), init_params=init_params
  )
  assert res.state.has_teacher and res.state.step == 3
  for t, s in zip(_params(res.state.teacher()), start, strict=True):
    np.testing.assert_array_equal(t, s)
  moved = [
    not np.array_equal(a, b)
    for a, b in zip(_params(res.state.merge()[0]), start, strict=True)
  ]
  assert any(moved)  # the student trained


@pytest.mark.slow
def test_decay_zero_is_the_joint_teacher_at_every_step(tmp_path):
  """decay 0: θ_T = θ_S after each update, so the teacher of step k is the
  student at its start, which is the joint mode's teacher: same losses, KL
  and parameters at every step, and the final teacher is the student."""
  joint = _run(tmp_path / "joint", SDFTConfig(kl_weight=1.0))
  ema = _run(tmp_path / "ema", SDFTConfig(kl_weight=1.0, teacher="ema", ema_decay=0.0))
  assert not joint.state.has_teacher
  assert all(h["kl"] > 0 for h in ema.history)  # the prompts differ
  for key in ("loss", "kl", "teacher_ce", "grad_norm"):
    np.testing.assert_allclose(
      [h[key] for h in ema.history], [h[key] for h in joint.history], rtol=1e-5
    )
  student = _params(ema.state.merge()[0])
  for t, s in zip(_params(ema.state.teacher()), student, strict=True):
    np.testing.assert_array_equal(t, s)
  for a, b in zip(student, _params(joint.state.merge()[0]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ema_run_resumes_with_its_teacher_and_readers_get_the_student(tmp_path):
  cfg = SDFTConfig(kl_weight=1.0, teacher="ema", ema_decay=0.5)
  full = _run(tmp_path / "a", cfg, num_steps=4)
  part = _run(tmp_path / "b", cfg, num_steps=4, stop_after=2)
  assert part.state.step == 2
  rest = _run(tmp_path / "b", cfg, num_steps=4)
  assert rest.resumed_from == 2 and rest.state.step == 4
  assert state.params_hash(rest.state) == state.params_hash(full.state)
  teacher = _params(full.state.teacher())
  for a, b in zip(_params(rest.state.teacher()), teacher, strict=True):
    np.testing.assert_array_equal(a, b)
  assert [h["kl"] for h in part.history + rest.history] == [
    h["kl"] for h in full.history
  ]
  # 0.5 is neither end: the teacher is neither the start nor the student.
  student = _params(full.state.merge()[0])
  assert any(not np.array_equal(t, s) for t, s in zip(teacher, student, strict=True))
  # Eval / serving / the pars stage restore into a (model, optimizer) target:
  # they get the student, and the checkpoint's teacher is dropped.
  target = state.create_train_state(
    CFG, OPT, sh.single_device_mesh(), sh.DP_RULES, initialise=False
  )
  ckpt = checkpoints.Checkpointer(tmp_path / "a" / "checkpoints")
  try:
    plain, _ = ckpt.restore(target, step=4)
    with_teacher, _ = ckpt.restore(state.with_ema_teacher(target), step=4)
  finally:
    ckpt.close()
  assert not plain.has_teacher
  assert state.params_hash(plain) == state.params_hash(full.state)
  for a, b in zip(_params(with_teacher.teacher()), teacher, strict=True):
    np.testing.assert_array_equal(a, b)


def test_teacher_and_step_must_agree(tmp_path):
  with pytest.raises(ValueError, match="teacher must be one of"):
    SDFTConfig(teacher="frozen")
  ts = state.create_train_state(CFG, OPT, sh.single_device_mesh(), sh.DP_RULES)
  bsh = state.batch_shardings(_paired(0), ts.mesh, ts.rules)
  ema = SDFTConfig(teacher="ema")
  with pytest.raises(ValueError, match="needs a state with a third object"):
    steps.compile_train_step(ts, bsh, LossConfig(), sdft=ema)
  with pytest.raises(ValueError, match="needs a state with a third object"):
    steps.compile_train_step(state.with_ema_teacher(ts), bsh, LossConfig())
  # A checkpoint without a teacher (a joint-mode run) is no EMA run's.
  ckpt = checkpoints.Checkpointer(tmp_path / "j")
  ckpt.save(1, ts, {}, force=True)
  ckpt.close()
  ckpt = checkpoints.Checkpointer(tmp_path / "j")
  try:
    with pytest.raises(
      checkpoints.CheckpointCorruptError, match="holds no EMA teacher"
    ):
      ckpt.restore(state.with_ema_teacher(ts))
  finally:
    ckpt.close()
