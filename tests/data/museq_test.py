"""Mu-Seq features: hand-computed user SIDs, windows, cold start, no leakage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onesearch_jax.data import museq, museq_math

RANGES = (8, 4, 4, 16, 16)


def _lam(m):
  w = [math.exp(math.sqrt(i)) for i in range(1, m + 1)]
  return [x / sum(w) for x in w]


def test_softmax_sqrt_weights_by_hand():
  np.testing.assert_allclose(museq_math.softmax_sqrt_weights(1), [1.0])
  # m = 2: e^1 / (e^1 + e^1.41421) = 0.397902
  np.testing.assert_allclose(
    museq_math.softmax_sqrt_weights(2), [0.397902, 0.602098], atol=1e-6
  )
  np.testing.assert_allclose(
    museq_math.softmax_sqrt_weights(3), [0.217745, 0.329488, 0.452767], atol=1e-6
  )
  w = museq_math.softmax_sqrt_weights(1000)
  assert abs(w.sum() - 1) < 1e-12 and np.all(np.diff(w) > 0)  # most recent last


def test_behaviour_sid_hand_computed():
  # Oldest first. m = 2, λ = (0.397902, 0.602098).
  codes = [[0, 3, 1, 5, 2], [3, 0, 1, 15, 9]]
  # 0*.398+3*.602=1.81->2; 3*.398=1.19->2; exactly 1 -> 1 (no 1.0000001 -> 2);
  # 5*.398+15*.602=11.02->12; 2*.398+9*.602=6.21->7
  np.testing.assert_array_equal(
    museq_math.behaviour_sid(codes, RANGES), [2, 2, 1, 12, 7]
  )
  # m = 3, λ = (.21774, .32949, .45277).
  codes = [[0, 2, 1, 0, 0], [0, 0, 2, 0, 0], [1, 0, 3, 0, 0]]
  # a: .45277 -> 1; b: .43549 -> 1; c: .21774+.65898+1.35830 = 2.235 -> 3
  np.testing.assert_array_equal(
    museq_math.behaviour_sid(codes, RANGES), [1, 1, 3, 0, 0]
  )
  # Independent check against the formula on random codes.
  rng = np.random.default_rng(0)
  for m in (1, 4, 7):
    c = rng.integers(0, 4, size=(m, 5))
    want = [
      min(
        math.ceil(sum(lam * c[i, p] for i, lam in enumerate(_lam(m))) - 1e-6),
        RANGES[p] - 1,
      )
      for p in range(5)
    ]
    np.testing.assert_array_equal(museq_math.behaviour_sid(c, RANGES), want)


def test_behaviour_sid_clamps_to_level_range():
  # 5 and 7 are out of the b range 4 (as if a table had inconsistent codes).
  out = museq_math.behaviour_sid([[0, 5, 0, 0, 0], [0, 7, 0, 15, 15]], RANGES)
  # b: 5*.398+7*.602=6.2 -> 7 -> clamped to 3; d: 15*.602=9.03 -> 10.
  assert out.tolist() == [0, 3, 0, 10, 10]


def test_long_seq_sums_brute_force():
  rng = np.random.default_rng(1)
  cent = rng.normal(size=(6, 3, 4)).astype(np.float32)
  seqs = [np.array([0, 2, 2]), np.array([], np.int64), np.array([5])]
  out, mask = museq_math.long_seq_sums(seqs, cent)
  assert out.shape == (9, 4)
  np.testing.assert_allclose(out[0:3], cent[0] + cent[2] + cent[2], rtol=1e-6)
  np.testing.assert_array_equal(out[3:6], 0)
  np.testing.assert_allclose(out[6:9], cent[5])
  np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0, 0, 1, 1, 1])
  mean, _ = museq_math.long_seq_sums(seqs, cent, reduce="mean")
  np.testing.assert_allclose(mean[0:3], (cent[0] + 2 * cent[2]) / 3, rtol=1e-6)


def test_hashed_user_bucket_is_stable():
  assert museq_math.hashed_user_bucket("u1", 1000) == museq_math.hashed_user_bucket(
    "u1", 1000
  )
  buckets = {museq_math.hashed_user_bucket(f"u{i}", 7) for i in range(200)}
  assert buckets == set(range(7))


# ------------------------------------------------------------ the index


def _items(n, cats=None):
  return [
    {
      "item_id": f"i{k}",
      "category_level1_id": "l1",
      "category_level2_id": (cats or {}).get(f"i{k}", "catA"),
      "category_level3_id": "l3",
    }
    for k in range(n)
  ]


def _session(sid, user, t, query, clicked=(), purchased=(), split="train"):
  return {
    "user_id": user,
    "session_id": sid,
    "query": query,
    "clicked_item_ids": list(clicked),
    "purchased_item_ids": list(purchased),
    "time_index": t,
    "split": split,
  }


def _index(recall, n_items=12, config=None, cats=None):
  config = config or museq.MuSeqConfig()
  codes = {
    f"i{k}": np.array([k % 8, k % 4, k % 4, k, k], np.int32) for k in range(n_items)
  }
  users = [{"user_id": "u", "gender": "male", "age_bucket": "50+"}]
  return museq.MuSeqIndex(users, _items(n_items, cats), recall, codes, RANGES, config)


def test_features_use_only_strictly_earlier_interactions():
  recall = [
    _session("s1", "u", 100, "q1", ["i1"], ["i1"]),
    _session("s2", "u", 200, "q2", ["i2"]),
    _session("s3", "u", 200, "q3", ["i3"]),  # same instant as s2
    _session("s4", "u", 300, "q4", ["i4"]),
  ]
  idx = _index(recall)
  f = idx.features("u", "q3", 200, train_only=True)
  assert f.seq_short == ("i1",) and f.seq_q == ("q1",)
  assert f.long_order == ("i1",) and f.profile == "50+ male"
  f = idx.features("u", "q4", 300, train_only=True)
  assert f.seq_short == ("i1", "i2", "i3") and f.seq_q == ("q1", "q2", "q3")
  # uid = SID_short ⊕ SID_long, both over i1, i2, i3 here.
  codes = np.array([[1, 1, 1, 1, 1], [2, 2, 2, 2, 2], [3, 3, 3, 3, 3]])
  want = museq_math.behaviour_sid(codes, RANGES)
  np.testing.assert_array_equal(f.uid_codes, np.concatenate([want, want]))


def test_short_and_long_windows():
  recall = [_session(f"s{k}", "u", 100 * k, f"q{k}", [f"i{k}"]) for k in range(1, 9)]
  cfg = museq.MuSeqConfig(long_max=6)
  f = _index(recall, config=cfg).features("u", "qx", 10_000, train_only=True)
  assert f.seq_short == tuple(f"i{k}" for k in range(4, 9))
  assert f.seq_q == tuple(f"q{k}" for k in range(4, 9))
  assert f.long_click == tuple(f"i{k}" for k in range(3, 9))
  c = np.array([[k % 8, k % 4, k % 4, k, k] for k in range(3, 9)])
  np.testing.assert_array_equal(f.uid_codes[5:], museq_math.behaviour_sid(c, RANGES))


def test_rsu_is_clicks_in_the_query_category():
  cats = {"i1": "catA", "i2": "catB", "i3": "catB"}
  recall = [
    _session("s1", "u", 100, "shoes", ["i2"]),
    _session("s2", "u", 200, "dress", ["i1"]),
    _session("s3", "u", 300, "shoes", ["i3"]),
  ]
  idx = _index(recall, cats=cats)
  f = idx.features("u", "shoes", 400, train_only=True)
  assert f.query_category == "catB"
  assert f.long_rsu == ("i2", "i3")
  assert idx.features("u", "never seen", 400, train_only=True).long_rsu == ()


def _brand_items(spec):
  """spec: item id -> (level-1 id, level-2 id, brand name or "")."""
  return [
    {
      "item_id": i,
      "category_level1_id": l1,
      "category_level2_id": l2,
      "category_level3_id": "l3",
      "brand_name": brand,
    }
    for i, (l1, l2, brand) in spec.items()
  ]


def test_profile_brands_most_clicked_in_the_query_level1_category():
  # Level-1 "shoes" holds level-2 catA / catB; level-1 "bags" holds catC.
  spec = {
    "i0": ("shoes", "catA", "kalu"),
    "i1": ("shoes", "catA", "nedo"),
    "i2": ("shoes", "catB", "nedo"),
    "i3": ("shoes", "catB", "ansa"),
    "i4": ("bags", "catC", "tortavo"),
    "i5": ("bags", "catC", "tortavo"),
    "i6": ("shoes", "catB", ""),
  }
  recall = [
    _session("s1", "u", 100, "boots", ["i0"]),  # shoes/catA kalu
    _session("s2", "u", 200, "sneakers", ["i2", "i3"]),  # catB nedo, ansa
    _session("s3", "u", 300, "tote", ["i4", "i5"]),  # bags: never counted for shoes
    _session("s4", "u", 400, "boots", ["i1", "i6"]),  # catA nedo, no brand
    _session("s5", "u", 500, "boots", ["i3"], split="test"),  # test: ansa
  ]
  codes = {
    i: np.array([k % 8, k % 4, k % 4, k, k], np.int32) for k, i in enumerate(spec)
  }
  users = [{"user_id": "u", "gender": "male", "age_bucket": "50+"}]

  def index(k):
    cfg = museq.MuSeqConfig(profile_brands=k)
    return museq.MuSeqIndex(users, _brand_items(spec), recall, codes, RANGES, cfg)

  idx = index(2)
  assert idx.skips["item_without_brand"] == 1
  # "boots" -> catA (its train clicks) -> level-1 "shoes". Before t=450 the
  # user's shoes clicks: kalu (t100), nedo (t200), ansa (t200), nedo (t400):
  # nedo 2, then kalu / ansa 1 each, ansa the more recent; bags never count.
  f = idx.features("u", "boots", 450, train_only=True)
  assert f.profile == "50+ male nedo ansa"
  assert index(1).features("u", "boots", 450, train_only=True).profile == (
    "50+ male nedo"
  )
  # Only clicks strictly before t: at t=200 only kalu.
  assert idx.features("u", "boots", 200, train_only=True).profile == "50+ male kalu"
  # A test session sees the test-day click (ansa: 2 clicks, more recent than
  # nedo's last), a train session does not.
  assert idx.features("u", "boots", 600, train_only=False).profile == (
    "50+ male ansa nedo"
  )
  assert idx.features("u", "boots", 600, train_only=True).profile == (
    "50+ male nedo ansa"
  )
  # "tote" -> bags: tortavo (2 clicks).
  assert idx.features("u", "tote", 600, train_only=True).profile == "50+ male tortavo"
  # A query without train clicks has no category: no brands; off = the old profile.
  assert idx.features("u", "never seen", 600, train_only=True).profile == "50+ male"
  assert index(0).features("u", "boots", 450, train_only=True).profile == "50+ male"


def test_profile_brands_needs_brand_names():
  recall = [_session("s1", "u", 100, "q", ["i1"])]
  with pytest.raises(ValueError, match="brand_name"):
    _index(recall, config=museq.MuSeqConfig(profile_brands=2))
  with pytest.raises(ValueError, match="profile_brands"):
    museq.MuSeqConfig(profile_brands=-1)


def test_cold_start_default_sequence():
  recall = [
    _session("a1", "v", 10, "q", ["i5", "i6"]),
    _session("a2", "w", 20, "q", ["i5"]),
    _session("a3", "w", 30, "q", ["i7"]),
    _session("a4", "w", 40, "q", ["i9"], split="test"),  # test: not counted
    _session("b1", "u", 50, "q", ["i1"]),
  ]
  f = _index(recall).features("u", "q", 50, train_only=True)
  assert f.cold_start
  # PV: i5 2, i6 1, i7 1 -> most clicked LAST (largest weight): i7, i6, i5.
  assert f.seq_short == ("i7", "i6", "i5") and f.long_click == ()
  assert f.uid_codes is not None


def test_sliding_window_counts():
  recall = [_session(f"s{k}", "u", 100 * k, "q", [f"i{k}"]) for k in range(1, 5)]
  idx = _index(recall)
  assert len(idx.train_examples()) == 4
  wins = idx.window_examples()
  # windows [] (cold), [i1], [i1,i2] -> 1, [i1,i2,i3] -> 2
  assert len(wins) == 3
  pairs = sorted((w.features.seq_short, w.targets) for w in wins)
  assert pairs == [(("i1",), ("i2",)), (("i1",), ("i2",)), (("i1", "i2"), ("i3",))]
  # Each sample's query is the one of the session where its target was clicked.
  assert all(w.session.clicked == w.targets for w in wins)
  assert (
    len(_index(recall, config=museq.MuSeqConfig(short_window=2)).window_examples()) == 2
  )


def test_sliding_window_skips_same_session_prefix():
  recall = [
    _session("s1", "u", 100, "q", ["i1"]),
    _session("s2", "u", 200, "q", ["i2", "i3"]),  # two clicks at one instant
    _session("s3", "u", 300, "q", ["i4"]),
  ]
  idx = _index(recall)
  wins = idx.window_examples()
  # s3 window [i1,i2,i3]: (i1)->i2 ok; (i1,i2)->i3 keeps only i1 (i2 is not
  # strictly earlier than i3). s2 window [i1]: none.
  got = sorted((w.features.seq_short, w.targets) for w in wins)
  assert got == [(("i1",), ("i2",)), (("i1",), ("i3",))]
  assert all(max(t for t in w.features.seq_short_times) < w.session.time for w in wins)


def test_no_test_day_interaction_in_training_features():
  rng = np.random.default_rng(0)
  recall = []
  for k in range(60):
    split = "test" if k % 5 == 0 else "train"  # interleaved on purpose
    prefix = "T" if split == "test" else ""
    items = (
      [f"i{int(rng.integers(6))}"]
      if split == "train"
      else [f"i{6 + int(rng.integers(4))}"]
    )
    recall.append(
      _session(
        f"s{k:03d}",
        "u",
        10 * k,
        prefix + f"q{int(rng.integers(3))}",
        items,
        items,
        split,
      )
    )
  idx = _index(recall, n_items=10)
  test_items = {f"i{k}" for k in range(6, 10)}
  train = idx.train_examples() + idx.window_examples()
  assert train
  for ex in train:
    f = ex.features
    seen = set(f.seq_short) | set(f.long_click) | set(f.long_order) | set(f.long_rsu)
    assert not seen & test_items
    assert not any(q.startswith("T") for q in f.seq_q)
  # Removing every test row changes no training example.
  idx2 = _index([r for r in recall if r["split"] == "train"], n_items=10)

  def key(exs):
    return [
      (
        e.session.session_id,
        e.targets,
        e.features.seq_short,
        e.features.seq_q,
        e.features.long_click,
        e.features.long_order,
        None if e.features.uid_codes is None else e.features.uid_codes.tolist(),
      )
      for e in exs
    ]

  assert key(idx2.train_examples()) == key(idx.train_examples())
  assert key(idx2.window_examples()) == key(idx.window_examples())
  # Test sessions do see the earlier test-day clicks (online situation).
  evals = idx.eval_examples("click")
  assert any(set(e.features.long_click) & test_items for e in evals)


def test_config_validation():
  with pytest.raises(ValueError, match="user_id"):
    museq.MuSeqConfig(user_id="random")
