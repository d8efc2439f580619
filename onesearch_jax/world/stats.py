"""Summary statistics of a world directory, read back from its JSONL files."""

from __future__ import annotations

import collections
import os
import pathlib
from collections.abc import Iterator
from typing import Any

from onesearch_jax.world import jsonl, reader
from onesearch_jax.world.complex_intents import COMPLEX_TYPES

LENGTH_BUCKETS = ("1", "2", "3", "4", "5", "6+")


def _rows(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  for _, row in jsonl.iter_jsonl(path, name=path.name):
    yield row


def length_bucket(query: str) -> str:
  """Histogram bucket of a query by whitespace-separated words."""
  n = len(query.split())
  return str(n) if n < 6 else "6+"


def compute_stats(world_dir: str | os.PathLike) -> dict[str, Any]:
  """Streams the world's files once and summarises them.

  Args:
    world_dir: a directory in the KuaiSearch schema (extras optional).

  Returns:
    A JSON-able dict: sizes, CTR/CVR, popularity concentration, query length
    histogram, query-type mix (and, when the world has complex queries, the
    share of them among non-repeat searches), cold-start shares, relevance
    label mix.
  """
  d = pathlib.Path(world_dir)
  n_items = 0
  new_items = 0
  for row in _rows(d / "items.jsonl"):
    n_items += 1
    new_items += int(row.get("publish_time_index", 0) > 0)
  n_users = sum(1 for _ in _rows(d / "users.jsonl"))

  sessions = collections.Counter()
  impressions = clicks = orders = 0
  pos_shown = collections.Counter()
  pos_click = collections.Counter()
  item_clicks = collections.Counter()
  query_count = collections.Counter()
  lengths = collections.Counter()
  train_users, test_users = set(), set()
  train_clicked, test_clicked = set(), set()
  for row in _rows(d / "recall.jsonl"):
    split = row["split"]
    sessions[split] += 1
    impressions += len(row["impressed_item_ids"])
    clicks += len(row["clicked_item_ids"])
    orders += len(row["purchased_item_ids"])
    clicked = set(row["clicked_item_ids"])
    for p, i in enumerate(row["impressed_item_ids"], start=1):
      pos_shown[p] += 1
      pos_click[p] += i in clicked
    item_clicks.update(row["clicked_item_ids"])
    query_count[row["query"]] += 1
    lengths[length_bucket(row["query"])] += 1
    (train_users if split == "train" else test_users).add(row["user_id"])
    (train_clicked if split == "train" else test_clicked).update(clicked)

  n_sessions = sum(sessions.values())
  top = sorted(item_clicks.values(), reverse=True)[: max(1, n_items // 10)]
  q_sorted = sorted(query_count.values(), reverse=True)
  head = q_sorted[: max(1, len(q_sorted) // 100)]

  qtypes: dict[str, float] | None = None
  complex_mix: dict[str, float] = {}  # only for worlds with complex queries
  intents = d / "extras" / "query_intents.jsonl"
  if intents.exists():
    c = collections.Counter()
    for row in _rows(intents):
      c[row["type"]] += row["count"]
    total = sum(c.values()) or 1
    qtypes = {k: v / total for k, v in sorted(c.items())}
    if any(t in COMPLEX_TYPES for t in c):
      # What WorldConfig.complex_query_share sets: complex among fresh searches.
      fresh = sum(v for t, v in c.items() if t != "repeat") or 1
      complex_mix = {
        "complex_query_share": sum(c[t] for t in COMPLEX_TYPES) / fresh,
      }

  labels = collections.Counter(row["score"] for row in _rows(d / "relevance.jsonl"))
  n_labels = sum(labels.values()) or 1
  ranking = ranking_clicked = 0
  for row in _rows(pathlib.Path(reader.table_path(d, "ranking"))):
    ranking += 1
    ranking_clicked += row["is_clicked"]

  return {
    "items": n_items,
    "items_published_later": new_items,
    "users": n_users,
    "sessions_train": sessions["train"],
    "sessions_test": sessions["test"],
    "impressions": impressions,
    "clicks": clicks,
    "orders": orders,
    "ctr": clicks / max(impressions, 1),
    "cvr": orders / max(clicks, 1),
    "ctr_by_position": {str(p): pos_click[p] / pos_shown[p] for p in sorted(pos_shown)},
    "top10pct_item_click_share": sum(top) / max(clicks, 1),
    "distinct_queries": len(query_count),
    "top1pct_query_session_share": sum(head) / max(n_sessions, 1),
    "singleton_query_share": sum(1 for v in q_sorted if v == 1) / max(len(q_sorted), 1),
    "query_length_hist": {b: lengths[b] / max(n_sessions, 1) for b in LENGTH_BUCKETS},
    "query_type_mix": qtypes,
    **complex_mix,
    "cold_user_share_test": len(test_users - train_users) / max(len(test_users), 1),
    "cold_item_share_test_clicks": len(test_clicked - train_clicked)
    / max(len(test_clicked), 1),
    "relevance_label_mix": {str(k): labels[k] / n_labels for k in range(4)},
    "ranking_rows": ranking,
    "ranking_ctr": ranking_clicked / max(ranking, 1),
  }


def format_stats(stats: dict[str, Any]) -> str:
  """Human-readable multi-line rendering of compute_stats()."""

  def fmt(v: Any) -> str:
    if isinstance(v, float):
      return f"{v:.4f}"
    if isinstance(v, dict):
      return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    return str(v)

  width = max(len(k) for k in stats)
  return "\n".join(f"{k.ljust(width)}  {fmt(v)}" for k, v in stats.items())
