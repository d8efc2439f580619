"""Self-distillation losses against numpy brute force and hand values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.model import losses
from onesearch_jax.v2 import distill_losses as dl


def _np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_kl(p, q):
  return (p * (np.log(p) - np.log(q))).sum(-1)


def test_distill_kl_hand_value():
  # p_T = (1/4, 3/4), p_S = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2).
  t = jnp.asarray([[[0.0, math.log(3.0)]]])
  s = jnp.zeros((1, 1, 2))
  want = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
  got = dl.distill_kl(t, s, jnp.ones((1, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_distill_kl_matches_brute_force_with_temperature_and_weights():
  rng = np.random.default_rng(0)
  t = rng.normal(size=(2, 3, 5)) * 2
  s = rng.normal(size=(2, 3, 5)) * 2
  w = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
  tau = 2.0
  kl = _np_kl(_np_softmax(t / tau), _np_softmax(s / tau))
  want = (kl * w).sum() / w.sum() * tau**2
  got = dl.distill_kl(jnp.asarray(t), jnp.asarray(s), jnp.asarray(w), temperature=tau)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_distill_kl_teacher_is_detached_and_student_gradient_is_tau_q_minus_p():
  rng = np.random.default_rng(1)
  t = jnp.asarray(rng.normal(size=(1, 2, 4)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(1, 2, 4)), jnp.float32)
  w = jnp.ones((1, 2))
  tau = 1.5
  g_t, g_s = jax.grad(
    lambda a, b: dl.distill_kl(a, b, w, temperature=tau), argnums=(0, 1)
  )(t, s)
  assert np.all(np.asarray(g_t) == 0.0)
  # d/dz_S [tau^2 KL(p || softmax(z_S/tau))] / N = tau (q - p) / N.
  p = _np_softmax(np.asarray(t, np.float64) / tau)
  q = _np_softmax(np.asarray(s, np.float64) / tau)
  np.testing.assert_allclose(g_s, tau * (q - p) / 2, rtol=1e-4, atol=1e-7)


def test_distill_kl_ignores_unweighted_tokens_and_disallowed_ids():
  rng = np.random.default_rng(2)
  t = rng.normal(size=(1, 2, 6)).astype(np.float32)
  s = rng.normal(size=(1, 2, 6)).astype(np.float32)
  w = np.array([[1.0, 0.0]], np.float32)
  allowed = np.zeros((1, 2, 6), bool)
  allowed[..., 1:4] = True
  base = dl.distill_kl(t, s, w, allowed=allowed)
  t2, s2 = t.copy(), s.copy()
  t2[0, 1] += 5.0  # an unweighted token
  s2[0, 0, 0] = 40.0  # a disallowed id
  t2[0, 0, 5] = -40.0
  np.testing.assert_allclose(dl.distill_kl(t2, s2, w, allowed=allowed), base)
  kl = _np_kl(_np_softmax(t[0, 0, 1:4]), _np_softmax(s[0, 0, 1:4]))
  np.testing.assert_allclose(base, kl, rtol=1e-5)
  assert float(dl.distill_kl(t, s, np.zeros((1, 2)))) == 0.0


def test_rdrop_is_symmetric_and_matches_brute_force():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(2, 2, 5))
  b = rng.normal(size=(2, 2, 5))
  w = np.array([[1.0, 1.0], [0.0, 1.0]])
  got_ab = dl.rdrop_kl(jnp.asarray(a), jnp.asarray(b), jnp.asarray(w))
  got_ba = dl.rdrop_kl(jnp.asarray(b), jnp.asarray(a), jnp.asarray(w))
  np.testing.assert_allclose(got_ab, got_ba, rtol=1e-6)
  pa, pb = _np_softmax(a), _np_softmax(b)
  sym = 0.5 * (_np_kl(pa, pb) + _np_kl(pb, pa))
  np.testing.assert_allclose(got_ab, (sym * w).sum() / w.sum(), rtol=1e-5)
  assert float(dl.rdrop_kl(jnp.asarray(a), jnp.asarray(a), jnp.asarray(w))) < 1e-7
  g1, g2 = jax.grad(lambda x, y: dl.rdrop_kl(x, y, w), argnums=(0, 1))(
    jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  )
  assert np.abs(g1).sum() > 0 and np.abs(g2).sum() > 0  # both passes learn


def test_fgm_perturbation_has_norm_epsilon_along_the_gradient():
  rng = np.random.default_rng(4)
  g = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  r = dl.fgm_perturbation(g, 0.6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r)), 0.6, rtol=1e-6)
  gn = np.asarray(g) / np.linalg.norm(np.asarray(g))
  np.testing.assert_allclose(np.asarray(r) / 0.6, gn, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(dl.fgm_perturbation(jnp.zeros((2, 2)), 0.6)) == 0.0)


def test_fgm_loss_on_a_quadratic_is_the_hand_value():
  # L(e) = 1/2 |e - c|^2: grad = e - c, so e + r_adv moves eps further from c
  # and L_adv = 1/2 (|e - c| + eps)^2; its gradient is the one at e + r_adv.
  c = jnp.asarray([1.0, -2.0, 0.5])
  e = jnp.asarray([4.0, 2.0, 0.5])  # |e - c| = 5
  loss_fn = lambda x: 0.5 * jnp.sum(jnp.square(x - c))
  adv, r = dl.fgm_loss(loss_fn, e, 0.6)
  np.testing.assert_allclose(adv, 0.5 * 5.6**2, rtol=1e-6)
  np.testing.assert_allclose(r, 0.6 * np.array([3.0, 4.0, 0.0]) / 5.0, rtol=1e-6)
  grad = jax.grad(lambda x: dl.fgm_loss(loss_fn, x, 0.6)[0])(e)
  np.testing.assert_allclose(grad, np.asarray(e - c) * 5.6 / 5.0, rtol=1e-5)


def test_focal_is_cross_entropy_at_gamma_zero():
  rng = np.random.default_rng(5)
  logits = jnp.asarray(rng.normal(size=(2, 3, 7)) * 3, jnp.float32)
  targets = jnp.asarray(rng.integers(1, 5, size=(2, 3)))
  allowed = np.zeros((2, 3, 7), bool)
  allowed[..., 1:5] = True
  for mask in (None, jnp.asarray(allowed)):
    ce, _ = losses.cross_entropy_with_logits(logits, targets, allowed=mask)
    fl = dl.focal_cross_entropy(logits, targets, gamma=0.0, alpha=1.0, allowed=mask)
    np.testing.assert_allclose(fl, ce, rtol=1e-6)


def test_focal_hand_values_at_gamma_two():
  logits = jnp.asarray([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # p = 1/4, 3/4
  targets = jnp.asarray([1, 0])
  got = dl.focal_cross_entropy(logits, targets, gamma=2.0, alpha=1.0)
  want = [0.25**2 * -math.log(0.75), 0.75**2 * -math.log(0.25)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  got2 = dl.focal_cross_entropy(logits, targets, gamma=2.0, alpha=2.0)
  np.testing.assert_allclose(got2, 2 * np.asarray(want), rtol=1e-6)
  with pytest.raises(ValueError, match="gamma"):
    dl.focal_cross_entropy(logits, targets, gamma=-1.0)
