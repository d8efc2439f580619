"""The tiny world's statistics against real data and the brief's target ranges."""

from __future__ import annotations

import collections
import csv
import json
import pathlib

import pytest

from onesearch_jax.world import lexicon, stats
from onesearch_jax.world.relevance import KUAISEARCH_MIX


def _read(path: pathlib.Path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def world_stats(tiny_world_dir):
  return stats.compute_stats(tiny_world_dir)


@pytest.fixture(scope="module")
def real_queries(real_data_dir) -> dict[str, list[str]]:
  with open(
    real_data_dir / "esci" / "esci_pairs_with_titles.csv", encoding="utf-8"
  ) as f:
    esci = sorted({r["query"] for r in csv.DictReader(f)})
  with open(real_data_dir / "wands" / "query.csv", encoding="utf-8") as f:
    wands = [r["query"] for r in csv.DictReader(f, delimiter="\t")]
  assert len(esci) > 500 and len(wands) > 400
  return {"esci": esci, "wands": wands}


def _length_hist(queries: list[str]) -> dict[str, float]:
  c = collections.Counter(stats.length_bucket(q) for q in queries)
  return {b: c[b] / len(queries) for b in stats.LENGTH_BUCKETS}


_COLORS = set(lexicon.COLORS) | {"gray", "gold", "silver", "orange"}
_MATERIALS = {m for v in lexicon.MATERIALS.values() for m in v}


def _mention_rates(queries: list[str]) -> dict[str, float]:
  words = [q.lower().split() for q in queries]
  n = len(queries)
  return {
    "color": sum(any(w in _COLORS for w in ws) for ws in words) / n,
    "material": sum(any(w in _MATERIALS for w in ws) for ws in words) / n,
    "digit": sum(any(ch.isdigit() for ch in q) for q in queries) / n,
  }


def test_ctr_cvr_and_position_bias(world_stats):
  assert 0.03 <= world_stats["ctr"] <= 0.12
  assert 0.03 <= world_stats["cvr"] <= 0.15
  pos = world_stats["ctr_by_position"]
  assert pos["1"] > pos["3"] > pos["10"]
  assert pos["1"] > 2 * pos["10"]


def test_popularity_concentration(world_stats):
  assert 0.4 <= world_stats["top10pct_item_click_share"] <= 0.8


def test_query_frequency_is_head_heavy_with_long_tail(world_stats):
  assert world_stats["top1pct_query_session_share"] >= 0.1
  assert world_stats["singleton_query_share"] >= 0.3


def test_queries_are_short_and_length_close_to_real(world_stats, real_queries):
  gen = world_stats["query_length_hist"]
  assert gen["1"] + gen["2"] + gen["3"] >= 0.6  # most queries < 4 words
  assert gen["1"] <= 0.4 and gen["4"] + gen["5"] + gen["6+"] >= 0.05
  mean_gen = sum((int(b[0]) if b != "6+" else 6) * p for b, p in gen.items())
  for name, qs in real_queries.items():
    real = _length_hist(qs)
    tv = 0.5 * sum(abs(gen[b] - real[b]) for b in stats.LENGTH_BUCKETS)
    mean_real = sum(len(q.split()) for q in qs) / len(qs)
    # KuaiSearch queries are shorter than English ones; loose on purpose.
    assert tv <= {"wands": 0.4, "esci": 0.55}[name], (name, tv)
    assert abs(mean_gen - mean_real) <= 2.2, (name, mean_gen, mean_real)


def test_attribute_mention_rates_close_to_real(tiny_world_dir, real_queries):
  gen_q = [r["query"] for r in _read(tiny_world_dir / "recall.jsonl")]
  gen = _mention_rates(gen_q)
  real = {
    k: (a + b) / 2
    for (k, a), b in zip(
      _mention_rates(real_queries["esci"]).items(),
      _mention_rates(real_queries["wands"]).values(),
      strict=True,
    )
  }
  for k in gen:
    assert real[k] / 3 <= gen[k] <= real[k] * 3, (k, gen[k], real[k])


def test_query_type_mix_and_typos(world_stats, tiny_world_dir):
  mix = world_stats["query_type_mix"]
  assert set(mix) == {
    "category",
    "category_attribute",
    "brand_type",
    "model",
    "vague",
    "repeat",
  }
  assert all(v >= 0.005 for v in mix.values()), mix
  intents = _read(tiny_world_dir / "extras" / "query_intents.jsonl")
  synonyms = {s for v in lexicon.SYNONYMS.values() for s in v}
  assert any(r["query"] in synonyms for r in intents)
  cats = {r["category_level3_name"] for r in intents}
  # Typos: category queries that are neither a category word nor a synonym.
  typos = [
    r for r in intents if r["type"] == "category" and r["query"] not in cats | synonyms
  ]
  assert typos


def test_relevance_label_mix_near_kuaisearch(world_stats):
  mix = world_stats["relevance_label_mix"]
  for k, target in enumerate(KUAISEARCH_MIX):
    assert abs(mix[str(k)] - target) <= 0.08, (k, mix)


def test_relevance_labels_follow_intent(tiny_world_dir):
  intents = {
    r["query"]: r for r in _read(tiny_world_dir / "extras" / "query_intents.jsonl")
  }
  items = {r["item_id"]: r for r in _read(tiny_world_dir / "items.jsonl")}
  for r in _read(tiny_world_dir / "relevance.jsonl"):
    it, item = intents[r["query"]], items[r["item_id"]]
    fine = bool(it["category_level3_name"])  # L3 intent (else a vague L2 one)
    level = "category_level3_name" if fine else "category_level2_name"
    parent = "category_level2_name" if fine else "category_level1_name"
    same = item[level] == it[level]
    matches_all = all(
      item["attributes"].get(t) == v for t, v in it["attributes"].items()
    )
    if r["score"] == 3:
      assert same and matches_all, (r, it)
    elif r["score"] == 2:
      assert same and not matches_all, (r, it)
    elif r["score"] == 1:
      assert not same and item[parent] == it[parent], (r, it)
    else:
      assert item[parent] != it[parent], (r, it)


def test_cold_start_shares(world_stats):
  assert 0.02 <= world_stats["cold_user_share_test"] <= 0.3
  assert world_stats["items_published_later"] >= 0.05 * world_stats["items"]


def _predict(tiny_world_dir, user_aware: bool) -> tuple[float, float, int]:
  """HR@10 and MRR on test clicks of bare-category queries, from files only.

  Scores the items clicked for the query in train by their click count; the
  user-aware variant multiplies by (1 + 10 x the share of the user's train
  clicks on the item's brand).
  """
  items = {r["item_id"]: r for r in _read(tiny_world_dir / "items.jsonl")}
  categories = {r["category_level3_name"] for r in items.values()}
  recall = _read(tiny_world_dir / "recall.jsonl")
  query_items = collections.defaultdict(collections.Counter)
  user_brands = collections.defaultdict(collections.Counter)
  for r in recall:
    if r["split"] == "train":
      for i in r["clicked_item_ids"]:
        query_items[r["query"]][i] += 1
        user_brands[r["user_id"]][items[i]["brand_id"]] += 1
  hits = rr = n = 0
  for r in recall:
    if (
      r["split"] != "test" or not r["clicked_item_ids"] or r["query"] not in categories
    ):
      continue
    if r["query"] not in query_items:
      continue
    brands = user_brands[r["user_id"]]
    total = sum(brands.values()) or 1
    scores = {
      i: c * (1 + 10 * brands[items[i]["brand_id"]] / total if user_aware else 1)
      for i, c in query_items[r["query"]].items()
    }
    top = sorted(scores, key=lambda i: (-scores[i], i))[:10]
    ranks = [k for k, i in enumerate(top) if i in set(r["clicked_item_ids"])]
    n += 1
    hits += bool(ranks)
    rr += 1 / (ranks[0] + 1) if ranks else 0.0
  return hits / n, rr / n, n


def test_personalisation_matters_for_ambiguous_queries(tiny_world_dir):
  hr_blind, mrr_blind, n = _predict(tiny_world_dir, user_aware=False)
  hr_aware, mrr_aware, n2 = _predict(tiny_world_dir, user_aware=True)
  assert n == n2 >= 50
  assert hr_aware >= hr_blind
  assert mrr_aware >= mrr_blind + 0.03 and mrr_aware >= 1.1 * mrr_blind, (
    mrr_blind,
    mrr_aware,
  )
