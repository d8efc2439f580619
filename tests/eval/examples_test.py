"""The eval set: same sessions/targets as data.tasks, slices, relevance."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from onesearch_jax.data import museq
from onesearch_jax.eval import evaluate, examples
from onesearch_jax.world import reader


@pytest.fixture(scope="module")
def tiny(tiny_world_dir):
  return reader.load_world(tiny_world_dir)


def _targets(row):
  return [int(x) for x in row if x >= 0]


@pytest.mark.parametrize("with_sid_share", [1.0, 0.5])
def test_same_sessions_and_targets_as_museq_eval_examples(tiny, with_sid_share):
  items = [r["item_id"] for r in tiny.items]
  keep = items[: int(len(items) * with_sid_share)]
  codes = {i: np.zeros(5, np.int32) for i in keep}
  index = museq.MuSeqIndex(
    tiny.users, tiny.items, tiny.recall, codes, (8, 8, 8, 8, 8), museq.MuSeqConfig()
  )
  es = examples.build_eval_set(tiny, sid_items=keep)
  for kind in examples.KINDS:
    want = index.eval_examples(kind)
    rows = es.rows_of(kind)
    assert [es.session_ids[r] for r in rows] == [ex.session.session_id for ex in want]
    got_t = [[es.item_ids[i] for i in _targets(es.targets(kind)[r])] for r in rows]
    assert got_t == [list(ex.targets) for ex in want]
    assert [es.queries[r] for r in rows] == [ex.session.query for ex in want]
    assert [es.user_ids[r] for r in rows] == [ex.session.user_id for ex in want]
  # Every kept row is in at least one set; rows are test sessions only.
  assert np.all(es.has_click | es.has_order)
  test_ids = {r["session_id"] for r in tiny.recall if r["split"] == "test"}
  assert set(es.session_ids) <= test_ids
  if with_sid_share < 1:
    assert es.skips["click_target_without_sid"] > 0


def test_queries_without_sid_are_dropped_and_counted(tiny):
  full = examples.build_eval_set(tiny)
  drop = full.queries[0]
  qs = {r["query"] for r in tiny.recall} - {drop}
  es = examples.build_eval_set(tiny, sid_queries=qs)
  assert drop not in es.queries
  assert len(es) == len(full) - full.queries.count(drop)
  assert es.skips["session_query_without_sid"] == full.queries.count(drop)


def test_slices_partition_and_definitions(tiny):
  es = examples.build_eval_set(tiny)
  train = [r for r in tiny.recall if r["split"] == "train"]
  train_users = {r["user_id"] for r in train}
  clicked = {i for r in train for i in r["clicked_item_ids"]}
  for kind in examples.KINDS:
    groups = evaluate.slice_groups(es, kind)
    mask = groups["all"]
    for family, labels in (
      ("query_freq", examples.QUERY_FREQ),
      ("user", examples.COLD_WARM),
      ("item", examples.COLD_WARM),
    ):
      stacked = np.stack([groups[f"{family}={v}"] for v in labels])
      assert np.array_equal(stacked.sum(axis=0), mask.astype(int))  # a partition
    for r in np.flatnonzero(mask):
      assert (es.user_slice[r] == "cold") == (es.user_ids[r] not in train_users)
      tgt = [es.item_ids[i] for i in _targets(es.targets(kind)[r])]
      cold = not any(t in clicked for t in tgt)
      assert (es.item_slice(kind)[r] == "cold") == cold
  # Both cold and warm users exist in the tiny world's test day.
  assert set(es.user_slice) == {"cold", "warm"}
  # Head queries cover about head_share of train sessions (boundary ties go up).
  counts = collections.Counter(r["query"] for r in train)
  freq = examples.query_frequency_slices(counts, examples.SliceConfig())
  head = sum(c for q, c in counts.items() if freq[q] == "head")
  torso = sum(c for q, c in counts.items() if freq[q] == "torso")
  assert head >= 0.5 * len(train) and head + torso >= 0.8 * len(train)
  assert min(counts[q] for q in counts if freq[q] == "head") >= max(
    counts[q] for q in counts if freq[q] == "torso"
  )


def test_query_frequency_thresholds_hand_example():
  counts = {"a": 5, "b": 3, "c": 1, "d": 1}  # 10 sessions
  got = examples.query_frequency_slices(counts, examples.SliceConfig(0.5, 0.3))
  # a: cum before 0 < 5 -> head; b: cum 5 (not < 5) < 8 -> torso;
  # c, d share count 1: cum 8 -> tail (ties stay together).
  assert got == {"a": "head", "b": "torso", "c": "tail", "d": "tail"}
  got = examples.query_frequency_slices(counts, examples.SliceConfig(0.6, 0.3))
  assert got == {"a": "head", "b": "head", "c": "torso", "d": "torso"}
  with pytest.raises(ValueError, match="head_share"):
    examples.SliceConfig(0.8, 0.5)


def _write(path, name, rows):
  with open(path / f"{name}.jsonl", "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


def test_relevance_labels_by_item_id_or_title(tmp_path):
  item = {
    "brand_id": "b",
    "brand_name": "acme",
    "seller_id": "s",
    "seller_name": "shop",
    **{f"category_level{i}_{k}": f"c{i}" for i in (1, 2, 3) for k in ("id", "name")},
  }
  items = [dict(item, item_id=f"i{n}", item_title=f"thing {n}") for n in range(3)]
  session = {
    "user_id": "u",
    "query": "q",
    "impressed_item_ids": ["i0", "i1"],
    "purchased_item_ids": [],
    "time_index": 0,
  }
  recall = [
    dict(session, session_id="s0", clicked_item_ids=["i0"], split="train"),
    dict(session, session_id="s1", clicked_item_ids=["i1", "i1"], split="test"),
  ]
  rel = {"query": "q", "brand": "acme", "seller_name": "shop", "attr_value": ""}
  relevance = [
    dict(rel, item_title="thing 0", score=3, item_id="i0"),
    dict(rel, item_title="thing 2", score=2),  # resolved by title
    dict(rel, item_title="no such thing", score=1),  # unmatched, counted
  ]
  _write(tmp_path, "items", items)
  _write(tmp_path, "recall", recall)
  _write(tmp_path, "relevance", relevance)
  es = examples.build_eval_set(tmp_path)
  assert len(es) == 1 and es.session_ids == ("s1",)
  assert _targets(es.click_targets[0]) == [1]  # the repeated click kept once
  assert es.skips == {"click_target_repeated": 1, "relevance_item_unmatched": 1}
  labels = dict(zip(es.rel_items[0].tolist(), es.rel_grades[0].tolist(), strict=True))
  assert labels == {0: 3, 2: 2}
  assert es.user_slice[0] == "warm" and es.click_item_slice[0] == "cold"
  assert es.query_freq[0] == "head"
  with pytest.raises(FileNotFoundError, match="ranking|missing|not a world"):
    examples.build_eval_set(tmp_path / "nope")
