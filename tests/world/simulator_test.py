"""write_world: determinism, schema conformance, referential integrity, splits."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import numpy as np
import pytest

from onesearch_jax.world import manifest, schema, simulator
from onesearch_jax.world.config import WorldConfig, config_dict

DAY = 86_400


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def kind_ok(kind: str, value: Any) -> bool:
  """Does a JSON value have the schema kind? (bool is not an int.)"""
  if kind == "str":
    return isinstance(value, str)
  if kind == "int":
    return isinstance(value, int) and not isinstance(value, bool)
  if kind == "float":
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind == "bool":
    return isinstance(value, bool)
  if kind == "list[str]":
    return isinstance(value, list) and all(isinstance(x, str) for x in value)
  if kind == "dict[str,str]":
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
  if kind == "dict[str,float]":
    return isinstance(value, dict) and all(kind_ok("float", v) for v in value.values())
  raise AssertionError(f"unknown kind {kind}")


def row_errors(table: schema.Table, row: dict[str, Any]) -> list[str]:
  """Every schema violation of one row (required missing, wrong kinds)."""
  errors = []
  for f in table.fields:
    if f.name not in row:
      if f.required:
        errors.append(f"missing {f.name}")
      continue
    if not kind_ok(f.kind, row[f.name]):
      errors.append(f"{f.name}: {row[f.name]!r} is not {f.kind}")
  return errors


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_world_dir):
  a = simulator.write_world(WorldConfig.tiny(seed=0), tmp_path / "a")
  b = json.loads((tiny_world_dir / "manifest.json").read_text())
  assert a["content_hash"] == b["content_hash"]
  for name in a["files"]:
    assert (tmp_path / "a" / name).read_bytes() == (
      tiny_world_dir / name
    ).read_bytes(), name
  c = simulator.write_world(WorldConfig.tiny(seed=1), tmp_path / "c")
  assert c["content_hash"] != a["content_hash"]
  assert c["files"]["items.jsonl"] != a["files"]["items.jsonl"]


def test_manifest_hashes_and_counts(tiny_world_dir):
  m = json.loads((tiny_world_dir / "manifest.json").read_text())
  assert m["schema_version"] == 1 and m["source"] == "simulator"
  # The config without the switches that are off (config_dict).
  assert m["config"] == json.loads(json.dumps(config_dict(WorldConfig.tiny(seed=0))))
  for name, digest in m["files"].items():
    assert hashlib.sha256((tiny_world_dir / name).read_bytes()).hexdigest() == digest, (
      name
    )
  expected = hashlib.sha256(
    json.dumps(dict(sorted(m["files"].items()))).encode()
  ).hexdigest()
  assert m["content_hash"] == expected == manifest.content_hash(m["files"])
  for table in schema.TABLES:
    n = len((tiny_world_dir / f"{table}.jsonl").read_text().splitlines())
    assert m["counts"][table] == n > 0, table
  for extra in m["extras"]:
    assert extra in m["files"]


@pytest.fixture(scope="module")
def tables(tiny_world_dir) -> dict[str, list[dict[str, Any]]]:
  """The tiny world's five tables, read once."""
  return {
    t.name: read_jsonl(tiny_world_dir / t.filename) for t in schema.TABLES.values()
  }


def test_every_row_matches_schema(tables):
  for name, table in schema.TABLES.items():
    rows = tables[name]
    bad = [(k + 1, e) for k, r in enumerate(rows) for e in row_errors(table, r)]
    assert not bad, f"{name}: {bad[:5]}"
    if table.key:
      keys = [tuple(r[f] for f in table.key) for r in rows]
      assert len(set(keys)) == len(keys), name
    # The simulator writes every extension field too.
    assert all(set(table.field_names) <= set(r) for r in rows), name


def test_referenced_ids_exist(tables):
  users = {r["user_id"] for r in tables["users"]}
  items = {r["item_id"] for r in tables["items"]}
  for r in tables["recall"]:
    assert r["user_id"] in users
    ids = r["impressed_item_ids"] + r["clicked_item_ids"] + r["purchased_item_ids"]
    assert set(ids) <= items
    assert set(r["clicked_item_ids"]) <= set(r["impressed_item_ids"])
    assert set(r["purchased_item_ids"]) <= set(r["clicked_item_ids"])
    assert len(set(r["impressed_item_ids"])) == len(r["impressed_item_ids"])
  for r in tables["ranking"]:
    assert r["user_id"] in users and r["target_item_id"] in items
    assert (
      set(r["recently_clicked_item_ids"] + r["recently_purchased_item_ids"]) <= items
    )
  for r in tables["relevance"]:
    assert r["item_id"] in items and 0 <= r["score"] <= 3


def test_items_attributes_are_in_title_and_types_known(tables):
  seen_types = set()
  for r in tables["items"]:
    assert r["attributes"]["entity"] == r["category_level3_name"]
    assert r["attributes"]["brand"] == r["brand_name"]
    for t, v in r["attributes"].items():
      assert t in schema.ATTRIBUTE_TYPES, t
      assert v in r["item_title"], (t, v, r["item_title"])
    seen_types.update(r["attributes"])
    assert r["item_price"] > 0
  # Most of the 18 KHQE attribute types occur in a tiny catalogue already.
  assert len(seen_types) >= 16, sorted(set(schema.ATTRIBUTE_TYPES) - seen_types)


def test_temporal_split_last_day_is_test(tables):
  cfg = WorldConfig.tiny(seed=0)
  test_start = (cfg.n_days - 1) * DAY
  recall = tables["recall"]
  times = [r["time_index"] for r in recall]
  assert times == sorted(times)
  for r in recall:
    assert (r["split"] == "test") == (r["time_index"] >= test_start)
    assert 0 <= r["time_index"] < cfg.n_days * DAY
  assert any(r["split"] == "test" for r in recall) and any(
    r["split"] == "train" for r in recall
  )
  split_of = {r["session_id"]: (r["split"], r["time_index"]) for r in recall}
  for r in tables["ranking"]:
    assert split_of[r["session_id"]] == (r["split"], r["time_index"])


def test_ranking_rows_agree_with_recall_and_past_only_history(tables):
  """Brute-force replay of recall in time order gives every ranking feature."""
  recall = tables["recall"]
  price = {r["item_id"]: r["item_price"] for r in tables["items"]}
  by_session = collections.defaultdict(list)
  for r in tables["ranking"]:
    by_session[r["session_id"]].append(r)
  clicks = collections.defaultdict(list)
  orders = collections.defaultdict(list)
  day_shows = collections.Counter()  # (user, day) -> impressions
  item_clicks = collections.Counter()  # (item, day) -> clicks
  for s in recall:
    u, day = s["user_id"], s["time_index"] // DAY
    rows = by_session[s["session_id"]]
    assert len(rows) == len(s["impressed_item_ids"])  # tiny keeps every row
    for r in rows:
      j = r["position"] - 1
      assert s["impressed_item_ids"][j] == r["target_item_id"]
      assert r["is_clicked"] == int(r["target_item_id"] in s["clicked_item_ids"])
      assert r["is_purchased"] == int(r["target_item_id"] in s["purchased_item_ids"])
      assert r["query"] == s["query"] and r["search_entrance"] == s["search_entrance"]
      assert r["target_item_price"] == price[r["target_item_id"]]
      assert r["recently_clicked_item_ids"] == clicks[u][-20:]
      assert r["recently_purchased_item_ids"] == orders[u][-20:]
      shows = sum(day_shows[(u, d)] for d in range(max(0, day - 30), day))
      assert r["user_statistical_features"]["user_show_cnt_30d_hist"] == shows
      ic = sum(
        item_clicks[(r["target_item_id"], d)] for d in range(max(0, day - 30), day)
      )
      assert r["target_item_statistical_features"]["item_click_cnt_30d_hist"] == ic
    clicks[u] += s["clicked_item_ids"]
    orders[u] += s["purchased_item_ids"]
    day_shows[(u, day)] += len(s["impressed_item_ids"])
    for i in s["clicked_item_ids"]:
      item_clicks[(i, day)] += 1


def test_cold_start_users_and_items_present(tables):
  recall = tables["recall"]
  train_users = {r["user_id"] for r in recall if r["split"] == "train"}
  test_users = {r["user_id"] for r in recall if r["split"] == "test"}
  assert len(test_users - train_users) >= 5  # users first seen on the test day
  items = tables["items"]
  publish = {r["item_id"]: r["publish_time_index"] for r in items}
  assert sum(t > 0 for t in publish.values()) >= 0.05 * len(items)
  for r in recall:  # an item is never shown before it is published
    assert all(publish[i] <= r["time_index"] for i in r["impressed_item_ids"])
  train_shown = {
    i for r in recall if r["split"] == "train" for i in r["impressed_item_ids"]
  }
  test_clicked = {
    i for r in recall if r["split"] == "test" for i in r["clicked_item_ids"]
  }
  assert test_clicked - train_shown  # cold items clicked in test


def test_item_latents_follow_text(tiny_world_dir, tables):
  z = np.load(tiny_world_dir / "extras" / "item_latent.npy")
  ids = (tiny_world_dir / "extras" / "item_latent_ids.txt").read_text().split()
  items = tables["items"]
  assert z.dtype == np.float32 and z.shape == (
    len(items),
    WorldConfig.tiny().latent_dim,
  )
  assert ids == [r["item_id"] for r in items]
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
  l3 = np.array([r["category_level3_id"] for r in items])
  brand = np.array([r["brand_id"] for r in items])
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, len(items), (2, 20000))
  cos = np.sum(z[a] * z[b], axis=1)
  same_l3 = (l3[a] == l3[b]) & (a != b)
  same_both = same_l3 & (brand[a] == brand[b])
  assert cos[same_l3].mean() > cos[~same_l3].mean() + 0.3
  assert cos[same_both].mean() > cos[same_l3].mean()


def test_config_validation_and_presets():
  with pytest.raises(ValueError, match="n_days"):
    WorldConfig(n_days=1)
  with pytest.raises(ValueError, match="ranking_negative_rate"):
    WorldConfig(ranking_negative_rate=0.0)
  assert WorldConfig.tiny().n_items == 1_000 and WorldConfig.tiny().n_users == 300
  assert 5_000 <= WorldConfig.default().n_items <= 20_000
  assert WorldConfig.large().n_items >= 1_000_000


def test_ranking_negative_sampling_keeps_all_clicks(tmp_path):
  cfg = WorldConfig(
    n_items=300,
    n_users=60,
    n_days=3,
    brands_per_l1=4,
    sellers_per_l1=3,
    ranking_negative_rate=0.25,
    relevance_pairs=50,
  )
  m = simulator.write_world(cfg, tmp_path)
  assert m["ranking_negative_rate"] == 0.25
  recall = read_jsonl(tmp_path / "recall.jsonl")
  ranking = read_jsonl(tmp_path / "ranking.jsonl")
  n_clicks = sum(len(r["clicked_item_ids"]) for r in recall)
  n_imp = sum(len(r["impressed_item_ids"]) for r in recall)
  assert sum(r["is_clicked"] for r in ranking) == n_clicks
  kept_neg = sum(1 - r["is_clicked"] for r in ranking) / (n_imp - n_clicks)
  assert 0.18 < kept_neg < 0.32


def test_validation_day_is_carved_from_the_training_days(tmp_path):
  """eval_day='validation': the test day is gone, the day before is the eval
  split, and every earlier row is byte-identical to the normal world's."""
  cfg = dataclasses.replace(WorldConfig.tiny(seed=0), n_items=300, n_users=80, n_days=5)
  tiny_world_dir, val = tmp_path / "test", tmp_path / "val"
  simulator.write_world(cfg, tiny_world_dir)
  simulator.write_world(dataclasses.replace(cfg, eval_day="validation"), val)
  day = 86_400
  for name in ("recall.jsonl", "ranking.jsonl"):
    full = [json.loads(x) for x in (tiny_world_dir / name).read_text().splitlines()]
    got = [json.loads(x) for x in (val / name).read_text().splitlines()]
    last, held = cfg.n_days - 1, cfg.n_days - 2
    assert all(r["time_index"] // day < last for r in got)
    assert {r["split"] for r in got if r["time_index"] // day == held} == {"test"}
    assert {r["split"] for r in got if r["time_index"] // day < held} == {"train"}
    want = [r for r in full if r["time_index"] // day < last]
    assert [{**r, "split": "x"} for r in got] == [{**r, "split": "x"} for r in want]
  for name in ("items.jsonl", "users.jsonl"):
    assert (val / name).read_bytes() == (tiny_world_dir / name).read_bytes()
  with pytest.raises(ValueError, match="eval_day"):
    WorldConfig(eval_day="dev")
