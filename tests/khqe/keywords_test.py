"""Tests for khqe/keywords.py: mining, longest-first matching, fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onesearch_jax.khqe import keywords as kw


def _texts(matcher, text):
  return [matcher.keywords[i] for i in matcher.match(text)]


def test_longest_first_and_substring_dropping_english():
  m = kw.KeywordMatcher(["red", "red dress", "dress", "long sleeve", "sleeve", "Nike"])
  # "red" and "dress" are substrings of the kept "red dress" -> dropped, even
  # where "red" occurs again on its own (the official rule is textual).
  assert _texts(m, "A RED Dress and a red hat") == ["red dress"]
  assert _texts(m, "long sleeve red shirt by nike") == [
    "long sleeve",
    "nike",
    "red",
  ]  # by length
  # Word boundaries: no match inside "shred", "dresses" or "nikes".
  assert _texts(m, "shred dresses nikes") == []
  assert _texts(m, "red-dress") == ["dress", "red"]  # "-" is not "red dress"
  assert _texts(m, "") == []


def test_longest_first_and_substring_dropping_chinese():
  m = kw.KeywordMatcher(["红色", "连衣裙", "红色连衣裙", "衣裙", "夏季", "女"])
  # CJK needs no word boundary: keywords match inside longer runs.
  assert _texts(m, "韩都衣舍红色连衣裙女夏季雪纺") == ["红色连衣裙", "夏季", "女"]
  assert _texts(m, "蓝色连衣裙") == ["连衣裙"]  # "衣裙" is inside "连衣裙"
  assert _texts(m, "红色外套") == ["红色"]


def test_mixed_script_and_normalisation():
  m = kw.KeywordMatcher(["iphone", "手机壳", "ＡＢＣ"])  # full-width folds to "abc"
  assert _texts(m, "iPhone手机壳 透明") == ["iphone", "手机壳"]  # longer first
  assert _texts(m, "abc 牌") == ["abc"]
  assert _texts(m, "xiphone") == []  # an alphabetic edge needs a boundary


def test_empty_dictionary():
  assert kw.KeywordMatcher([]).match("anything") == []


def test_fusion_formula_hand_computed():
  raw = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
  kemb = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
  out = kw.fuse(raw, [[0], [0, 1], []], kemb)
  # row 0: 0.5*(1,0,0) + 0.5*(0,1,0) = (.5,.5,0) -> (1,1,0)/sqrt2
  np.testing.assert_allclose(out[0], [2**-0.5, 2**-0.5, 0.0], atol=1e-6)
  # row 1: 0.5*(0,1,0) + 0.5*(0,.5,.5) = (0,.75,.25) -> /sqrt(.625)
  np.testing.assert_allclose(out[1], np.array([0, 0.75, 0.25]) / 0.625**0.5, atol=1e-6)
  np.testing.assert_array_equal(out[2], raw[2])  # unmatched: raw unchanged
  # invalid keywords are ignored: row 1 then only uses keyword 0
  out = kw.fuse(raw, [[1], [0, 1], []], kemb, valid=np.array([True, False]))
  np.testing.assert_array_equal(out[0], raw[0])
  np.testing.assert_allclose(out[1], raw[1], atol=1e-6)
  with pytest.raises(ValueError, match="3 embeddings but 2"):
    kw.fuse(raw, [[0], []], kemb)


def test_unnormalised_raw_is_kept_but_fused_is_unit():
  raw = np.array([[3.0, 4.0], [2.0, 0.0]], np.float32)
  out = kw.fuse(raw, [[], [0]], np.array([[0.0, 2.0]], np.float32))
  np.testing.assert_array_equal(out[0], raw[0])
  np.testing.assert_allclose(out[1], [2**-0.5, 2**-0.5], atol=1e-6)


def test_fusion_is_the_per_row_formula_bit_for_bit():
  """The vectorised fusion against one text at a time in float64 (the
  per-row mean and np.linalg.norm), byte for byte, with long, repeated and
  invalid match lists and a zero keyword."""
  rng = np.random.default_rng(0)
  kemb = rng.normal(size=(30, 16)).astype(np.float32)
  kemb[3] = -0.0
  raw = rng.normal(size=(400, 16)).astype(np.float32)
  matches = [rng.integers(0, 30, size=rng.integers(0, 25)).tolist() for _ in raw]
  matches[:3] = [[3], [3, 3], []]
  valid = rng.random(30) > 0.3
  for v in (None, valid):
    want = raw.copy()
    for row, ks in enumerate(matches):
      ks = [k for k in ks if v is None or v[k]]
      if ks:
        x = 0.5 * raw[row].astype(np.float64) + 0.5 * kemb[ks].astype(np.float64).mean(
          0
        )
        want[row] = x / max(np.linalg.norm(x), 1e-12)
    assert kw.fuse(raw, matches, kemb, v).tobytes() == want.tobytes()


def _brute_match(keywords, text):
  """The matching rule by str.find: every occurrence, word edges, longest
  (then first) hit first, hits inside a kept keyword dropped."""
  words = list(dict.fromkeys(k for k in (kw.normalise(k) for k in keywords) if k))
  t = kw.normalise(text)

  def word(ch):
    return ch.isalnum() and not kw.is_cjk(ch)

  first = {}
  for k in words:
    at = t.find(k)
    while at >= 0:
      end = at + len(k)
      left = word(k[0]) and at > 0 and word(t[at - 1])
      right = word(k[-1]) and end < len(t) and word(t[end])
      if not (left or right):
        first[k] = at
        break
      at = t.find(k, at + 1)
  kept = []
  for k in sorted(first, key=lambda k: (-len(k), first[k])):
    if not any(k in j for j in kept):
      kept.append(k)
  return kept


def test_matcher_equals_brute_force_on_random_dictionaries():
  rng = np.random.default_rng(1)
  alphabet = list("ab 1红色-")
  for _ in range(100):
    keywords = [
      "".join(rng.choice(alphabet, size=rng.integers(1, 5))) for _ in range(20)
    ]
    m = kw.KeywordMatcher(keywords)
    for _ in range(30):
      text = "".join(rng.choice(alphabet, size=rng.integers(0, 30)))
      assert _texts(m, text) == _brute_match(keywords, text), (keywords, text)


def _session(q, shown, clicked, split="train"):
  return {
    "query": q,
    "impressed_item_ids": shown,
    "clicked_item_ids": clicked,
    "purchased_item_ids": [],
    "split": split,
  }


def test_mine_from_attributes_pv_threshold_and_order():
  items = [
    {
      "item_id": "a",
      "item_title": "Red Dress",
      "attributes": {"color": "Red", "entity": "dress"},
    },
    {
      "item_id": "b",
      "item_title": "red hat",
      "attributes": {"color": "red", "entity": "hat"},
    },
    {
      "item_id": "c",
      "item_title": "blue hat",
      "attributes": {"color": "blue", "entity": "hat"},
    },
  ]
  sessions = [
    _session("red", ["a", "b"], ["a"]),  # pv: a 2, b 1
    _session("hat", ["b", "c"], ["b"]),  # pv: b 2, c 1
    _session("hat", ["c", "a", "b"], [], split="test"),  # test split ignored
  ]
  kws, source = kw.mine_keywords(items, sessions, kw.KeywordConfig(min_pv=2))
  assert source == "attributes"
  # red: a(2)+b(3)=5 ; hat: b(3)+c(1)=4 ; dress: 2 ; blue: 1 (< min_pv)
  assert [(k.text, k.tag, k.pv) for k in kws] == [
    ("red", "color", 5),
    ("hat", "entity", 4),
    ("dress", "entity", 2),
  ]


def test_mine_fallback_ngrams():
  items = [
    {"item_id": f"i{n}", "item_title": t}
    for n, t in enumerate(
      [
        "nike running shoes men",
        "adidas running shoes women",
        "nike running shoes kids",
        "wool winter hat",
        "cotton summer hat",
        "plain t shirt",
        "red t shirt",
        "blue t shirt",
        "black wool coat",
        "black cotton coat",
        "红色连衣裙 夏季",
        "蓝色连衣裙 夏季",
        "白色连衣裙 春季",
      ]
    )
  ]
  sessions = [
    _session(q, ["i0", "i1", "i10"], ["i0"])
    for q in ["running shoes", "nike shoes", "连衣裙", "hat for men"]
  ]
  kws, source = kw.mine_keywords(
    items,
    sessions,
    kw.KeywordConfig(min_pv=0, ngram_min_titles=3, ngram_max_title_share=0.3),
  )
  assert source == "ngrams"
  texts = {k.text: k for k in kws}
  # Kept: in >= 3 titles, <= 30% of titles, and in some query. "nike" and
  # "hat" are in only 2 titles, "men" in 1; "t shirt" is in no query.
  assert set(texts) == {"running", "shoes", "running shoes", "连衣", "衣裙", "连衣裙"}
  assert all(k.tag == kw.NGRAM_TAG for k in kws)
  # PV = impressions + clicks (train split) of the titles holding the n-gram.
  pv = kw.item_pv(sessions)
  assert texts["running shoes"].pv == pv["i0"] + pv["i1"] + pv["i2"]
  assert texts["连衣裙"].pv == pv["i10"]


def test_ngrams_never_mix_scripts_and_skip_stop_words():
  grams = kw.ngrams(kw.normalise("Nike Air 红色连衣裙 for Women"))
  assert "nike air" in grams and "women" in grams
  assert "for women" not in grams and "for" not in grams
  assert "红色连衣裙" not in grams  # 5 chars > max CJK length 4
  assert {"红色", "连衣裙", "红色连衣"} <= grams
  assert not any(("a" <= g[0] <= "z") and any(kw.is_cjk(c) for c in g) for g in grams)


def test_match_stats():
  s = kw.match_stats([[0, 1], [], [2], []])
  assert s == {"texts": 4.0, "match_rate": 0.5, "mean_keywords_per_matched": 1.5}


def test_keyword_centroids():
  emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
  cent, valid = kw.keyword_centroids([[0], [0, 1], []], emb, 3)
  np.testing.assert_allclose(cent[0], [2**-0.5, 2**-0.5], atol=1e-6)
  np.testing.assert_allclose(cent[1], [0.0, 1.0], atol=1e-6)
  assert valid.tolist() == [True, True, False] and (cent[2] == 0).all()


def test_zh_fixture_mining_and_matching(zh_world_dir):
  items = [json.loads(x) for x in open(zh_world_dir / "items.jsonl")]
  sessions = [json.loads(x) for x in open(zh_world_dir / "recall.jsonl")]
  kws, source = kw.mine_keywords(items, sessions, kw.KeywordConfig(min_pv=1))
  assert source == "attributes"
  texts = [k.text for k in kws]
  assert "红色" in texts and "连衣裙" in texts
  assert [k.pv for k in kws] == sorted((k.pv for k in kws), reverse=True)
  m = kw.KeywordMatcher(texts)
  hit = _texts(m, "红色连衣裙女夏季")
  assert "红色" in hit and "连衣裙" in hit and "夏季" in hit


def test_dictionary_round_trip_official_format(tmp_path):
  entries = [kw.Keyword("红色", "color", 12), kw.Keyword("red dress", "entity", 3)]
  emb = np.array([[0.1, -2.5, 3.0], [1e-7, 0.0, 1.0]], np.float32)
  path = tmp_path / "kw.tsv"
  kw.save_dictionary(path, entries, emb)
  first = path.read_text(encoding="utf-8").splitlines()[0]
  assert first.split("\t")[:3] == ["红色", "color", "12"]
  assert first.split("\t")[3].count("\x02") == 2
  got, got_emb = kw.load_dictionary(path)
  assert got == entries
  np.testing.assert_array_equal(got_emb, emb)  # float32 values survive exactly


def test_dictionary_errors(tmp_path):
  with pytest.raises(ValueError, match="holds a tab"):
    kw.save_dictionary(
      tmp_path / "a.tsv", [kw.Keyword("a\tb", "t", 1)], np.zeros((1, 2))
    )
  bad = tmp_path / "bad.tsv"
  bad.write_text("a\tt\t1\t0.5\x020.5\nb\tt\tx\t0.5\x020.5\n", encoding="utf-8")
  with pytest.raises(
    ValueError, match=r"bad.tsv:2: field 'pv' or 'emb' is not numeric"
  ):
    kw.load_dictionary(bad)
  bad.write_text("a\tt\t1\t0.5\x020.5\nb\tt\t1\t0.5\n", encoding="utf-8")
  with pytest.raises(
    ValueError, match=r"bad.tsv:2: field 'emb' has 1 values, expected 2"
  ):
    kw.load_dictionary(bad)
  bad.write_text("a\tt\t1\n", encoding="utf-8")
  with pytest.raises(
    ValueError, match=r"bad.tsv:1: expected 4 tab-separated fields, got 3"
  ):
    kw.load_dictionary(bad)


def test_weighted_fusion_hand_values_and_unit_weights_bit_for_bit():
  """Σ w_k·e_k / Σ w_k: by hand on two keywords; all-ones weights are the
  plain mean byte for byte; bad weights are refused."""
  kemb = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  raw = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]], np.float32)
  matches = [[0, 1], [1], []]
  out = kw.fuse(raw, matches, kemb, None, np.array([3.0, 1.0]))
  x = 0.5 * np.array([0.75, 0.25])  # raw row 0 is zero
  np.testing.assert_allclose(out[0], x / np.linalg.norm(x), rtol=1e-6)
  y = 0.5 * np.array([1.0, 1.0]) + 0.5 * np.array([0.0, 1.0])  # one keyword: w cancels
  np.testing.assert_allclose(out[1], y / np.linalg.norm(y), rtol=1e-6)
  np.testing.assert_array_equal(out[2], raw[2])
  rng = np.random.default_rng(1)
  kemb = rng.normal(size=(20, 8)).astype(np.float32)
  raw = rng.normal(size=(50, 8)).astype(np.float32)
  matches = [rng.integers(0, 20, size=rng.integers(0, 9)).tolist() for _ in raw]
  valid = rng.random(20) > 0.3
  plain = kw.fuse(raw, matches, kemb, valid)
  assert kw.fuse(raw, matches, kemb, valid, np.ones(20)).tobytes() == plain.tobytes()
  # A heavier keyword pulls the fused row towards itself.
  w = np.ones(20)
  w[5] = 10.0
  heavy = kw.fuse(raw, matches, kemb, valid, w)
  rows = [
    r for r, ks in enumerate(matches) if valid[5] and 5 in ks and len(set(ks)) > 1
  ]
  for r in rows:
    assert heavy[r] @ kemb[5] > plain[r] @ kemb[5]
  for bad in (np.ones(19), np.zeros(20)):
    with pytest.raises(ValueError, match="positive"):
      kw.fuse(raw, matches, kemb, valid, bad)


def test_tag_weights():
  entries = [
    kw.Keyword("a", "brand", 1),
    kw.Keyword("b", "color", 1),
    kw.Keyword("c", "entity", 1),
  ]
  assert kw.tag_weights(entries, ()) is None
  np.testing.assert_array_equal(
    kw.tag_weights(entries, (("brand", 4.0), ("entity", 2.0))), [4.0, 1.0, 2.0]
  )
  with pytest.raises(ValueError, match="listed twice"):
    kw.tag_weights(entries, (("brand", 4.0), ("brand", 2.0)))
  with pytest.raises(ValueError, match="need > 0"):
    kw.tag_weights(entries, (("brand", 0.0),))
