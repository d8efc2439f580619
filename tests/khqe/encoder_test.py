"""Tests for khqe/encoder.py: pair mining, losses, training on a tiny log."""

from __future__ import annotations

import random

import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.khqe import encoder as enc
from onesearch_jax.khqe import text_vocab


def _session(q, shown, clicked, ordered=(), split="train"):
  return {
    "query": q,
    "impressed_item_ids": list(shown),
    "clicked_item_ids": list(clicked),
    "purchased_item_ids": list(ordered),
    "split": split,
  }


def test_collab_pairs_hand_built():
  qi = {"q0": 0, "q1": 1}
  ii = {"a": 0, "b": 1, "c": 2}
  sessions = [
    _session("q0", ["a", "b", "c"], ["a", "b"], ["a"]),
    _session("q1", ["a", "c"], ["a"]),
    _session("q1", ["b"], ["b"], split="test"),  # held out
    _session("q9", ["a"], ["a"]),  # unknown query
    _session("q0", ["zz", "c"], ["c"]),  # unknown impressed item
  ]
  p = enc.collab_pairs(sessions, qi, ii, seed=0)
  assert sorted(map(tuple, p.q2i.tolist())) == [(0, 0), (0, 1), (0, 2), (1, 0)]
  # q0 and q1 share clicked item a -> a q2q pair (either order).
  assert {tuple(sorted(r)) for r in p.q2q.tolist()} == {(0, 1)}
  # items clicked under q0: a, b, c -> i2i pairs among them only.
  assert p.i2i.shape[1] == 2 and len(p.i2i) == 3
  assert all(a != b and {a, b} <= {0, 1, 2} for a, b in p.i2i.tolist())
  rank = sorted(map(tuple, p.rank.tolist()))
  # session 1: clicks a,b over shown-not-clicked c; order a over click-only b.
  # session 2: click a over c. session 5: nothing shown and not clicked.
  assert rank == [(0, 0, 1), (0, 0, 2), (0, 1, 2), (1, 0, 2)]
  assert p.skipped == {"unknown_query": 1, "unknown_item": 1}


def test_info_nce_hand_computed_and_duplicate_masking():
  a = jnp.eye(3)
  # Perfect alignment, tau=1: each row's loss = log(e + 2) - 1.
  loss = enc._info_nce(a, a, jnp.arange(3), jnp.arange(3), 1.0)
  np.testing.assert_allclose(float(loss), np.log(np.e + 2) - 1, rtol=1e-6)
  # Rows 0 and 1 share their item: each masks the other -> log(e + 1) - 1.
  loss = enc._info_nce(a, a, jnp.arange(3), jnp.array([5, 5, 7]), 1.0)
  want = (2 * (np.log(np.e + 1) - 1) + (np.log(np.e + 2) - 1)) / 3
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)


COLORS = ["red", "blue", "green", "black", "white", "pink"]
KINDS = ["dress", "shoes", "phone case", "jeans", "hat", "bag", "mug", "lamp"]


@pytest.fixture(scope="module")
def tiny_log():
  rng = random.Random(0)
  items = [f"{c} {k} model {j}" for c in COLORS for k in KINDS for j in range(2)]
  queries = sorted({f"{c} {k}" for c in COLORS for k in KINDS})
  qi = {q: i for i, q in enumerate(queries)}
  ii = {str(i): i for i in range(len(items))}
  sessions = []
  for _ in range(1500):
    q = rng.choice(queries)
    rel = [str(i) for i, t in enumerate(items) if t.startswith(q + " ")]
    shown = rel + [str(rng.randrange(len(items))) for _ in range(4)]
    click = rng.choice(rel)
    sessions.append(_session(q, shown, [click], [click] if rng.random() < 0.3 else []))
  pairs = enc.collab_pairs(sessions, qi, ii, seed=0)
  vocab = text_vocab.train_vocab(
    items + queries, text_vocab.VocabConfig(vocab_size=300)
  )
  return items, queries, pairs, vocab


def test_training_lowers_loss_and_ranks_clicked_items_first(tiny_log):
  items, queries, pairs, vocab = tiny_log
  cfg = enc.EncoderConfig(dim=32, hidden_dim=64, max_len=12)
  tcfg = enc.EncoderTrainConfig(steps=120, batch_size=64, log_every=20, seed=0)
  seen = []
  trained = enc.train_encoder(
    vocab, queries, items, pairs, cfg, tcfg, log_fn=lambda s, m: seen.append(s)
  )
  assert seen[0] == 1 and seen[-1] == 120 and len(seen) == len(trained.history)
  first, last = trained.history[0], trained.history[-1]
  assert last["loss"] < 0.6 * first["loss"]
  assert last["q2i"] < first["q2i"] and last["rank"] < first["rank"]
  q = trained.embed(queries)
  it = trained.embed(items)
  np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
  assert q.shape == (len(queries), 32) and it.shape == (len(items), 32)
  # Every clicked item of a query scores above the median random item, and
  # the top-1 item is a relevant one for nearly every query.
  scores = q @ it.T
  rng = np.random.default_rng(0)
  top1 = 0
  for n, query in enumerate(queries):
    rel = [i for i, t in enumerate(items) if t.startswith(query + " ")]
    rand = rng.choice(len(items), size=20, replace=False)
    assert scores[n, rel].min() > np.median(scores[n, rand])
    top1 += int(scores[n].argmax() in rel)
  assert top1 >= 0.9 * len(queries)


def test_training_is_seeded(tiny_log):
  items, queries, pairs, vocab = tiny_log
  cfg = enc.EncoderConfig(dim=16, hidden_dim=32, max_len=12)
  tcfg = enc.EncoderTrainConfig(steps=5, batch_size=32, seed=3)
  a = enc.train_encoder(vocab, queries, items, pairs, cfg, tcfg).embed(items)
  b = enc.train_encoder(vocab, queries, items, pairs, cfg, tcfg).embed(items)
  np.testing.assert_array_equal(a, b)


def test_no_clicks_is_an_error(tiny_log):
  items, queries, pairs, vocab = tiny_log
  empty = enc.collab_pairs([], {}, {})
  with pytest.raises(ValueError, match="no clicked"):
    enc.train_encoder(vocab, queries, items, empty)


def test_embed_chunks_match_one_batch(tiny_log):
  items, queries, pairs, vocab = tiny_log
  cfg = enc.EncoderConfig(dim=16, hidden_dim=32, max_len=12)
  tcfg = enc.EncoderTrainConfig(steps=2, batch_size=16)
  trained = enc.train_encoder(vocab, queries, items, pairs, cfg, tcfg)
  ids, _ = vocab.encode_batch(items, cfg.max_len)
  whole = enc.embed_ids(trained.model, ids, batch_size=len(items))
  chunked = enc.embed_ids(trained.model, ids, batch_size=7)  # padded last chunk
  np.testing.assert_allclose(whole, chunked, atol=1e-5)
  assert enc.embed_ids(trained.model, ids[:0]).shape == (0, 16)


def test_embed_compiles_once_per_chunk_shape(tiny_log):
  """Blocks of any size >= batch_size share one compiled forward (the
  streamed build embeds block by block); a shorter block adds one shape."""
  items, queries, pairs, vocab = tiny_log
  cfg = enc.EncoderConfig(dim=16, hidden_dim=32, max_len=11)  # a shape of its own
  trained = enc.train_encoder(
    vocab, queries, items, pairs, cfg, enc.EncoderTrainConfig(steps=2, batch_size=16)
  )
  ids, _ = vocab.encode_batch((items * 4)[:42], cfg.max_len)
  before = enc._forward._cache_size()
  blocks = [ids[:9], ids[9:29], ids[29:42]]  # 9, 20, 13 rows, chunks of 8
  out = np.concatenate([enc.embed_ids(trained.model, b, batch_size=8) for b in blocks])
  assert enc._forward._cache_size() == before + 1
  np.testing.assert_allclose(out, enc.embed_ids(trained.model, ids, 8), atol=1e-6)
  for _ in range(2):  # a 5-row block: one more shape, compiled once
    short = enc.embed_ids(trained.model, ids[:5], batch_size=8)
  assert enc._forward._cache_size() == before + 2
  np.testing.assert_allclose(short, out[:5], atol=1e-6)


def test_save_and_load_encoder(tiny_log, tmp_path):
  items, queries, pairs, vocab = tiny_log
  cfg = enc.EncoderConfig(dim=16, hidden_dim=32, max_len=12)
  trained = enc.train_encoder(
    vocab, queries, items, pairs, cfg, enc.EncoderTrainConfig(steps=3, batch_size=16)
  )
  enc.save_encoder(trained, tmp_path / "e")
  loaded = enc.load_encoder(tmp_path / "e")
  assert loaded.config == cfg
  np.testing.assert_allclose(loaded.embed(items), trained.embed(items), atol=1e-6)
  (tmp_path / "e" / "params.npz").unlink()
  with pytest.raises(FileNotFoundError, match="params.npz: missing"):
    enc.load_encoder(tmp_path / "e")
