"""compute_stats / format_stats on a hand-written world with known answers."""

from __future__ import annotations

import json

import pytest

from onesearch_jax.world import stats


def _write(path, rows):
  path.write_text(
    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
  )


@pytest.fixture()
def hand_world(tmp_path):
  items = [
    {"item_id": f"i{k}", "publish_time_index": 100 if k == 9 else 0} for k in range(10)
  ]
  _write(tmp_path / "items.jsonl", items)
  _write(tmp_path / "users.jsonl", [{"user_id": u} for u in ("a", "b", "c")])
  recall = [
    # train: a clicks i0 twice (two sessions), b clicks i1.
    {
      "user_id": "a",
      "query": "red dress",
      "impressed_item_ids": ["i0", "i1"],
      "clicked_item_ids": ["i0"],
      "purchased_item_ids": ["i0"],
      "split": "train",
    },
    {
      "user_id": "a",
      "query": "红色连衣裙",
      "impressed_item_ids": ["i0", "i2", "i3"],
      "clicked_item_ids": ["i0"],
      "purchased_item_ids": [],
      "split": "train",
    },
    {
      "user_id": "b",
      "query": "red dress",
      "impressed_item_ids": ["i1"],
      "clicked_item_ids": ["i1"],
      "purchased_item_ids": [],
      "split": "train",
    },
    # test: c is new; clicks i9 (never clicked in train) and i0.
    {
      "user_id": "c",
      "query": "a b c d e f g",
      "impressed_item_ids": ["i9", "i0", "i4", "i5"],
      "clicked_item_ids": ["i9", "i0"],
      "purchased_item_ids": [],
      "split": "test",
    },
  ]
  _write(tmp_path / "recall.jsonl", recall)
  _write(
    tmp_path / "ranking.jsonl",
    [{"is_clicked": 1}, {"is_clicked": 0}, {"is_clicked": 0}, {"is_clicked": 0}],
  )
  _write(tmp_path / "relevance.jsonl", [{"score": s} for s in (3, 3, 2, 0)])
  return tmp_path


def test_compute_stats_hand_computed(hand_world):
  s = stats.compute_stats(hand_world)
  assert (s["items"], s["items_published_later"], s["users"]) == (10, 1, 3)
  assert (s["sessions_train"], s["sessions_test"]) == (3, 1)
  assert (s["impressions"], s["clicks"], s["orders"]) == (10, 5, 1)
  assert s["ctr"] == pytest.approx(0.5) and s["cvr"] == pytest.approx(0.2)
  # Position 1 shown 4 times, clicked 4 times (i0, i0, i1, i9); position 2: i0 in test.
  assert s["ctr_by_position"] == {
    "1": 1.0,
    "2": pytest.approx(1 / 3),
    "3": 0.0,
    "4": 0.0,
  }
  # Top 10% of 10 items = 1 item: i0 with 3 of 5 clicks.
  assert s["top10pct_item_click_share"] == pytest.approx(0.6)
  assert s["distinct_queries"] == 3
  assert s["singleton_query_share"] == pytest.approx(2 / 3)
  assert s["query_length_hist"] == {
    "1": 0.25,
    "2": 0.5,
    "3": 0.0,
    "4": 0.0,
    "5": 0.0,
    "6+": 0.25,
  }
  assert s["query_type_mix"] is None  # no extras/query_intents.jsonl
  assert s["cold_user_share_test"] == 1.0
  assert s["cold_item_share_test_clicks"] == 0.5
  assert s["relevance_label_mix"] == {"0": 0.25, "1": 0.0, "2": 0.25, "3": 0.5}
  assert s["ranking_rows"] == 4 and s["ranking_ctr"] == 0.25


def test_format_stats_lists_every_key(hand_world):
  s = stats.compute_stats(hand_world)
  text = stats.format_stats(s)
  lines = text.splitlines()
  assert len(lines) == len(s)
  for key, line in zip(s, lines, strict=True):
    assert line.startswith(key)
  assert "0.5000" in text  # floats with 4 decimals


def test_query_type_mix_weighted_by_count(hand_world):
  (hand_world / "extras").mkdir()
  _write(
    hand_world / "extras" / "query_intents.jsonl",
    [
      {"query": "red dress", "type": "category_attribute", "count": 3},
      {"query": "x", "type": "category", "count": 1},
    ],
  )
  assert stats.compute_stats(hand_world)["query_type_mix"] == {
    "category": 0.25,
    "category_attribute": 0.75,
  }
