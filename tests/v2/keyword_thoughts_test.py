"""The built-in keyword generator on a hand-made dictionary (hand-worked
outputs), and the JSONL keyword cache reader with its errors."""

from __future__ import annotations

import json

import pytest

from onesearch_jax.khqe.keywords import Keyword
from onesearch_jax.v2 import keyword_cache
from onesearch_jax.v2.keyword_thoughts import (
  NEGATION_CUES,
  DictionaryKeywordGenerator,
  KeywordRequest,
  KeywordThoughtConfig,
  item_text,
  split_negation,
)

DICTIONARY = [
  Keyword("sneakers", "l3", 100),
  Keyword("trainers", "l3", 10),
  Keyword("nike", "brand", 80),
  Keyword("adidas", "brand", 50),
  Keyword("red", "color", 40),
  Keyword("running shoes", "l3", 30),
  Keyword("phone", "l3", 200),
  Keyword("apple", "brand", 150),
]
SYNONYMS = {
  "sneakers": ("trainers", "kicks"),
  "running shoes": ("runners",),
  "x": ("y",),
}
ITEMS = {
  "i1": item_text({"item_title": "Nike Air sneakers", "attributes": {"brand": "Nike"}}),
  "i2": item_text(
    {"item_title": "Adidas trainers", "attributes": {"brand": "Adidas", "color": "red"}}
  ),
  "i3": item_text({"item_title": "Apple phone", "attributes": {"brand": "Apple"}}),
}


def _gen(**cfg):
  return DictionaryKeywordGenerator(
    DICTIONARY, ITEMS, SYNONYMS, KeywordThoughtConfig(**cfg)
  )


def _kw(gen, query, recent=()):
  return gen.keywords(KeywordRequest(query, "u1", tuple(recent)))


def test_item_text_is_title_then_attribute_values():
  assert ITEMS["i2"] == "Adidas trainers ; Adidas ; red"


def test_query_analysis_merges_synonyms_and_orders_by_popularity():
  gen = _gen()
  # trainers and kicks stand for the sneakers group (PV 100 + 10).
  assert _kw(gen, "red trainers") == ("sneakers", "red")
  assert _kw(gen, "KICKS") == ("sneakers",)
  assert _kw(gen, "trainers sneakers kicks") == ("sneakers",)
  assert _kw(gen, "runners nike") == ("nike", "running shoes")
  assert _kw(gen, "apple phone red") == ("phone", "apple", "red")
  assert _kw(gen, "a gift for dad") == ()
  sneakers = next(e for e in gen.entries if e.text == "sneakers")
  assert (sneakers.tag, sneakers.pv) == ("l3", 110)
  assert not any(e.text in ("x", "y") for e in gen.entries)  # no member known


def test_calibration_adds_the_users_brand_from_related_clicks_only():
  gen = _gen()
  # i3 (a phone) shares no keyword with the query: it is ignored.
  assert _kw(gen, "sneakers", ["i3", "i1"]) == ("sneakers", "nike")
  assert _kw(gen, "sneakers", ["i3"]) == ("sneakers",)
  # Both clicks are sneakers: brand/color keywords, by click count then PV.
  assert _kw(gen, "sneakers", ["i2", "i1"]) == ("sneakers", "nike", "adidas")
  assert _kw(gen, "sneakers", ["i2", "i2", "i1"]) == ("sneakers", "adidas", "red")
  # An unknown item id carries no keywords.
  assert _kw(gen, "sneakers", ["nope"]) == ("sneakers",)


def test_calibration_moves_confirmed_keywords_first_and_skips_covered_tags():
  gen = _gen()
  assert _kw(gen, "red nike") == ("nike", "red")
  # i2 carries red (confirmed: first), adidas (brand: the query has one) and
  # sneakers (a tag the query lacks: added).
  assert _kw(gen, "red nike", ["i2"]) == ("red", "nike", "sneakers")


def test_config_limits():
  assert _kw(_gen(max_personal=1), "sneakers", ["i2", "i1"]) == ("sneakers", "nike")
  assert _kw(_gen(max_personal=0), "sneakers", ["i2", "i1"]) == ("sneakers",)
  # Only the most recent click calibrates.
  assert _kw(_gen(recent_items=1), "sneakers", ["i1", "i2"]) == (
    "sneakers",
    "adidas",
    "red",
  )
  assert _kw(_gen(recent_items=0), "sneakers", ["i1"]) == ("sneakers",)
  assert _kw(_gen(max_keywords=2), "apple phone red") == ("phone", "apple")
  with pytest.raises(ValueError, match="max_keywords"):
    KeywordThoughtConfig(max_keywords=0)


def test_negation_cues_mark_ruled_out_keywords():
  off = _gen()
  on = _gen(negation_cues=NEGATION_CUES)
  # Without cues the excluded brand reads like a wanted one.
  assert _kw(off, "sneakers not nike") == ("sneakers", "nike")
  assert _kw(on, "sneakers not nike") == ("sneakers", "not nike")
  assert _kw(on, "Sneakers, but NOT red nike") == ("sneakers", "not nike", "not red")
  assert _kw(on, "red sneakers without adidas") == ("sneakers", "red", "not adidas")
  # Only whole words cue: "note" and "nothing" hold "not" as a prefix.
  assert _kw(on, "note phone nothing") == ("phone",)
  # A keyword named on both sides stays wanted; a query of negations only.
  assert _kw(on, "nike sneakers except nike") == ("sneakers", "nike")
  assert _kw(on, "no nike") == ("not nike",)
  # The user's usual brand (i1: nike) is not added when a brand is ruled
  # out; it is added for the plain query.
  assert _kw(on, "sneakers", ["i1"]) == ("sneakers", "nike")
  assert _kw(on, "sneakers no adidas", ["i1"]) == ("sneakers", "not adidas")
  assert split_negation("Shoes but not Nike", NEGATION_CUES) == ("shoes ", " nike")
  assert split_negation("Shoes", ()) == ("Shoes", "")
  assert split_negation("Shoes", NEGATION_CUES) == ("shoes", "")


def _write(tmp_path, rows):
  path = tmp_path / "kw.jsonl"
  path.write_text(
    "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
  )
  return path


def test_cache_reader_lookups(tmp_path):
  path = _write(
    tmp_path,
    [
      {"query": "Running  Shoes", "keywords": ["sneakers"]},
      {
        "query": "running shoes",
        "user_id": "u7",
        "keywords": ["sneakers", " nike  air"],
      },
      {"query": "gift", "user_id": "", "keywords": []},
      "",
    ],
  )
  cache = keyword_cache.load_keyword_cache(path)
  get = lambda q, u: cache.keywords(KeywordRequest(q, u))
  assert get("running shoes", "u7") == ("sneakers", "nike air")
  assert get("RUNNING shoes", "u8") == ("sneakers",)
  assert get("running shoes", "") == ("sneakers",)
  assert get("gift", "u7") == ()
  assert cache.misses == 0
  assert get("socks", "u7") == ()
  assert cache.misses == 1


@pytest.mark.parametrize(
  "row, message",
  [
    ("{not json", r"kw.jsonl:2: invalid JSON"),
    ('["a"]', r"kw.jsonl:2: expected a JSON object, got list"),
    ({"query": "a"}, r"kw.jsonl:2: field 'keywords' is missing"),
    ({"keywords": []}, r"kw.jsonl:2: field 'query' is missing"),
    ({"query": "", "keywords": []}, r"kw.jsonl:2: field 'query' must be a non-empty"),
    ({"query": "a", "keywords": "x"}, r"kw.jsonl:2: field 'keywords' must be a list"),
    ({"query": "a", "keywords": ["x", 3]}, r"kw.jsonl:2: field 'keywords' item 1"),
    ({"query": "a", "user_id": 5, "keywords": []}, r"kw.jsonl:2: field 'user_id'"),
    ({"query": "Shoes", "keywords": []}, r"kw.jsonl:2: field 'query'.*on line 1"),
    (
      '{"query": "a", "query": "b", "keywords": []}',
      r"kw.jsonl:2: field 'query' appears twice",
    ),
  ],
)
def test_cache_reader_errors_name_file_line_and_field(tmp_path, row, message):
  path = _write(tmp_path, [{"query": "shoes", "keywords": ["x"]}, row])
  with pytest.raises(keyword_cache.KeywordCacheError, match=message):
    keyword_cache.load_keyword_cache(path)
