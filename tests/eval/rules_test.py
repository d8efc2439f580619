"""The sidq_pop / query_memory rule baselines on a hand-made world, against
hand-computed rankings and a brute-force re-implementation."""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest

from onesearch_jax.eval import config as eval_config
from onesearch_jax.eval import evaluate
from onesearch_jax.eval.baselines import NAMES, rules

# Item ids chosen so that string order ("i10" < "i2") differs from row order.
ITEMS = ("i2", "i10", "i3", "i1", "i4", "i0")
# Level-1 code per item row: cluster 7 = {i2, i10, i3}, cluster 5 = {i1, i4},
# i0 has no SID (-1).
LEVEL1 = np.asarray([7, 7, 7, 5, 5, -1])
QUERY_L1 = {"boots": 7, "cream": 5, "rare": 9}


def _row(query, clicked, split="train"):
  return {"query": query, "clicked_item_ids": list(clicked), "split": split}


RECALL = [
  _row("boots", ["i3", "i10"]),
  _row("boots", ["i3"]),
  _row("cream", ["i10", "i1"]),
  _row("cream", ["i4"]),
  _row("other", ["i0", "i0"]),  # listed twice: two clicks
  _row("boots", ["i2", "i2", "i2", "i2"], split="test"),  # test day: ignored
  _row("boots", ["i4", "i4", "i4", "i4"], split="valid"),  # ignored too
  _row("cream", ["unknown-item"]),  # not in the catalogue: ignored
]
# Train clicks: i3 2, i10 2, i0 2, i1 1, i4 1, i2 0.


def _ranker():
  return rules.RuleRanker(ITEMS, LEVEL1, QUERY_L1, RECALL)


def _ids(rows):
  return [ITEMS[r] if r >= 0 else None for r in rows]


def test_counts_use_train_clicks_only():
  r = _ranker()
  assert dict(zip(ITEMS, r.clicks.tolist(), strict=True)) == {
    "i2": 0, "i10": 2, "i3": 2, "i1": 1, "i4": 1, "i0": 2,
  }  # fmt: skip
  # Global order: clicks desc, ties by item id ascending as strings.
  assert _ids(r.global_order) == ["i0", "i10", "i3", "i1", "i4", "i2"]


def test_sidq_pop_hand_computed():
  r = _ranker()
  out = r.rank("sidq_pop", ["boots", "cream", "rare", "no-sid query"], 6)
  # boots -> cluster 7 {i10 2, i3 2, i2 0}, then the rest globally.
  assert _ids(out[0]) == ["i10", "i3", "i2", "i0", "i1", "i4"]
  # cream -> cluster 5 {i1 1, i4 1}: tie, id ascending.
  assert _ids(out[1]) == ["i1", "i4", "i0", "i10", "i3", "i2"]
  # A SID cluster without items: global popularity alone.
  assert _ids(out[2]) == ["i0", "i10", "i3", "i1", "i4", "i2"]
  # No SID: global train popularity.
  assert _ids(out[3]) == _ids(r.global_order)
  # Truncation and padding.
  assert _ids(r.rank("sidq_pop", ["boots"], 2)[0]) == ["i10", "i3"]
  padded = r.rank("sidq_pop", ["boots"], 8)
  assert padded.dtype == np.int32 and padded[0, 6:].tolist() == [-1, -1]


def test_query_memory_hand_computed():
  r = _ranker()
  out = r.rank("query_memory", ["boots", "cream", "other", "never seen"], 6)
  # boots train clicks: i3 2, i10 1; then sidq_pop(boots) without them.
  assert _ids(out[0]) == ["i3", "i10", "i2", "i0", "i1", "i4"]
  # cream: i10 1, i1 1, i4 1 -> tie by id ("i1" < "i10" < "i4"); then cluster 5
  # minus those (nothing left), then global.
  assert _ids(out[1]) == ["i1", "i10", "i4", "i0", "i3", "i2"]
  # other (no SID): i0, then global popularity.
  assert _ids(out[2]) == ["i0", "i10", "i3", "i1", "i4", "i2"]
  # A query never clicked in train: its sidq_pop list (here global).
  assert _ids(out[3]) == _ids(r.global_order)


def _brute(items, level1, query_l1, recall, query, system):
  clicks = {i: 0 for i in items}
  per_q = {}
  for row in recall:
    if row["split"] != "train":
      continue
    for i in row["clicked_item_ids"]:
      if i in clicks:
        clicks[i] += 1
        per_q.setdefault(row["query"], {}).setdefault(i, 0)
        per_q[row["query"]][i] += 1
  code = query_l1.get(query)
  l1 = dict(zip(items, level1, strict=True))
  key = lambda i: (code is None or l1[i] != code, -clicks[i], i)  # noqa: E731
  pop = sorted(items, key=key)
  if system == "sidq_pop":
    return pop
  mem = per_q.get(query, {})
  first = sorted(mem, key=lambda i: (-mem[i], i))
  return first + [i for i in pop if i not in mem]


def test_random_worlds_match_brute_force():
  rng = np.random.default_rng(0)
  for trial in range(20):
    n = int(rng.integers(1, 30))
    items = [f"i{x}" for x in rng.permutation(3 * n)[:n]]
    level1 = rng.integers(-1, 4, n)
    queries = [f"q{x}" for x in range(6)]
    query_l1 = {q: int(rng.integers(0, 5)) for q in queries[:4]}
    recall = [
      _row(
        str(rng.choice(queries)),
        list(rng.choice(items, int(rng.integers(0, 4)))),
        str(rng.choice(["train", "train", "test", "valid"])),
      )
      for _ in range(40)
    ]
    r = rules.RuleRanker(items, level1, query_l1, recall)
    for system, q in itertools.product(NAMES[-2:], queries + ["unseen"]):
      k = int(rng.integers(1, n + 3))
      got = r.rank(system, [q], k)[0]
      want = _brute(items, level1.tolist(), query_l1, recall, q, system)[:k]
      assert [items[x] for x in got if x >= 0] == want, (trial, system, q)
      assert (got[len(want) :] == -1).all()


def test_from_artefact_maps_item_order_and_query_codes():
  art = types.SimpleNamespace(
    item_ids=("i0", "i1", "i2"),
    item_codes=np.asarray([[4, 0, 1], [3, 1, 1], [4, 2, 0]]),
    query_texts=("q", "z"),
    query_codes=np.asarray([[4, 0, 0], [3, 0, 0]]),
  )
  # Eval order differs from the artefact's and has an item without a SID.
  r = rules.from_artefact(art, ["i2", "ix", "i0", "i1"], [_row("q", ["i1"])])
  assert r.item_level1.tolist() == [4, -1, 4, 3]
  assert r.query_level1 == {"q": 4, "z": 3}
  assert _ids_of(r, r.rank("sidq_pop", ["q"], 4)[0]) == ["i0", "i2", "i1", "ix"]


def _ids_of(r, rows):
  return [r.item_ids[x] for x in rows]


def test_rules_are_default_baselines_everywhere():
  from onesearch_jax import configs

  assert set(NAMES[-2:]) == {"sidq_pop", "query_memory"}
  assert evaluate.BASELINES == NAMES
  assert eval_config.EvalConfig().baselines == NAMES
  assert configs.eval_config().baselines == NAMES
  with pytest.raises(ValueError, match="unknown"):
    rules.RuleRanker(ITEMS, LEVEL1, QUERY_L1, RECALL).rank("nope", ["a"], 2)
