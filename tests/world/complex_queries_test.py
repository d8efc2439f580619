"""Complex queries (negation, use case, alternative): the share switch, the
wording of each kind, the constraints it implies, match_counts and grades on
hand-built items, and the off switch consuming the generator as before."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from onesearch_jax.world import complex_intents, lexicon, relevance, simulator, stats
from onesearch_jax.world.catalog import (
  Catalog,
  CategoryIndex,
  CategoryTree,
  build_catalog,
  l1_attribute_values,
)
from onesearch_jax.world.complex_intents import COMPLEX_TYPES
from onesearch_jax.world.config import WorldConfig, config_dict
from onesearch_jax.world.intent import MAX_PRICE, NOT, Intent, match_counts
from onesearch_jax.world.queries import QueryMaker

SHARE = 0.3
# content_hash of the tiny world (seed 0) written by the code before complex
# queries existed (main at 980f1e2): with the switch off the simulator must
# consume the same random numbers and write the same bytes. Re-pin only when
# the world is changed deliberately.
TINY_WORLD_HASH = "bac7be215bc8c1a610fab607bf6333a6a3da766b114e67ea28b9bc35efd1848b"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
  cfg = dataclasses.replace(WorldConfig.tiny(seed=0), n_items=3_000)
  return build_catalog(cfg, np.random.default_rng(7))


def _maker(catalog: Catalog, share: float = 0.0, **kw) -> QueryMaker:
  rates = {"typo_rate": 0.0, "synonym_rate": 0.0, **kw}
  return QueryMaker(catalog, CategoryIndex(catalog), complex_query_share=share, **rates)


def _draws(qm: QueryMaker, n: int, seed: int) -> list[tuple[Intent, str]]:
  """n (intent, query) pairs over uniformly drawn L1s."""
  rng = np.random.default_rng(seed)
  n_l1 = len(qm.catalog.tree.l1_names)
  out = []
  for _ in range(n):
    l1 = int(rng.integers(0, n_l1))
    fav = np.nonzero(qm.catalog.brand_l1 == l1)[0][:1]
    intent = qm.draw(l1, fav, rng)
    out.append((intent, qm.render(intent, rng)))
  return out


@pytest.fixture(scope="module")
def complex_draws(catalog) -> list[tuple[Intent, str]]:
  return _draws(_maker(catalog, SHARE), 3_000, seed=1)


def _name(catalog: Catalog, kind: str, v: int) -> str:
  return catalog.brand_names[v] if kind == "brand" else catalog.attr_vocab[kind][v]


def test_share_is_honoured_within_sampling_error(complex_draws):
  n = len(complex_draws)
  kinds = [i.qtype for i, _ in complex_draws if i.qtype in COMPLEX_TYPES]
  sigma = math.sqrt(SHARE * (1 - SHARE) / n)
  assert abs(len(kinds) / n - SHARE) < 4 * sigma
  # use_case never falls back in this catalogue (every L1 has use cases).
  p_use = complex_intents.COMPLEX_TYPE_PROBS["use_case"]
  sigma = math.sqrt(p_use * (1 - p_use) / len(kinds))
  assert abs(kinds.count("use_case") / len(kinds) - p_use) < 4 * sigma
  assert kinds.count("negation") > 0 and kinds.count("alternative") > 0


def test_negation_wording_and_constraints(catalog, complex_draws):
  seen = set()
  for intent, q in complex_draws:
    if intent.qtype != "negation":
      continue
    neg = [c for c in intent.constraints if c[0].startswith(NOT)]
    pos = [c for c in intent.constraints if not c[0].startswith(NOT)]
    assert len(neg) == 1 and len(pos) <= 1, intent
    kind, v = neg[0][0][len(NOT) :], neg[0][1]
    assert kind == "brand" or kind in complex_intents.NEGATABLE
    assert kind not in dict(pos)
    entity = catalog.tree.l3_names[intent.l3]
    base = " ".join(
      [_name(catalog, t, w) for t, w in pos if t != "specifications"] + [entity]
    )
    x = _name(catalog, kind, v)
    forms = complex_intents.BRAND_NEGATIONS if kind == "brand" else ()
    forms = forms or complex_intents.ATTR_NEGATIONS
    tails = {f.format(q="", x=x) for f in forms}
    tail = max((t for t in tails if q.endswith(t)), key=len, default=None)
    assert tail is not None, (q, tails)
    if pos and pos[0][0] in ("audience", "specifications"):
      assert entity in q and _name(catalog, *pos[0]) in q
    else:
      assert q == base + tail, (q, base, tail)
    seen.add(tail.split(" ")[1])
  assert {"not", "except", "without"} <= seen  # the wordings vary


def test_use_case_hides_the_implied_values(catalog, complex_draws):
  uses = [(i, q) for i, q in complex_draws if i.qtype == "use_case"]
  assert len(uses) > 100
  for intent, q in uses:
    l1s, pairs = lexicon.USE_CASES[intent.cue]
    assert catalog.tree.l1_names[intent.l1] in l1s
    assert intent.constraints == tuple(
      (t, catalog.attr_vocab[t].index(v)) for t, v in pairs
    )
    entity = catalog.tree.l3_names[intent.l3]
    assert q in {
      f.format(e=entity, c=intent.cue) for f in complex_intents.USE_CASE_WORDINGS
    }
    for _, v in pairs:
      assert v not in q, (q, v)
  # Most uses are ones a popular item of the category has (anchor fit).
  exact = [
    np.any(
      match_counts(catalog, np.nonzero(catalog.l3 == i.l3)[0], i) == len(i.constraints)
    )
    for i, _ in uses
  ]
  assert np.mean(exact) > 0.8


def test_alternative_wording_and_constraints(catalog, complex_draws):
  alts = [(i, q) for i, q in complex_draws if i.qtype == "alternative"]
  assert alts
  for intent, q in alts:
    c = dict(intent.constraints)
    ref = c[MAX_PRICE]
    assert len(intent.constraints) == 2
    assert c[NOT + "brand"] == catalog.brand[ref]
    assert catalog.l3[ref] == intent.l3 and catalog.attrs["model"][ref] >= 0
    brand, code = catalog.brand_names[catalog.brand[ref]], catalog.model_code(ref)
    entity = catalog.tree.l3_names[intent.l3]
    assert q in {
      f"alternative to {brand} {code}",
      f"like {code} but cheaper",
      f"cheaper {entity} than {brand} {code}",
    }
    assert intent.target_item == -1  # the named item is not what is wanted


# ------------------------------------------------------------ hand-built items


@pytest.fixture
def hand_catalog() -> Catalog:
  """Five items: 0-3 in L3 0 ("t-shirt"), 4 in L3 1 ("shirt", same L2).

  item  brand  color  material  price
  0     0      red    -         10
  1     1      blue   cotton    20
  2     2      -      linen     30
  3     1      red    cotton    20
  4     0      red    -         10
  """
  tree = CategoryTree.from_lexicon(1)
  n = 5
  vocab = {"color": ["red", "blue"], "material": ["cotton", "linen"]}
  return Catalog(
    config=WorldConfig.tiny(),
    tree=tree,
    brand_names=["alpha", "beta", "gamma"],
    brand_l1=np.zeros(3, dtype=np.int64),
    brand_tier=np.ones(3, dtype=np.int64),
    seller_names=["alpha official store", "beta official store", "gamma store"],
    l3=np.array([0, 0, 0, 0, 1]),
    brand=np.array([0, 1, 2, 1, 0]),
    seller=np.array([0, 1, 2, 1, 0]),
    price=np.array([10.0, 20.0, 30.0, 20.0, 10.0]),
    log_pop=np.zeros(n),
    publish_time=np.zeros(n, dtype=np.int64),
    model_num=np.array([110, 120, 130, 140, 150]),
    attr_vocab=vocab,
    attrs={
      "color": np.array([0, 1, -1, 0, 0], dtype=np.int32),
      "material": np.array([-1, 0, 1, 0, -1], dtype=np.int32),
    },
    title_order=np.zeros(n, dtype=np.int8),
  )


def test_match_counts_negative_and_alternative_by_hand(hand_catalog):
  items = np.arange(5)
  red_not_cotton = Intent("negation", 0, 0, 0, (("color", 0), ("not_material", 0)))
  # red: 1 0 0 1 1; material != cotton (absent counts): 1 0 1 0 1
  assert match_counts(hand_catalog, items, red_not_cotton).tolist() == [2, 0, 1, 1, 2]
  not_beta = Intent("negation", 0, 0, 0, (("not_brand", 1),))
  assert match_counts(hand_catalog, items, not_beta).tolist() == [1, 0, 1, 0, 1]
  # Alternative to item 1 (beta, 20.0): other brand, price <= 20.0 (equal ok).
  alt = Intent("alternative", 0, 0, 0, (("not_brand", 1), (MAX_PRICE, 1)))
  assert match_counts(hand_catalog, items, alt).tolist() == [2, 1, 1, 1, 2]


def test_grades_honour_negation_and_alternative(hand_catalog):
  red_not_cotton = Intent("negation", 0, 0, 0, (("color", 0), ("not_material", 0)))
  grades = [relevance.grade(hand_catalog, red_not_cotton, i) for i in range(5)]
  # 0 satisfies all; 3 is red cotton (violates the negation); 4 is the sibling L3.
  assert grades == [3, 2, 2, 2, 1]
  alt = Intent("alternative", 0, 0, 0, (("not_brand", 1), (MAX_PRICE, 1)))
  assert [relevance.grade(hand_catalog, alt, i) for i in range(4)] == [3, 2, 2, 2]


def test_to_json_names_excluded_values_and_the_price_ceiling(hand_catalog):
  alt = Intent("alternative", 0, 0, 0, (("not_brand", 1), (MAX_PRICE, 1)))
  j = alt.to_json(hand_catalog)
  assert j["attributes"] == {} and j["excluded"] == {"brand": "beta"}
  assert j["max_price"] == 20.0 and j["reference_item"] == "i1"
  simple = Intent("category_attribute", 0, 0, 0, (("color", 1),))
  assert set(simple.to_json(hand_catalog)) == {
    "type",
    "category_level1_name",
    "category_level2_name",
    "category_level3_name",
    "attributes",
  }


# ------------------------------------------------------------ the switch


def test_share_zero_draws_what_the_maker_without_it_draws(catalog):
  rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
  a = QueryMaker(catalog, CategoryIndex(catalog), 0.04, 0.25)
  b = QueryMaker(catalog, CategoryIndex(catalog), 0.04, 0.25, complex_query_share=0.0)
  for k in range(400):
    l1 = k % len(catalog.tree.l1_names)
    fav = np.nonzero(catalog.brand_l1 == l1)[0][:2]
    ia, ib = a.draw(l1, fav, rng_a), b.draw(l1, fav, rng_b)
    assert ia == ib and ia.qtype not in COMPLEX_TYPES
    assert a.render(ia, rng_a) == b.render(ib, rng_b)
  assert rng_a.random() == rng_b.random()  # the same numbers were consumed
  # On, the same seed consumes the generator differently.
  c = QueryMaker(catalog, CategoryIndex(catalog), 0.04, 0.25, complex_query_share=0.5)
  rng_c, rng_d = np.random.default_rng(5), np.random.default_rng(5)
  fav = np.nonzero(catalog.brand_l1 == 0)[0][:2]
  drawn = [c.draw(0, fav, rng_c) for _ in range(20)]
  assert [a.draw(0, fav, rng_d) for _ in range(20)] != drawn


def test_tiny_world_with_the_switch_off_is_the_old_codes(tiny_world_dir):
  manifest = json.loads((tiny_world_dir / "manifest.json").read_text())
  assert manifest["content_hash"] == TINY_WORLD_HASH
  assert "complex_query_share" not in manifest["config"]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.3", True])
def test_bad_share_is_a_clear_error(bad):
  with pytest.raises(
    ValueError, match=r"complex_query_share must be a number in \[0, 1\)"
  ):
    WorldConfig(complex_query_share=bad)


def test_config_dict_leaves_the_switch_out_while_off():
  off = WorldConfig.tiny()
  assert "complex_query_share" not in config_dict(off)
  assert config_dict(off) == {
    k: v for k, v in dataclasses.asdict(off).items() if k != "complex_query_share"
  }
  on = dataclasses.replace(off, complex_query_share=0.25)
  assert config_dict(on)["complex_query_share"] == 0.25


# ------------------------------------------------------------ the lexicon


def test_use_case_table_is_consistent():
  for phrase, (l1s, pairs) in lexicon.USE_CASES.items():
    assert l1s and pairs, phrase
    for a in l1s:
      for t, v in pairs:
        assert v in l1_attribute_values(t, a), (phrase, a, t, v)
    for _, v in pairs:
      assert v not in phrase, (phrase, v)
  covered = {a for l1s, _ in lexicon.USE_CASES.values() for a in l1s}
  assert covered == set(lexicon.CATEGORY_TREE)


def test_a_wrong_use_case_entry_is_named(monkeypatch, catalog):
  bad = {"a day at sea": (("clothing",), (("function", "waterproof"),))}
  monkeypatch.setattr(lexicon, "USE_CASES", bad)
  with pytest.raises(ValueError, match="a day at sea.*waterproof.*clothing"):
    complex_intents.use_case_constraints(catalog)


# ------------------------------------------------------------ a written world


def test_written_world_reports_the_mix_and_clicks_honour_negation(tmp_path):
  cfg = dataclasses.replace(WorldConfig.tiny(), n_days=4, complex_query_share=0.5)
  manifest = simulator.write_world(cfg, tmp_path)
  assert manifest["config"]["complex_query_share"] == 0.5
  s = stats.compute_stats(tmp_path)
  assert set(COMPLEX_TYPES) <= set(s["query_type_mix"])
  assert abs(s["complex_query_share"] - 0.5) < 0.05
  # Sessions of brand negations: an item of the excluded brand is clicked less
  # often per impression than the others.
  with open(tmp_path / "extras" / "query_intents.jsonl", encoding="utf-8") as f:
    excluded = {
      r["query"]: r["excluded"]["brand"]
      for r in map(json.loads, f)
      if r["type"] == "negation" and "brand" in r["excluded"]
    }
  with open(tmp_path / "items.jsonl", encoding="utf-8") as f:
    brand = {r["item_id"]: r["brand_name"] for r in map(json.loads, f)}
  shown = np.zeros(2)
  clicked = np.zeros(2)
  with open(tmp_path / "recall.jsonl", encoding="utf-8") as f:
    for r in map(json.loads, f):
      if r["query"] not in excluded:
        continue
      for i in r["impressed_item_ids"]:
        bad = int(brand[i] == excluded[r["query"]])
        shown[bad] += 1
        clicked[bad] += i in r["clicked_item_ids"]
  assert shown.min() > 50, shown
  ctr_ok, ctr_bad = clicked / shown
  assert ctr_bad < ctr_ok, (ctr_ok, ctr_bad)
