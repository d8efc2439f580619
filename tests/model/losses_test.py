"""Cross-entropy, z-loss, label smoothing and the SID restriction vs numpy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from onesearch_jax.model import losses, sid_levels


def _np_log_softmax(x):
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_plain_cross_entropy_and_z_loss_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32) * 3
  targets = rng.integers(0, 7, size=(2, 3))
  weights = np.array([[1, 1, 0], [1, 0.5, 1]], np.float32)
  out = losses.weighted_cross_entropy(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), z_loss=0.01
  )
  logp = _np_log_softmax(logits.astype(np.float64))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  z = 0.01 * log_z**2
  np.testing.assert_allclose(out["loss_sum"], ((nll + z) * weights).sum(), rtol=1e-5)
  np.testing.assert_allclose(out["z_loss_sum"], (z * weights).sum(), rtol=1e-5)
  assert float(out["weight_sum"]) == 4.5
  correct = (logits.argmax(-1) == targets).astype(np.float32)
  np.testing.assert_allclose(out["correct_sum"], (correct * weights).sum())


def test_label_smoothing_is_kl_to_smoothed_target():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 5)).astype(np.float32)
  targets = np.array([0, 1, 4, 2])
  eps = 0.2
  loss, _ = losses.cross_entropy_with_logits(
    jnp.asarray(logits), jnp.asarray(targets), label_smoothing=eps
  )
  soft = np.full((4, 5), eps / 5)
  soft[np.arange(4), targets] += 1 - eps
  kl = (soft * (np.log(soft) - _np_log_softmax(logits.astype(np.float64)))).sum(-1)
  np.testing.assert_allclose(loss, kl, rtol=1e-5, atol=1e-6)
  # Predicting the smoothed distribution exactly costs 0.
  perfect, _ = losses.cross_entropy_with_logits(
    jnp.log(jnp.asarray(soft, jnp.float32)), jnp.asarray(targets), label_smoothing=eps
  )
  np.testing.assert_allclose(perfect, 0.0, atol=1e-5)


def test_restricted_loss_is_softmax_over_the_level_range():
  ranges = ((2, 5), (5, 9))
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(1, 3, 10)).astype(np.float32)
  targets = np.array([[3, 7, 1]])  # level 0, level 1, EOS (unrestricted)
  levels = sid_levels.target_sid_levels(jnp.asarray(targets), ranges)
  np.testing.assert_array_equal(levels, [[0, 1, -1]])
  allowed = sid_levels.allowed_mask(levels, ranges, 10)
  loss, _ = losses.cross_entropy_with_logits(
    jnp.asarray(logits), jnp.asarray(targets), allowed=allowed
  )
  want = [
    -_np_log_softmax(logits[0, 0, 2:5].astype(np.float64))[1],
    -_np_log_softmax(logits[0, 1, 5:9].astype(np.float64))[2],
    -_np_log_softmax(logits[0, 2].astype(np.float64))[1],
  ]
  np.testing.assert_allclose(np.asarray(loss)[0], want, rtol=1e-5)
  # Smoothing mass stays inside the range: still finite.
  smooth, _ = losses.cross_entropy_with_logits(
    jnp.asarray(logits), jnp.asarray(targets), allowed=allowed, label_smoothing=0.1
  )
  assert np.all(np.isfinite(np.asarray(smooth)))
