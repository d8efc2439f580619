"""The ranking rows' statistics objects as reward-model features: the
point-in-time lookup against hand values and a brute-force scan, counts of
unusable rows, standardisation, and the switch in the reward-model inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars import release_stats, rm_features
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.world import reader


def _row(session, user, item, t, user_stats, item_stats):
  return {
    "session_id": session,
    "user_id": user,
    "target_item_id": item,
    "time_index": t,
    "user_statistical_features": user_stats,
    "target_item_statistical_features": item_stats,
  }


# hand_world: s1 (u1, t=10) shows A B; s2 (u1, t=20) shows B C; s3 (u2, t=30).
RANKING = [
  _row("s1", "u1", "A", 10, {"user_show": 5.0, "user_gmv": 7.5}, {"item_click": 3.0}),
  _row("s1", "u1", "B", 10, {"user_show": 5.0, "user_gmv": 7.5}, {"item_click": 1.0}),
  _row("s2", "u1", "B", 20, {"user_show": 8.0}, {"item_click": 4.0}),
  _row("s2", "u1", "C", 20, {"user_show": 8.0}, {"item_click": 0.0}),
  _row("s3", "u2", "A", 30, {"user_show": 2.0, "user_gmv": -1.0}, {"item_click": 6.0}),
  _row("s9", "u9", "A", 5, {"user_show": 1.0}, {"item_click": 9.0}),  # unknown user
  _row("s9", "u1", "Z", 5, {"user_show": 1.0}, {"item_click": 9.0}),  # unknown item
]
L = math.log1p

# (session, item) -> [user_gmv, user_show, item_click, user_missing, item_missing]
CASES = {
  ("s1", "A"): [L(7.5), L(5), L(3), 0, 0],  # the session's own rows
  # C's only row is later (t=20): not found; the user's row at t=5 (item Z,
  # whose user is known) is older than s1's own
  ("s1", "C"): [L(7.5), L(5), 0, 0, 1],
  ("s2", "A"): [0, L(8), L(3), 0, 0],  # A as of t=20: s1's row; gmv missing -> 0
  ("s3", "B"): [0, L(2), L(4), 0, 0],  # negative gmv clipped to 0 before log1p
  ("s3", "C"): [0, L(2), 0, 0, 0],  # a zero count is found, not missing
}


@pytest.fixture()
def ranked_world(world):
  return dataclasses.replace(world, ranking=RANKING)


@pytest.mark.parametrize("case", sorted(CASES))
def test_point_in_time_lookup_matches_hand_values(ranked_world, hand_log, case):
  stats = release_stats.ReleaseStats.build(ranked_world, hand_log)
  assert stats.names == (
    "log1p_user_gmv", "log1p_user_show", "log1p_item_click",
    "user_stats_missing", "item_stats_missing",
  )  # fmt: skip
  s = hand_log.session_ids.index(case[0])
  i = hand_log.item_ids.index(case[1])
  got = stats.raw(np.asarray([s]), np.asarray([i]))[0]
  np.testing.assert_allclose(got, CASES[case], atol=1e-12)


def test_unusable_rows_are_counted(ranked_world, hand_log):
  stats = release_stats.ReleaseStats.build(ranked_world, hand_log)
  assert dict(stats.skipped) == {"unknown_user": 1, "unknown_item": 1}


def test_lookup_equals_brute_force_scan():
  rng = np.random.default_rng(0)
  r, f = 300, 3
  owner = rng.integers(-1, 20, r)  # -1: an unusable row
  time = rng.integers(0, 50, r)
  raw = rng.random((r, f)) * 10
  raw[rng.random((r, f)) < 0.1] = np.nan
  table = release_stats._AsOf.build(owner, time, raw)
  q_owner = rng.integers(0, 22, 500)  # owners 20, 21 have no rows
  q_time = rng.integers(0, 60, 500)
  values, found = table.lookup(q_owner, q_time)
  for k in range(500):
    rows = np.flatnonzero((owner == q_owner[k]) & (time <= q_time[k]))
    assert found[k] == bool(rows.size)
    if rows.size:
      # the latest time; among equal times the last row in file order
      best = rows[np.lexsort((rows, time[rows]))[-1]]
      want = np.log1p(np.maximum(np.nan_to_num(raw[best]), 0.0))
      np.testing.assert_allclose(values[k], want, rtol=1e-12)
    else:
      assert not values[k].any()


def test_features_standardised_over_train_impressions(ranked_world, hand_log):
  stats = release_stats.ReleaseStats.build(ranked_world, hand_log)
  train = hand_log.train_impressions()
  z = stats.features(hand_log.imp_session[train], hand_log.imp_item[train])
  assert z.dtype == np.float32 and z.shape == (train.size, 5)
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)


def test_switch_adds_the_columns_to_the_reward_model_inputs(tiny_world_dir):
  world = reader.load_world(tiny_world_dir)
  assert world.ranking, "the tiny world has ranking rows with statistics"
  items = [r["item_id"] for r in world.items]
  queries = sorted({r["query"] for r in world.recall})
  table = SIDTable.synthetic(items, queries, levels=(16, 8, 8), opq_codes=16, seed=0)
  log = InteractionLog.build(world, table)
  base = rm_features.FeatureConfig()
  off = rm_features.build_context(world, log, table, base)
  on = rm_features.build_context(
    world, log, table, dataclasses.replace(base, release_stats=True)
  )
  extra = on.stats.blocks[1]
  assert on.n_stats == off.n_stats + len(extra.names)
  assert "log1p_item_click_cnt_30d_hist" in extra.names
  s, i = log.imp_session[:50], log.imp_item[:50]
  both = on.stats.features(s, i)
  np.testing.assert_array_equal(both[:, : off.n_stats], off.stats.features(s, i))
  np.testing.assert_array_equal(both[:, off.n_stats :], extra.features(s, i))
  assert np.isfinite(both).all()
  assert not extra.skipped  # the simulated world references only its own ids
  # shown pairs find their own session's row
  assert extra.raw(s, i)[:, -1].max() == 0.0
