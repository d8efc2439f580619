"""The self-distillation objective on a tiny model: off it is the model's
loss, the teacher gets no gradient, the KL covers the SID positions only,
R-Drop / FGM / focal switch their terms, and a few steps train."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import LossConfig, ModelConfig, transformer
from onesearch_jax.model import model as model_lib
from onesearch_jax.train import optimizers, synthetic
from onesearch_jax.v2 import distill_losses, sdft

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
LOSS = LossConfig(z_loss=0.0, label_smoothing=0.0)
KEY = jax.random.key(0)


def _cfg(dropout=0.1):
  return ModelConfig.tiny(
    sid_ranges=SID_RANGES,
    emb_placeholder_id=-1,
    dropout_rate=dropout,
    qformer_layers=0,
    restrict_sid_levels=True,
  )


def _model(dropout=0.1):
  return transformer.create_model(_cfg(dropout))


def _batches():
  student = synthetic.make_batch(_cfg(), 4, 9, seed=1)
  del student["long_seq_features"]  # no Q-Former: the quickest model
  teacher = dict(student)
  # The teacher's input: the student's plus four "keyword" tokens.
  kw = np.tile(np.array([[5, 6, 7, 8]], np.int32), (4, 1))
  teacher["encoder_input_tokens"] = np.concatenate(
    [student["encoder_input_tokens"], kw], axis=1
  )
  return student, teacher


@pytest.fixture(autouse=True, scope="module")
def _fast_compile_on_one_device():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  with jax.set_mesh(sh.single_device_mesh()), nnx.logical_axis_rules(sh.DP_RULES):
    yield
  jax.config.update("jax_disable_most_optimizations", old)


def _loss(model, student, teacher, cfg, key):
  return sdft.sdft_loss(model, student, teacher, LOSS, cfg, key)


def test_all_terms_off_is_the_models_loss():
  model = _model()
  student, teacher = _batches()
  cfg = sdft.SDFTConfig(kl_weight=0.0)
  loss, parts = _loss(model, student, teacher, cfg, None)
  want, _ = model_lib.loss_fn(model, student, LOSS, None)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(parts["kl"]) == float(parts["rdrop"]) == float(parts["adv"]) == 0.0
  # With dropout on: the student pass draws the plain step's masks.
  loss, _ = _loss(model, student, teacher, cfg, KEY)
  want, _ = model_lib.loss_fn(model, student, LOSS, KEY)
  other, _ = model_lib.loss_fn(model, student, LOSS, jax.random.fold_in(KEY, 0))
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert abs(float(loss) - float(other)) > 1e-6  # the masks matter
  with pytest.raises(ValueError, match="SDFTConfig"):
    sdft.SDFTConfig(fgm_epsilon=-1.0)


def test_kl_is_on_the_sid_positions():
  model = _model(dropout=0.0)
  student, teacher = _batches()
  cfg = sdft.SDFTConfig(kl_weight=0.5, temperature=2.0)
  loss, parts = _loss(model, student, teacher, cfg, None)
  t_logits = np.asarray(model(teacher, None), np.float64)
  s_logits = np.asarray(model(student, None), np.float64)
  # Brute force over the 5 SID positions (the EOS column is left out), with
  # each position's softmax restricted to its level's range.
  kl = []
  for b in range(4):
    for pos, (lo, hi) in enumerate(SID_RANGES):
      p = jax.nn.softmax(t_logits[b, pos, lo:hi] / 2.0)
      q = jax.nn.softmax(s_logits[b, pos, lo:hi] / 2.0)
      kl.append(float(np.sum(p * (np.log(p) - np.log(q)))))
  np.testing.assert_allclose(parts["kl"], np.mean(kl) * 4.0, rtol=1e-4)
  assert float(parts["kl"]) > 1e-4
  base, _ = model_lib.loss_fn(model, student, LOSS, None)
  np.testing.assert_allclose(loss, base + 0.5 * parts["kl"], rtol=1e-5)


@pytest.mark.slow  # eager gradients of the whole model (~40 s on 2 busy cores)
def test_the_teacher_pass_gets_no_gradient():
  model = _model(dropout=0.0)
  student, teacher = _batches()
  cfg = sdft.SDFTConfig(kl_weight=0.5, temperature=2.0)
  # Gradient of L_SDFT == gradient with the teacher logits a constant input.
  const_t = jnp.asarray(model(teacher, None))
  allowed, _ = model_lib.loss_allowed(model, student)
  sid_w = np.zeros((4, 6), np.float32)
  sid_w[:, :5] = 1.0

  def with_constant_teacher(m):
    ce, _ = model_lib.loss_fn(m, student, LOSS, None)
    s = m(student, None)
    return ce + 0.5 * distill_losses.distill_kl(
      const_t, s, sid_w, temperature=2.0, allowed=allowed
    )

  g_sdft = nnx.grad(lambda m: _loss(m, student, teacher, cfg, None)[0])(model)
  g_const = nnx.grad(with_constant_teacher)(model)
  for a, b in zip(jax.tree.leaves(g_sdft), jax.tree.leaves(g_const), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rdrop_needs_dropout_and_focal_at_gamma_zero_is_ce():
  student, teacher = _batches()
  on = sdft.SDFTConfig(kl_weight=0.0, rdrop_weight=0.5)
  _, parts = _loss(_model(0.3), student, teacher, on, KEY)
  assert float(parts["rdrop"]) > 0
  _, parts = _loss(_model(0.0), student, teacher, on, KEY)
  assert float(parts["rdrop"]) == pytest.approx(0.0, abs=1e-7)
  model = _model(0.0)
  focal = sdft.SDFTConfig(kl_weight=0.0, focal=True, focal_gamma=0.0, focal_alpha=1.0)
  got, _ = _loss(model, student, teacher, focal, None)
  want, _ = model_lib.loss_fn(model, student, LOSS, None)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  focal2 = sdft.SDFTConfig(kl_weight=0.0, focal=True, focal_gamma=2.0, focal_alpha=1.0)
  got2, _ = _loss(model, student, teacher, focal2, None)
  assert float(got2) < float(want)  # (1 - p)^2 < 1 down-weights every token


def test_fgm_term_is_the_loss_one_epsilon_step_up_the_gradient():
  model = _model(0.0)
  student, teacher = _batches()
  eps = 1e-2
  cfg = sdft.SDFTConfig(kl_weight=0.0, fgm_epsilon=eps)
  _, parts = _loss(model, student, teacher, cfg, None)
  shape = sdft.input_embedding_shape(model, student)
  assert shape == (4, 9, model.cfg.d_model)

  def at(delta):
    sums = model_lib.sums_of_logits(model, model(student, None, delta), student, LOSS)
    return sums["loss_sum"] / sums["weight_sum"]

  g = jax.grad(at)(jnp.zeros(shape))
  gnorm = float(jnp.sqrt(jnp.sum(g * g)))
  base = float(at(jnp.zeros(shape)))
  # First order: L(e + eps g/|g|) = L(e) + eps |g| + O(eps^2).
  np.testing.assert_allclose(float(parts["adv"]) - base, eps * gnorm, rtol=0.05)
  np.testing.assert_allclose(float(at(eps * g / gnorm)), float(parts["adv"]), rtol=1e-6)


@pytest.mark.slow  # 12 jitted steps with every term on (~35 s on 2 busy cores)
def test_a_few_steps_with_every_term_on_lower_the_loss():
  model = _model(0.1)
  opt = nnx.Optimizer(
    model,
    optimizers.make_optimizer(
      optimizers.OptimizerConfig(learning_rate=1e-2, warmup_steps=1, total_steps=30)
    ),
    wrt=nnx.Param,
  )
  student, teacher = _batches()
  cfg = sdft.SDFTConfig(kl_weight=0.1, rdrop_weight=0.5, fgm_epsilon=0.6, focal=True)
  step = nnx.jit(
    lambda m, o, k: sdft.sdft_train_step(m, o, student, teacher, LOSS, cfg, k)
  )
  losses = []
  for i in range(12):
    metrics = step(model, opt, jax.random.fold_in(KEY, i))
    losses.append(float(metrics["loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["adv"]) > 0 and float(metrics["rdrop"]) > 0
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_ema_teacher_update_and_use():
  student_m = _model(0.0)
  teacher_m = nnx.clone(student_m)
  # Shift the teacher's parameters: theta_T = theta_S + 1.
  nnx.update(
    teacher_m, jax.tree.map(lambda x: x + 1.0, nnx.state(teacher_m, nnx.Param))
  )
  before = jax.tree.leaves(nnx.state(student_m, nnx.Param))
  sdft.ema_update(teacher_m, student_m, 0.9)
  for t, s in zip(
    jax.tree.leaves(nnx.state(teacher_m, nnx.Param)), before, strict=True
  ):
    np.testing.assert_allclose(t, s + 0.9, rtol=1e-5, atol=1e-6)  # 0.9(s+1) + 0.1 s
  student, teacher = _batches()
  cfg = sdft.SDFTConfig(kl_weight=1.0)
  joint, _ = sdft.sdft_loss(student_m, student, teacher, LOSS, cfg, None)
  ema, parts = sdft.sdft_loss(student_m, student, teacher, LOSS, cfg, None, teacher_m)
  t_logits = teacher_m(teacher, None)
  want = distill_losses.distill_kl(
    t_logits,
    student_m(student, None),
    np.pad(np.ones((4, 5), np.float32), ((0, 0), (0, 1))),
    allowed=model_lib.loss_allowed(student_m, student)[0],
  )
  np.testing.assert_allclose(parts["kl"], want, rtol=1e-5)
  assert abs(float(ema) - float(joint)) > 1e-6
  with pytest.raises(ValueError, match="ema_decay"):
    sdft.SDFTConfig(ema_decay=1.5)
