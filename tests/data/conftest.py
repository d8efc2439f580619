"""Fixtures of the data tests: a small random world and its synthetic SIDs.

The world is written here (not by the simulator) so the tests control every
session: a few users, three L1 categories, English and Chinese text, and a
last day in the test split.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from onesearch_jax.data.sid_table import SIDTable

CATEGORIES = [  # (l1, l2, l3, title words, queries)
  (
    "Clothing",
    "Women",
    "Dresses",
    ["red", "dress", "summer"],
    ["red dress", "summer dress"],
  ),
  ("Clothing", "Men", "Shoes", ["running", "shoes", "light"], ["running shoes"]),
  ("Food", "Snacks", "Nuts", ["nuts", "gift", "box"], ["nut gift box", "坚果零食"]),
  ("Digital", "Phones", "Phones", ["phone", "5G", "华为"], ["华为手机 5G", "phone"]),
]


def write_world(
  out: pathlib.Path,
  *,
  n_users: int = 12,
  n_items: int = 40,
  n_days: int = 5,
  sessions_per_day: int = 2,
  seed: int = 0,
) -> pathlib.Path:
  """Writes users/items/recall (+ empty ranking/relevance) jsonl files."""
  rng = np.random.default_rng(seed)
  out.mkdir(parents=True, exist_ok=True)
  items = []
  by_cat: dict[int, list[str]] = {}
  for i in range(n_items):
    c = i % len(CATEGORIES)
    l1, l2, l3, words, _ = CATEGORIES[c]
    item_id = f"i{i:03d}"
    by_cat.setdefault(c, []).append(item_id)
    title = " ".join(rng.permutation(words).tolist()) + f" model{i}"
    items.append(
      {
        "item_id": item_id,
        "item_title": title,
        "brand_id": f"b{c}",
        "brand_name": f"brand{c}",
        "seller_id": f"s{c}",
        "seller_name": f"seller{c}",
        "category_level1_id": f"c1_{l1}",
        "category_level1_name": l1,
        "category_level2_id": f"c2_{l1}_{l2}",
        "category_level2_name": l2,
        "category_level3_id": f"c3_{l1}_{l2}_{l3}",
        "category_level3_name": l3,
      }
    )
  users = [
    {
      "user_id": f"u{u:02d}",
      "gender": ("female", "male")[u % 2],
      "age_bucket": ("18-23", "24-30", "50+")[u % 3],
      "fre_country": "cn",
      "fre_province": "p",
      "fre_city": "c",
    }
    for u in range(n_users)
  ]
  recall = []
  sid = 0
  for day in range(n_days):
    for u in range(n_users):
      for _ in range(sessions_per_day):
        c = int(rng.integers(len(CATEGORIES)))
        queries = CATEGORIES[c][4]
        shown = rng.choice(by_cat[c], size=4, replace=False).tolist()
        clicked = [x for x in shown if rng.random() < 0.4]
        purchased = [x for x in clicked if rng.random() < 0.5]
        recall.append(
          {
            "user_id": f"u{u:02d}",
            "session_id": f"s{sid:05d}",
            "query": queries[int(rng.integers(len(queries)))],
            "impressed_item_ids": shown,
            "clicked_item_ids": clicked,
            "purchased_item_ids": purchased,
            "time_index": day * 86400 + int(rng.integers(86400)),
            "split": "test" if day == n_days - 1 else "train",
          }
        )
        sid += 1
  for name, rows in (("users", users), ("items", items), ("recall", recall)):
    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
  for name in ("ranking", "relevance"):
    (out / f"{name}.jsonl").write_text("")
  return out


def table_for(world_dir: pathlib.Path, seed: int = 0, **kw) -> SIDTable:
  """A synthetic SID table over every item and query of a world."""
  items = [json.loads(x)["item_id"] for x in open(world_dir / "items.jsonl")]
  queries = sorted(
    {json.loads(x)["query"] for x in open(world_dir / "recall.jsonl", encoding="utf-8")}
  )
  return SIDTable.synthetic(items, queries, seed=seed, **kw)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> pathlib.Path:
  return write_world(tmp_path_factory.mktemp("data_world"))


@pytest.fixture(scope="session")
def small_table(small_world) -> SIDTable:
  return table_for(small_world)


@pytest.fixture(scope="session")
def registered(small_world, small_table):
  from onesearch_jax.data import tasks

  return tasks.register_tasks(small_world, sid_table=small_table, prefix="test_small")
