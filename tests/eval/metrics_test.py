"""Metrics against hand-computed values, batch additivity, diagnostics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from onesearch_jax.eval import metrics

L2 = math.log2


def _one(ranked, targets, rel_items=((-1,),), rel_grades=((0,),), ks=(1, 2, 4)):
  ranked = np.asarray(ranked, np.int32)
  e = ranked.shape[0]
  return metrics.compute(
    ranked,
    np.asarray(targets, np.int32),
    np.asarray(rel_items * (e if len(rel_items) == 1 else 1), np.int32),
    np.asarray(rel_grades * (e if len(rel_grades) == 1 else 1), np.int32),
    {"all": np.ones(e, bool)},
    ks=ks,
  )["all"]


def test_binary_metrics_hand_computed():
  # Targets {7, 3}; 3 is at rank 2, 7 at rank 4; -1 padding at rank 3.
  r = _one([[5, 3, -1, 7]], [[7, 3, -1]])
  assert r["n"] == 1
  assert r["hr@1"] == 0 and r["hr@2"] == 1 and r["hr@4"] == 1
  assert r["recall@1"] == 0 and r["recall@2"] == 0.5 and r["recall@4"] == 1.0
  assert r["mrr@1"] == 0 and r["mrr@2"] == pytest.approx(0.5)
  assert r["mrr@4"] == pytest.approx(0.5)
  idcg2 = 1 + 1 / L2(3)
  assert r["ndcg@2"] == pytest.approx((1 / L2(3)) / idcg2, rel=1e-6)
  assert r["ndcg@4"] == pytest.approx((1 / L2(3) + 1 / L2(5)) / idcg2, rel=1e-6)
  # IDCG@1 uses min(|T|, 1) = 1 ideal position; no hit at rank 1.
  assert r["ndcg@1"] == 0


def test_duplicate_items_count_once():
  # The target 4 appears twice: it is one hit, not two.
  r = _one([[4, 4, 9, 1]], [[4, 1]])
  assert r["recall@2"] == 0.5
  assert r["recall@4"] == 1.0
  idcg = 1 + 1 / L2(3)
  assert r["ndcg@4"] == pytest.approx((1 + 1 / L2(5)) / idcg, rel=1e-6)


def test_no_hit_and_all_padding():
  r = _one([[-1, -1, -1, -1], [2, 2, 2, 2]], [[0], [1]])
  for m in ("hr", "recall", "mrr", "ndcg"):
    assert r[f"{m}@4"] == 0
  # -1 in ranked never matches -1 padding in targets.
  r = _one([[-1, 5, -1, -1]], [[5, -1]])
  assert r["hr@1"] == 0 and r["mrr@4"] == 0.5 and r["recall@4"] == 1


def test_graded_ndcg_hand_computed():
  # Labels of the query: item 1 -> 3, item 2 -> 1, item 8 -> 2; item 5 unlabelled.
  ranked = [[5, 2, 1, 1]]
  rel_items, rel_grades = ((1, 2, 8),), ((3, 1, 2),)
  r = _one(ranked, [[2]], rel_items, rel_grades)
  g3, g2, g1 = 7.0, 3.0, 1.0  # 2^g - 1
  dcg4 = 0 + g1 / L2(3) + g3 / L2(4) + 0  # the repeat of item 1 gains nothing
  idcg4 = g3 + g2 / L2(3) + g1 / L2(4)
  assert r["gndcg@4"] == pytest.approx(dcg4 / idcg4, rel=1e-6)
  dcg2, idcg2 = g1 / L2(3), g3 + g2 / L2(3)
  assert r["gndcg@2"] == pytest.approx(dcg2 / idcg2, rel=1e-6)
  assert r["n_graded"] == 1


def test_graded_ndcg_skips_queries_without_positive_labels():
  ranked = [[1, 2, 3, 4], [1, 2, 3, 4]]
  rel_items = [[1, -1], [3, 2]]
  rel_grades = [[0, 0], [2, 0]]  # row 0: only a grade-0 label -> IDCG = 0
  r = metrics.compute(
    np.asarray(ranked),
    np.asarray([[1], [1]]),
    np.asarray(rel_items),
    np.asarray(rel_grades),
    {"all": np.ones(2, bool)},
    ks=(4,),
  )["all"]
  assert r["n"] == 2 and r["n_graded"] == 1
  assert r["gndcg@4"] == pytest.approx((3 / L2(4)) / 3, rel=1e-6)


def test_groups_average_their_rows_only():
  ranked = np.asarray([[1, 0], [0, 1], [2, 3]])
  targets = np.asarray([[1], [1], [1]])
  res = metrics.compute(
    ranked,
    targets,
    np.full((3, 1), -1),
    np.zeros((3, 1)),
    {"a": np.array([1, 1, 0], bool), "b": np.array([0, 0, 1], bool)},
    ks=(1, 2),
  )
  assert res["a"]["n"] == 2 and res["a"]["hr@1"] == 0.5 and res["a"]["mrr@2"] == 0.75
  assert res["b"]["n"] == 1 and res["b"]["hr@2"] == 0
  assert res["a"]["hr_curve"] == [0.5, 1.0]


def test_batches_sum_to_one_batch():
  rng = np.random.default_rng(0)
  e, k, t, r = 37, 12, 3, 4
  ranked = rng.integers(-1, 20, size=(e, k))
  targets = rng.integers(0, 20, size=(e, t))
  targets[:, 1:] = np.where(rng.random((e, t - 1)) < 0.5, -1, targets[:, 1:])
  for i in range(e):  # distinct targets
    row = [x for x in dict.fromkeys(targets[i].tolist()) if x >= 0]
    targets[i] = row + [-1] * (t - len(row))
  rel_items = rng.integers(-1, 20, size=(e, r))
  rel_grades = rng.integers(0, 4, size=(e, r))
  groups = {"all": np.ones(e, bool), "odd": np.arange(e) % 2 == 1}
  args = (ranked, targets, rel_items, rel_grades, groups)
  one = metrics.compute(*args, ks=(1, 5, 12), batch_size=64)
  split = metrics.compute(*args, ks=(1, 5, 12), batch_size=5)
  for g in groups:
    for name, v in one[g].items():
      assert split[g][name] == pytest.approx(v, rel=1e-5), (g, name)
  # And the accumulator merges like one pass.
  acc = metrics.MetricAccumulator(list(groups), (1, 5))
  gm = np.stack([groups[g] for g in groups], 1).astype(np.float32)
  for sl in (slice(0, 20), slice(20, e)):
    acc.add(
      metrics.batch_sums(
        ranked[sl], targets[sl], rel_items[sl], rel_grades[sl], gm[sl], ks=(1, 5)
      )
    )
  merged = acc.result()
  assert merged["odd"]["hr@5"] == pytest.approx(one["odd"]["hr@5"], rel=1e-6)


def test_row_in_group_without_target_is_an_error():
  with pytest.raises(ValueError, match="row 1 is in a group but has no target"):
    metrics.compute(
      np.zeros((2, 3)),
      np.asarray([[1], [-1]]),
      np.full((2, 1), -1),
      np.zeros((2, 1)),
      {"all": np.ones(2, bool)},
      ks=(1,),
    )


def test_beam_diagnostics_hand_computed():
  sid = np.asarray([[4, 4, -1, 2], [1, 3, 1, 1]])
  exact = np.asarray([[4, 2, 7, -1], [1, 3, 5, 6]])
  d = metrics.beam_diagnostics(sid, exact, batch_size=1)
  assert d["valid_sid_rate"] == pytest.approx(7 / 8)
  assert d["duplicate_rate"] == pytest.approx(3 / 7)  # beam 2 of row 0; 2, 3 of row 1
  assert d["beam_recall"] == pytest.approx((2 + 2) / (3 + 4))
  assert "beam_recall" not in metrics.beam_diagnostics(sid)


def test_auc_hand_computed():
  assert (
    metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
  )
  assert metrics.roc_auc(np.array([0, 1]), np.array([1.0, 1.0])) == 0.5


def test_auc_matches_pairwise_count():
  rng = np.random.default_rng(0)
  y = rng.random(40) < 0.3
  s = np.round(rng.random(40), 1)  # ties on purpose
  wins = sum(
    (s[i] > s[j]) + 0.5 * (s[i] == s[j])
    for i, j in itertools.product(np.flatnonzero(y), np.flatnonzero(~y))
  )
  assert metrics.roc_auc(y, s) == pytest.approx(wins / (y.sum() * (~y).sum()))
  assert np.isnan(metrics.roc_auc(np.ones(3, bool), np.zeros(3)))
