"""TPMA-GRPO advantages, gates and objective vs hand values and a loop
re-implementation of the formulas (SPEC §6.5)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.v2 import tpma

T1 = [1, 2, 3, 4, 5]
T2 = [1, 7, 8, 9, 9]
ROLLOUTS = [[1, 2, 3, 4, 5], [1, 7, 3, 9, 0], [6, 2, 3, 4, 5]]


def _one_prompt(rollouts, targets, mask=None):
  comp = jnp.asarray([rollouts])
  tgt = jnp.asarray([targets])
  m = jnp.ones((1, len(targets)), bool) if mask is None else jnp.asarray([mask])
  return comp, tgt, m


def test_position_weights():
  np.testing.assert_array_equal(tpma.position_weights(5), [2, 2, 1, 1, 0])
  np.testing.assert_array_equal(tpma.position_weights(3), [2, 2, 0])
  np.testing.assert_array_equal(tpma.position_weights(2), [2, 2])
  with pytest.raises(ValueError, match="length"):
    tpma.position_weights(0)


def test_prefix_rewards_marginals_and_gates_hand_computed():
  comp, tgt, m = _one_prompt(ROLLOUTS, [T1, T2])
  match = tpma.position_match(comp, tgt, m)
  r = tpma.prefix_rewards(match, jnp.asarray(tpma.position_weights(5)))
  # o1 = T1 exactly; o2 matches T2 at 1,2,4 (and T1 at 1,3); o3 misses
  # position 1 but matches T1 after it.
  np.testing.assert_array_equal(
    r[0], [[2, 4, 5, 6, 6], [2, 4, 4, 5, 5], [0, 2, 3, 4, 4]]
  )
  np.testing.assert_array_equal(
    tpma.marginal_rewards(r)[0], [[2, 2, 1, 1, 0], [2, 2, 0, 1, 0], [0, 2, 1, 1, 0]]
  )
  np.testing.assert_allclose(
    tpma.prefix_gates(match)[0],
    [[1, 1, 1, 1, 1], [1, 1, 1, 2 / 3, 3 / 4], [1, 0, 1 / 2, 2 / 3, 3 / 4]],
    rtol=1e-6,
  )


def test_advantages_hand_computed():
  adv, gates = tpma.tpma_advantages(*_one_prompt(ROLLOUTS, [T1, T2]))
  a = 1 / math.sqrt(3)  # columns [2,2,0] and [1,0,1]: unbiased std 2/sqrt(3), 1/sqrt(3)
  want = [[a, 0, a, 0, 0], [a, 0, -2 * a, 0, 0], [-2 * a, 0, a, 0, 0]]
  np.testing.assert_allclose(adv[0], want, rtol=1e-5, atol=1e-6)
  assert gates.shape == (1, 3, 5)


def _loop_tpma(rollouts, targets):
  """The formulas written out with loops (1-based l as in SPEC)."""
  G, L = len(rollouts), len(rollouts[0])
  w = [2.0 if ell < 3 else (1.0 if ell < L else 0.0) for ell in range(1, L + 1)]
  R = np.zeros((G, L + 1))
  gate = np.zeros((G, L))
  for i, o in enumerate(rollouts):
    for ell in range(1, L + 1):
      R[i, ell] = max(
        [
          sum(w[k - 1] * (o[k - 1] == t[k - 1]) for k in range(1, ell + 1))
          for t in targets
        ]
        or [0.0]
      )
      if ell == 1:
        gate[i, 0] = 1.0
      else:
        best = max(
          [sum(o[k - 1] == t[k - 1] for k in range(1, ell)) for t in targets] or [0.0]
        )
        gate[i, ell - 1] = min(max(best / (ell - 1), 0.0), 1.0)
  d = R[:, 1:] - R[:, :-1]
  adv = np.zeros((G, L))
  for ell in range(L):
    col = d[:, ell]
    adv[:, ell] = (col - col.mean()) / (np.std(col, ddof=1) + 1e-8)
  return adv, gate


def test_advantages_and_gates_match_the_loop_formulas_on_random_groups():
  rng = np.random.default_rng(0)
  B, G, T, L = 4, 5, 3, 5
  comp = rng.integers(0, 3, size=(B, G, L))  # small alphabet: many matches
  tgt = rng.integers(0, 3, size=(B, T, L))
  mask = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
  adv, gates = tpma.tpma_advantages(
    jnp.asarray(comp), jnp.asarray(tgt), jnp.asarray(mask)
  )
  for b in range(B):
    real = [list(tgt[b, t]) for t in range(T) if mask[b, t]]
    want_adv, want_gate = _loop_tpma([list(x) for x in comp[b]], real)
    np.testing.assert_allclose(adv[b], want_adv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gates[b], want_gate, rtol=1e-6)


def test_no_ground_truth_gives_zero_advantage_and_first_gate_only():
  adv, gates = tpma.tpma_advantages(*_one_prompt(ROLLOUTS, [T1], mask=[False]))
  assert np.all(np.asarray(adv) == 0.0)
  np.testing.assert_array_equal(gates[0], [[1, 0, 0, 0, 0]] * 3)


def test_item_reward_term_adds_the_group_z_norm():
  comp, tgt, m = _one_prompt(ROLLOUTS, [T1, T2])
  base, _ = tpma.tpma_advantages(comp, tgt, m)
  item = jnp.asarray([[7.0, 3.0, 2.0]])  # mean 4, unbiased std sqrt(7)
  adv, _ = tpma.tpma_advantages(comp, tgt, m, item_rewards=item, w_item=0.5)
  z = (np.array([7.0, 3.0, 2.0]) - 4.0) / math.sqrt(7.0)
  np.testing.assert_allclose(adv[0] - base[0], 0.5 * z[:, None] * np.ones(5), rtol=1e-5)
  with pytest.raises(ValueError, match="item_rewards"):
    tpma.tpma_advantages(comp, tgt, m, w_item=0.5)


def test_group_normalise_needs_two_rollouts():
  with pytest.raises(ValueError, match=">= 2 rollouts"):
    tpma.group_normalise(jnp.ones((2, 1, 5)))


def test_group_of_equal_values_normalises_to_exactly_zero():
  # float32 mean of eight 0.3 is not exactly 0.3: without the guard the
  # rounding, divided by std + 1e-8 = 1e-8, is O(1).
  x = jnp.full((3, 8), 0.3).at[2, 0].set(0.7)
  z = np.asarray(tpma.group_normalise(x))
  assert np.all(z[:2] == 0.0)
  want = (np.asarray(x[2]) - np.mean(x[2])) / np.std(np.asarray(x[2]), ddof=1)
  np.testing.assert_allclose(z[2], want, rtol=1e-4)


def test_grpo_advantages_broadcast_the_sequence_z_norm():
  adv, gates = tpma.grpo_advantages(jnp.asarray([[1.0, 3.0]]), 5)
  a = 1 / math.sqrt(2)  # mean 2, unbiased std sqrt(2)
  np.testing.assert_allclose(adv[0], [[-a] * 5, [a] * 5], rtol=1e-5)
  assert np.all(np.asarray(gates) == 1.0)


def test_objective_value_and_gradient_at_ratio_one():
  rng = np.random.default_rng(1)
  shape = (2, 3, 5)
  logp = jnp.asarray(-rng.random(shape), jnp.float32)
  adv = jnp.asarray(rng.normal(size=shape), jnp.float32)
  gates = jnp.asarray(rng.random(shape), jnp.float32)
  mask = np.ones(shape, np.float32)
  mask[1, 2, 3:] = 0
  loss_fn = lambda lp: tpma.tpma_objective(lp, logp, adv, gates, jnp.asarray(mask))
  n = mask.sum()
  np.testing.assert_allclose(
    loss_fn(logp), -(np.asarray(gates * adv) * mask).sum() / n, rtol=1e-5
  )
  # d/dlogp of -g exp(logp - old) A / n at logp = old is -g A / n.
  np.testing.assert_allclose(
    jax.grad(loss_fn)(logp), -np.asarray(gates * adv) * mask / n, rtol=1e-5, atol=1e-7
  )


def test_objective_is_unclipped_up_to_the_log_ratio_clamp():
  one = jnp.ones((1, 2, 1))
  old = jnp.zeros((1, 2, 1))
  lp = jnp.asarray([[[1.0], [30.0]]])
  got = tpma.tpma_objective(lp, old, one, one, one)
  np.testing.assert_allclose(got, -(math.e + math.exp(20.0)) / 2, rtol=1e-5)


def test_objective_k3_kl_term():
  one = jnp.ones((1, 2, 1))
  lp = jnp.asarray([[[-1.0], [-2.0]]])
  ref = jnp.asarray([[[-1.5], [-2.0]]])
  adv = jnp.zeros((1, 2, 1))
  got = tpma.tpma_objective(lp, lp, adv, one, one, logp_ref=ref, beta=0.5)
  d = -0.5  # ref - cur on the first token, 0 on the second
  np.testing.assert_allclose(got, 0.5 * (math.exp(d) - d - 1.0) / 2, rtol=1e-6)
  with pytest.raises(ValueError, match="logp_ref"):
    tpma.tpma_objective(lp, lp, adv, one, one, beta=0.5)


def test_total_adds_a_tenth_of_the_sft_loss():
  out = tpma.tpma_grpo_loss(jnp.asarray(-0.3), jnp.asarray(2.0))
  np.testing.assert_allclose(out["total"], -0.3 + 0.2, rtol=1e-6)


def test_gate_blocks_a_wrong_prefix_brute_force():
  # Every rollout over a 2-symbol alphabet against one target: the gate at l is
  # the share of matches before l (max over targets), checked exhaustively.
  t = [0, 1, 0, 1, 1]
  roll = [list(x) for x in itertools.product((0, 1), repeat=5)]
  _, gates = tpma.tpma_advantages(*_one_prompt(roll, [t]))
  for i, o in enumerate(roll):
    for ell in range(2, 6):
      hits = sum(o[k] == t[k] for k in range(ell - 1))
      assert float(gates[0, i, ell - 1]) == pytest.approx(hits / (ell - 1))


def test_k3_kl_brute_force_and_its_expectation_is_the_kl():
  """k3 per token against numpy on tiny tensors; its mean over every token
  weighted by π is KL(π ‖ ref) (the estimator is unbiased); 0 at π = ref, and
  its gradient there is 0."""
  rng = np.random.default_rng(3)
  logp = np.log(rng.dirichlet(np.ones(5), size=(2, 3)))  # [2, 3, 5]: π per row
  ref = np.log(rng.dirichlet(np.ones(5), size=(2, 3)))
  got = np.asarray(tpma.k3_kl(jnp.asarray(logp, jnp.float32), jnp.asarray(ref)))
  want = np.exp(ref - logp) - (ref - logp) - 1.0
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got >= 0)
  expectation = np.sum(np.exp(logp) * want, axis=-1)
  kl = np.sum(np.exp(logp) * (logp - ref), axis=-1)
  np.testing.assert_allclose(expectation, kl, rtol=1e-10)
  same = jnp.asarray(logp, jnp.float32)
  assert np.all(np.asarray(tpma.k3_kl(same, same)) == 0.0)
  grad = jax.grad(lambda x: jnp.sum(tpma.k3_kl(x, same)))(same)
  assert np.all(np.asarray(grad) == 0.0)
