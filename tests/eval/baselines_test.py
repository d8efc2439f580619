"""BM25, dense exact top-K and the MCA cascade on small catalogues."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from onesearch_jax.eval import evaluate, examples, metrics
from onesearch_jax.eval.baselines import bm25, dense, mca, ranking
from onesearch_jax.khqe import text_embedder
from onesearch_jax.world import reader

TITLES = [
  "red summer dress for women",
  "blue running shoes light",
  "red running shoes",
  "summer hat straw",
  "华为 手机 5G",
  "phone case for 华为",
]


def test_tokenize_words_and_cjk():
  assert bm25.tokenize("Red-Dress 5G华为手机!") == [
    "red",
    "dress",
    "5g",
    "华",
    "为",
    "手",
    "机",
  ]
  row = {"item_title": "Acme pan", "attributes": {"brand": "acme", "color": "red"}}
  assert bm25.item_text(row) == "Acme pan acme red"


def test_bm25_exact_title_first_and_no_zero_score_items():
  r = bm25.BM25Retriever(TITLES)
  rows, scores = r.search(
    ["red running shoes", "华为手机", "zzz", "red running shoes"], 6
  )
  assert rows[0, 0] == 2  # the exact title
  assert set(rows[0][rows[0] >= 0].tolist()) == {0, 1, 2}  # items sharing a token
  assert np.all(np.diff(scores[0][rows[0] >= 0]) <= 0)
  assert rows[1, 0] == 4 and 5 in rows[1].tolist()
  assert np.all(rows[2] == -1) and np.all(np.isneginf(scores[2]))
  assert np.array_equal(rows[0], rows[3])
  # Scores agree with the full score vector.
  full = r.scores("red running shoes")
  ok = rows[0] >= 0
  np.testing.assert_allclose(scores[0][ok], full[rows[0][ok]], rtol=1e-6)


def test_top_k_rows_ties_by_row():
  s = np.array([[1.0, 3.0, 3.0, 0.0, 2.0]])
  rows, vals = ranking.top_k_rows(s, 4)
  assert rows.tolist() == [[1, 2, 4, 0]]
  rows, _ = ranking.top_k_rows(s, 7, min_score=0.5)
  assert rows.tolist() == [[1, 2, 4, 0, -1, -1, -1]]


def test_dense_exact_top_k_equals_numpy_argsort():
  rng = np.random.default_rng(0)
  items = rng.normal(size=(300, 16)).astype(np.float32)
  queries = rng.normal(size=(21, 16)).astype(np.float32)
  d = dense.DenseRetriever(items)
  rows, vals = d.search(queries, 50, chunk=8)
  want = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :50]
  assert np.array_equal(rows, want)
  np.testing.assert_allclose(
    vals, np.take_along_axis(queries @ items.T, want, 1), rtol=1e-4, atol=1e-5
  )
  # Exact ties go to the lower item row.
  tied = dense.DenseRetriever(np.asarray([[1.0], [3.0], [3.0], [0.0], [3.0], [2.0]]))
  assert tied.search(np.ones((1, 1)), 5)[0].tolist() == [[1, 2, 4, 5, 0]]
  # k above the catalogue size pads with -1.
  rows, _ = d.search(queries[:2], 310)
  assert np.all(rows[:, 300:] == -1) and sorted(rows[0, :300].tolist()) == list(
    range(300)
  )
  np.testing.assert_allclose(
    d.scores_of(queries[:2], rows[:, :3]),
    (queries[:2] @ items.T)[np.arange(2)[:, None], rows[:, :3]],
    rtol=1e-4,
    atol=1e-5,
  )


def test_khqe_embedder_uses_the_plain_keyword_mean_unless_asked(
  tiny_world_dir, tiny_sid_build
):
  """The dense channel fuses keywords with the plain mean although the tiny
  build (the default BuildConfig) weighs brand and product type; with
  tag_weights=True it reproduces the artefact's weighted fusion."""
  _, sid_dir, _, cfg = tiny_sid_build
  assert dict(cfg.keyword_tag_weights) == {"brand": 4.0, "entity": 4.0}
  world = reader.load_world(tiny_world_dir)
  queries = sorted({r["query"] for r in world.recall})[:64]
  items = world.items[:64]
  built = text_embedder.load_text_embedder(sid_dir)
  assert built.keyword_weights is not None
  plain = text_embedder.TextEmbedder(
    built.encoder, built.matcher, built.keyword_embeddings, built.item_text_fields
  )
  got = dense.KHQEEmbedder(sid_dir)
  np.testing.assert_array_equal(got.queries(queries), plain.queries(queries))
  np.testing.assert_array_equal(got.items(items), plain.items(items))
  weighted = dense.KHQEEmbedder(sid_dir, tag_weights=True)
  np.testing.assert_array_equal(weighted.queries(queries), built.queries(queries))
  np.testing.assert_array_equal(weighted.items(items), built.items(items))
  # The two differ where an item matched a weighted keyword and another one.
  assert not np.array_equal(got.items(items), weighted.items(items))


def hashed_embed(texts, dim=64):
  """A deterministic bag-of-tokens embedding (stand-in for the KHQE encoder)."""
  out = np.zeros((len(texts), dim), np.float32)
  for n, t in enumerate(texts):
    for tok in bm25.tokenize(t):
      out[n, zlib.crc32(tok.encode()) % dim] += 1.0
  return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def test_union_and_membership():
  a = np.array([[3, 1, -1], [2, 2, 0]])
  b = np.array([[1, 5, 4], [-1, -1, -1]])
  u = mca.union_candidates(a, b)
  assert u.tolist() == [[3, 1, 5, 4, -1, -1], [2, 0, -1, -1, -1, -1]]
  assert mca.channel_membership(u, b).tolist()[0] == [0, 1, 1, 1, 0, 0]


def _tiny_cascade(world_dir, config):
  """(cascade, train sessions, eval set) on the tiny world, hashed embeddings."""
  tables = examples.read_eval_tables(reader.load_world(world_dir))
  row_of = {r["item_id"]: n for n, r in enumerate(tables.items)}
  texts = [bm25.item_text(r) for r in tables.items]
  cats = {}
  for lvl in (2, 3):
    names = [r[f"category_level{lvl}_id"] for r in tables.items]
    vocab = {c: n for n, c in enumerate(sorted(set(names)))}
    cats[lvl] = np.array([vocab[c] for c in names])
  train = evaluate._sessions(tables, row_of)
  cascade = mca.Cascade(
    bm25.BM25Retriever(texts),
    dense.DenseRetriever(hashed_embed(texts)),
    hashed_embed,
    mca.TrainStats(train, cats[2], cats[3]),
    config,
  )
  return cascade, train, examples.build_eval_set(tables)


def test_mca_ranker_learns_on_tiny_world(tiny_world_dir):
  config = mca.MCAConfig(recall_k=50, steps=150, max_train_sessions=400, seed=0)
  cascade, train, es = _tiny_cascade(tiny_world_dir, config)
  ranker = cascade.fit(train)
  assert ranker.losses[-1] < 0.8 * ranker.losses[0]
  # Held-out train sessions (another sample): AUC well above chance.
  other = mca.Cascade(
    cascade.bm25,
    cascade.dense,
    hashed_embed,
    cascade.stats,
    mca.MCAConfig(recall_k=50, max_train_sessions=200, seed=1),
  )
  x, y = other.training_data(train)
  assert 0 < y.mean() < 1
  assert metrics.roc_auc(y, ranker.score(x)) > 0.7
  # The cascade's ranking: unique items, drawn from the recall union.
  sessions = [
    mca.Session(q, u, s, (), ())
    for q, u, s in zip(
      es.queries[:30], es.user_ids[:30], es.session_ids[:30], strict=True
    )
  ]
  rows = cascade.rank(sessions, 80, chunk=7)
  b_rows, _ = cascade.bm25.search([s.query for s in sessions], 50)
  d_rows, _ = cascade.dense.search(hashed_embed([s.query for s in sessions]), 50)
  for i in range(len(sessions)):
    got = rows[i][rows[i] >= 0].tolist()
    assert len(got) == len(set(got))
    union = set(b_rows[i][b_rows[i] >= 0].tolist()) | set(d_rows[i].tolist())
    assert set(got) <= union and len(got) == min(80, len(union))


def test_mca_drop_features_rejects_unknown_names():
  with pytest.raises(ValueError, match=r"drop_features.*'brand'"):
    mca.MCAConfig(drop_features=("ctr", "brand"))


def test_mca_dropped_features_are_zero_and_the_others_unchanged(tiny_world_dir):
  kw = dict(recall_k=50, steps=20, max_train_sessions=100, seed=0)
  full, train, _ = _tiny_cascade(tiny_world_dir, mca.MCAConfig(**kw))
  drop = ("user_l2", "ctr", "in_dense")
  part = mca.Cascade(
    full.bm25,
    full.dense,
    hashed_embed,
    full.stats,
    mca.MCAConfig(**kw, drop_features=drop),
  )
  x_full, y_full = full.training_data(train)
  x_part, y_part = part.training_data(train)
  np.testing.assert_array_equal(y_part, y_full)
  cols = [mca.FEATURES.index(f) for f in drop]
  keep = [c for c in range(len(mca.FEATURES)) if c not in cols]
  assert np.all(x_part[:, cols] == 0) and np.any(x_full[:, cols] != 0)
  np.testing.assert_array_equal(x_part[:, keep], x_full[:, keep])


def test_mca_without_features_ranks_the_recall_union_by_item_row(tiny_world_dir):
  """Every feature dropped: every candidate scores the same, so the ranking is
  the recall union in the tie order (item row ascending)."""
  config = mca.MCAConfig(
    recall_k=30, steps=20, max_train_sessions=100, drop_features=mca.FEATURES
  )
  cascade, train, es = _tiny_cascade(tiny_world_dir, config)
  cascade.fit(train)
  sessions = [
    mca.Session(q, u, s, (), ())
    for q, u, s in zip(
      es.queries[:12], es.user_ids[:12], es.session_ids[:12], strict=True
    )
  ]
  got = cascade.rank(sessions, 40)
  queries = [s.query for s in sessions]
  b_rows, _ = cascade.bm25.search(queries, 30)
  d_rows, _ = cascade.dense.search(hashed_embed(queries), 30)
  for i in range(len(sessions)):
    union = set(b_rows[i][b_rows[i] >= 0].tolist()) | set(
      d_rows[i][d_rows[i] >= 0].tolist()
    )
    want = sorted(union)[:40]
    assert got[i][: len(want)].tolist() == want
    assert np.all(got[i][len(want) :] == -1)


def test_ranker_rejects_bad_input():
  with pytest.raises(ValueError, match="train_ranker"):
    mca.train_ranker(np.zeros((3, 2)), np.zeros(2), mca.MCAConfig())


@pytest.mark.parametrize("hidden", [0, 8])
def test_train_ranker_fits_a_separable_rule(hidden):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 3)).astype(np.float32)
  y = (x[:, 0] - 0.5 * x[:, 2] > 0).astype(np.float32)
  r = mca.train_ranker(x, y, mca.MCAConfig(hidden=hidden, steps=200))
  assert r.losses[-1] < 0.35 < r.losses[0]
  assert metrics.roc_auc(y, r.score(x)) > 0.97
