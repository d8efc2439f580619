"""Calibrated rewards on a hand-built log, against hand-computed formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onesearch_jax.pars import rewards
from onesearch_jax.pars.rewards import (
  CLICK,
  EXPOSED,
  OTHER_CATEGORY,
  PURCHASE,
  REC_PURCHASE,
  SAME_CATEGORY,
)  # fmt: skip

A, B, C = 0, 1, 2
S1, S2, S3 = 0, 1, 2


def test_calibrated_rates_match_the_formula():
  ctr, cvr = rewards.calibrated_rates(
    np.array([100, 0]), np.array([7, 0]), np.array([2, 0])
  )
  lp, lc, lo = math.log(110), math.log(17), math.log(12)
  assert ctr[0] == pytest.approx(lc / (lp + lc + lo))
  assert cvr[0] == pytest.approx(lo / lc)
  # zero counts: every log is log 10 -> ctr 1/3, cvr 1
  assert ctr[1] == pytest.approx(1 / 3) and cvr[1] == pytest.approx(1.0)


def test_item_counts_on_the_hand_log(hand_log):
  counts = rewards.item_counts(hand_log)
  # train only: A shown 1 clicked 1 bought 1; B shown 2 clicked 1; C shown 1
  np.testing.assert_array_equal(counts.exposures, [1, 2, 1])
  np.testing.assert_array_equal(counts.clicks, [1, 1, 0])
  np.testing.assert_array_equal(counts.orders, [1, 0, 0])


def test_levels_on_the_hand_log(hand_log):
  table = rewards.RewardTable.build(hand_log)
  cases = {
    (S1, A): PURCHASE,
    (S1, B): EXPOSED,
    (S1, C): OTHER_CATEGORY,  # session category X (A clicked), C is Y
    (S2, A): REC_PURCHASE,  # u1 bought A in s1, A is in s2's category X
    (S2, B): CLICK,
    (S2, C): EXPOSED,
    (S3, A): EXPOSED,
    (S3, B): SAME_CATEGORY,  # s3 shows A (X), B is X and not shown
    (S3, C): OTHER_CATEGORY,
    (S1, -1): OTHER_CATEGORY,
  }
  s = np.array([k[0] for k in cases])
  i = np.array([k[1] for k in cases])
  np.testing.assert_array_equal(table.levels(s, i), list(cases.values()))


def test_item_reward_is_lambda_times_harmonic_mean(hand_log):
  table = rewards.RewardTable.build(hand_log)
  r = table.rewards(np.array([S1, S1, S2]), np.array([A, B, B]))
  # A: ctr = log11 / (3 log11) = 1/3, cvr = 1 -> hm = 0.5, λ = 2 -> 1.0
  assert r[0] == pytest.approx(1.0)
  ctr_b = math.log(11) / (math.log(12) + math.log(11) + math.log(10))
  cvr_b = math.log(10) / math.log(11)
  hm = 2 * ctr_b * cvr_b / (ctr_b + cvr_b)
  assert r[1] == pytest.approx(0.5 * hm)  # exposed
  assert r[2] == pytest.approx(1.0 * hm)  # click


def test_item_reward_rejects_bad_levels():
  with pytest.raises(ValueError, match="levels"):
    rewards.item_reward(np.array([6]), np.array([0.3]), np.array([0.5]))


def test_pair_weights_and_gap_floor():
  np.testing.assert_allclose(
    rewards.paper_pair_weight(np.array([1.0, 0.5]), np.array([0.5, 0.7])), [2.0, 10.0]
  )
  w = rewards.official_gap_weight(np.array([0.4, 1.5, 0.2]), np.array([0.2, 0.5, 1.5]))
  # max(0.4,1)-0.2 = 0.8; 1.5-0.5 = 1.0; max(0.2,1)-1.5 < 0 -> floor 0.1
  np.testing.assert_allclose(w, [0.8**-1.5 + 1, 2.0, 0.1**-1.5 + 1])
