"""Query sensitivity (qsens@10) on synthetic rankings; example searches."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.eval import evaluate, examples, searches, sensitivity

PAD = [-1] * 10


def _set() -> examples.EvalSet:
  # 6 rows over 12 items; row 5 has an order only. Distinct click queries:
  # a (row 0, cat X), b (row 1, Y), c (row 3, X), d (row 4, Z); row 2 repeats a.
  s = lambda *v: np.asarray(v)  # noqa: E731
  n = 6
  cats = ("X", "Y", "Y", "X", "Z") + ("W",) * 7
  return examples.EvalSet(
    item_ids=tuple(f"i{k}" for k in range(12)),
    queries=("a", "b", "a", "c", "d", "e"),
    user_ids=tuple(f"u{k}" for k in range(n)),
    session_ids=tuple(f"s{k}" for k in range(n)),
    times=np.arange(n),
    has_click=s(True, True, True, True, True, False),
    has_order=s(False, False, False, False, False, True),
    click_targets=s([0, 1], [2, -1], [2, -1], [3, -1], [4, -1], [-1, -1]),
    order_targets=s([-1], [-1], [-1], [-1], [-1], [5]),
    rel_items=np.full((n, 1), -1),
    rel_grades=np.zeros((n, 1), int),
    query_freq=np.asarray(["tail"] * n),
    user_slice=np.asarray(["warm"] * n),
    click_item_slice=np.asarray(["warm"] * n),
    order_item_slice=np.asarray(["warm"] * n),
    train_query_counts={},
    skips={},
    item_categories=cats,
  )


def _rankings():
  same = list(range(10))
  mixed = [
    list(range(10)),  # a
    [0, 1, 2, 3, 4, 10, 11, -1, -1, -1],  # b
    [11] * 10,  # a again: never used (a's first row is row 0)
    [5, 6, 7, 8, 9, 0, 1, -1, -1, -1],  # c (overlaps a by 7, same category)
    PAD,  # d
    same,
  ]
  sharp = [[k] + [-1] * 9 for k in range(6)]
  return {
    "blind": np.asarray([same] * 6),
    "sharp": np.asarray(sharp),
    "mixed": np.asarray(mixed),
  }


def test_query_rows_and_pairs():
  es = _set()
  rows, cats = sensitivity.query_rows(es)
  assert rows.tolist() == [0, 1, 3, 4] and cats == ["X", "Y", "X", "Z"]
  pairs = sensitivity.sample_pairs(cats)
  # (a, c) share category X: left out.
  assert pairs.tolist() == [[0, 1], [0, 3], [1, 2], [1, 3], [2, 3]]


def test_qsens_hand_computed_in_results():
  es = _set()
  res = evaluate.evaluate_rankings(es, _rankings(), ks=(1, 10))
  assert res["query_sensitivity"] == {"k": 10, "queries": 4, "pairs": 5, "seed": 0}
  got = {n: s["qsens@10"] for n, s in res["systems"].items()}
  # mixed: (a,b) 5/10, (a,d) 0, (b,c) 2/10, (b,d) 0, (c,d) 0 -> 0.7 / 5.
  assert got == pytest.approx({"blind": 1.0, "sharp": 0.0, "mixed": 0.14})
  md = evaluate.results_markdown(res)
  assert "qsens@10 |" in md and "| mixed |" in md and "0.1400 |" in md
  assert "qsens@10" in evaluate.summary_table(res)


def test_qsens_without_categories_is_nan():
  import dataclasses

  es = dataclasses.replace(_set(), item_categories=())
  res = evaluate.evaluate_rankings(es, _rankings(), ks=(1, 10))
  assert res["query_sensitivity"]["pairs"] == 0
  assert np.isnan(res["systems"]["blind"]["qsens@10"])


def test_sample_pairs_is_seeded_and_capped():
  # 780 pairs; 14 + 13 + 13 per category: 780 - 91 - 78 - 78 = 533 differ.
  cats = [str(k % 3) for k in range(40)]
  a = sensitivity.sample_pairs(cats, max_pairs=100, seed=1)
  assert a.shape == (100, 2) and (a == sensitivity.sample_pairs(cats, 100, 1)).all()
  assert len({tuple(p) for p in a.tolist()}) == 100
  assert all(i < j and cats[i] != cats[j] for i, j in a.tolist())
  assert len(sensitivity.sample_pairs(cats, max_pairs=10_000)) == 533
  # Many queries: rejection sampling, same guarantees.
  big = [str(k % 5) for k in range(2000)]
  b = sensitivity.sample_pairs(big, max_pairs=300, seed=0)
  assert b.shape == (300, 2) and len({tuple(p) for p in b.tolist()}) == 300
  assert all(i < j and big[i] != big[j] for i, j in b.tolist())
  assert (b == sensitivity.sample_pairs(big, max_pairs=300, seed=0)).all()


def test_example_searches():
  es = _set()
  items = [
    {
      "item_id": f"i{k}",
      "item_title": f"title {k}",
      "category_level1_name": es.item_categories[k].lower(),
      "category_level2_name": "l2",
      "category_level3_name": "l3",
    }
    for k in range(12)
  ]
  # One per new category, in row order: rows 0 (X), 1 (Y), 4 (Z).
  assert searches.pick_rows(es, n=5) == [0, 1, 4]
  assert searches.pick_rows(es, n=2) == [0, 1]
  rankings = _rankings()
  text = searches.example_searches(es, {"onesearch": rankings["mixed"]}, items, n=3)
  assert text.count("\n## ") == 3
  assert '## 1. "a" (user u0, session s0)' in text
  # Row 0 clicked i0 and i1: best rank 1. Row 1 clicked i2: rank 3. Row 4: none.
  assert "ranking: rank 1\n" in text and "ranking: rank 3\n" in text
  assert "not in top-10" in text
  assert "| 1 | i0 (clicked) | title 0 | x > l2 > l3 |" in text
  assert "| 2 | i1 (clicked) |" in text and "| 6 |" not in text
  assert searches.example_searches(es, {"bm25": rankings["mixed"]}, items) == ""
