"""Beam search against exhaustive scoring of every catalogue SID."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from onesearch_jax import sharding as sh
from onesearch_jax.decoding import (
  beam_search,
  build_trie,
  make_beam_search,
  score_all_sids,
  unique_sids,
)
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import create_model
from onesearch_jax.train import synthetic

SIZES = (4, 3, 5)  # V_l of a 3-level toy SID
RANGES = synthetic.sid_ranges_for(64, 30, SIZES)
OFFSETS = tuple(a for a, _ in RANGES)


def make_model(restrict: bool = False, tie: bool = False, seed: int = 0, **kw):
  cfg = ModelConfig.tiny(
    sid_ranges=RANGES,
    restrict_sid_levels=restrict,
    tie_embeddings=tie,
    emb_placeholder_id=3,
    **kw,
  )
  return create_model(cfg, seed=seed)


def random_codes(seed: int, n: int, sizes=SIZES) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, v, size=n) for v in sizes], axis=1)


def batch_for(model, b: int, seed: int = 1):
  return synthetic.make_batch(model.cfg, b, 7, seed=seed)


def masked_problem(b: int, n_codes: int, seed: int, share: float):
  """A restricted model, a dense-1 trie of n_codes random SIDs, a [b, L] batch
  and [b, N] allowed items (each with probability `share`), and the rng."""
  model = make_model(restrict=True)
  codes = random_codes(seed, n_codes)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  batch = batch_for(model, b, seed=seed + 4)
  rng = np.random.default_rng(seed)
  allowed = rng.random((b, len(codes))) < share
  return model, trie, batch, allowed, rng


def assert_same_beams(got, want, atol: float = 1e-5):
  """Two BeamResults: equal tokens, codes and sid_index; scores within atol."""
  for name in ("tokens", "codes", "sid_index"):
    np.testing.assert_array_equal(
      np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
    )
  np.testing.assert_allclose(np.asarray(got.scores), np.asarray(want.scores), atol=atol)


def _exhaustive_top(scores, w):
  """Top-w (sid_index, score) per row by exhaustive scores [B, U]."""
  order = np.argsort(-scores, axis=1, kind="stable")[:, :w]
  return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("restrict,tie,dense", [(False, False, 1), (True, True, 0)])
def test_constrained_full_beam_equals_exhaustive_top_k(restrict, tie, dense):
  model = make_model(restrict=restrict, tie=tie)
  codes = random_codes(0, 25)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=dense)
  unique = unique_sids(codes)
  u = len(unique)
  batch = batch_for(model, 3)
  res = beam_search(model, batch, trie, beam_size=u + 4)
  ex = score_all_sids(model, batch, unique, OFFSETS, chunk_size=8)
  order, top = _exhaustive_top(ex, u)
  np.testing.assert_array_equal(np.asarray(res.sid_index[:, :u]), order)
  np.testing.assert_allclose(np.asarray(res.scores[:, :u]), top, atol=1e-4)
  # Padding beams past the catalogue: -inf, sid -1, codes -1, tokens 0.
  assert np.all(np.isneginf(res.scores[:, u:]))
  assert np.all(np.asarray(res.sid_index[:, u:]) == -1)
  assert np.all(np.asarray(res.codes[:, u:]) == -1)
  assert np.all(np.asarray(res.tokens[:, u:]) == 0)
  # Emitted codes/tokens are the SIDs at sid_index.
  codes_out = np.asarray(res.codes[:, :u])
  np.testing.assert_array_equal(codes_out, unique[order])
  np.testing.assert_array_equal(
    np.asarray(res.tokens[:, :u]), codes_out + np.asarray(OFFSETS)
  )


def test_narrow_beam_is_valid_unique_sorted_and_scored_exactly():
  model = make_model()
  codes = random_codes(1, 40)
  trie = build_trie(codes, SIZES, OFFSETS)
  unique = unique_sids(codes)
  batch = batch_for(model, 4, seed=2)
  res = beam_search(model, batch, trie, beam_size=6)
  ex = score_all_sids(model, batch, unique, OFFSETS)
  sid = np.asarray(res.sid_index)
  scores = np.asarray(res.scores)
  assert np.all(sid >= 0)  # 6 < U valid beams
  for b in range(4):
    assert len(set(sid[b])) == 6  # unique
    assert np.all(np.diff(scores[b]) <= 0)  # sorted
    np.testing.assert_array_equal(np.asarray(res.codes[b]), unique[sid[b]])  # valid
    np.testing.assert_allclose(scores[b], ex[b, sid[b]], atol=1e-4)
    # beam search never beats the exhaustive optimum
    assert scores[b, 0] <= ex[b].max() + 1e-4


def test_allowed_items_equals_exhaustive_top_k_over_allowed_sids():
  model = make_model(restrict=True)
  codes = random_codes(2, 30)
  codes = np.concatenate([codes, codes[:6]])  # items sharing SIDs
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=2)
  unique = unique_sids(codes)
  b = 3
  rng = np.random.default_rng(5)
  allowed = rng.random((b, len(codes))) < 0.3
  allowed[2] = False  # a request with nothing in stock
  batch = batch_for(model, b, seed=3)
  w = len(unique)
  res = beam_search(model, batch, trie, beam_size=w, allowed_items=allowed)
  ex = score_all_sids(model, batch, unique, OFFSETS)
  item_sid = np.asarray(trie.item_sid)
  for r in range(b):
    ok_sids = np.unique(item_sid[allowed[r]])
    masked = np.where(np.isin(np.arange(w), ok_sids), ex[r], -np.inf)
    n_ok = len(ok_sids)
    order, top = _exhaustive_top(masked[None], n_ok)
    np.testing.assert_array_equal(np.asarray(res.sid_index[r, :n_ok]), order[0])
    np.testing.assert_allclose(np.asarray(res.scores[r, :n_ok]), top[0], atol=1e-4)
    assert np.all(np.asarray(res.sid_index[r, n_ok:]) == -1)
  assert np.all(np.asarray(res.sid_index[2]) == -1)


def test_level_masks_restrict_codes():
  model = make_model()
  codes = random_codes(3, 30)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  unique = unique_sids(codes)
  batch = batch_for(model, 2, seed=4)
  first = np.zeros((2, SIZES[0]), bool)
  first[0, [0, 2]] = True
  first[1, 1] = True
  last = np.ones((2, SIZES[2]), bool)
  last[:, 0] = False
  w = len(unique)
  res = beam_search(model, batch, trie, beam_size=w, level_masks=(first, None, last))
  ex = score_all_sids(model, batch, unique, OFFSETS)
  for r in range(2):
    ok = first[r][unique[:, 0]] & last[r][unique[:, 2]]
    n_ok = int(ok.sum())
    order, top = _exhaustive_top(np.where(ok, ex[r], -np.inf)[None], n_ok)
    np.testing.assert_array_equal(np.asarray(res.sid_index[r, :n_ok]), order[0])
    np.testing.assert_allclose(np.asarray(res.scores[r, :n_ok]), top[0], atol=1e-4)
    assert np.all(np.asarray(res.sid_index[r, n_ok:]) == -1)


def test_unconstrained_equals_brute_force_on_two_levels():
  model = make_model(restrict=False)
  v0, v1 = SIZES[0], SIZES[1]
  every = np.stack(np.meshgrid(np.arange(v0), np.arange(v1), indexing="ij"), -1)
  every = every.reshape(-1, 2)
  batch = batch_for(model, 3, seed=6)
  w = 5  # >= v0: every level-0 prefix survives, so the search is exact
  res = beam_search(model, batch, None, beam_size=w, num_steps=2)
  ex = score_all_sids(model, batch, every, OFFSETS[:2])
  order, top = _exhaustive_top(ex, w)
  np.testing.assert_array_equal(np.asarray(res.codes), every[order])
  np.testing.assert_allclose(np.asarray(res.scores), top, atol=1e-4)
  assert np.all(np.asarray(res.sid_index) == -1)


def test_compiled_searcher_reuses_program_and_takes_qformer_features():
  model = make_model(restrict=True)
  codes = random_codes(4, 20)
  kw = dict(dense_levels=1, capacity=60, item_capacity=60)
  trie = build_trie(codes, SIZES, OFFSETS, **kw)
  searcher = make_beam_search(model, trie, beam_size=8)
  b1, b2 = batch_for(model, 2, seed=7), batch_for(model, 2, seed=8)
  r1 = searcher(b1)
  trie2 = build_trie(np.concatenate([codes, random_codes(9, 20)]), SIZES, OFFSETS, **kw)
  s2 = searcher.with_trie(trie2)
  r2 = s2(b2)
  assert searcher.fn._cache_size() == 1  # one compile for both tries/batches
  # Independent check of the second call: exhaustive scores of its SIDs.
  ex = score_all_sids(model, b2, np.asarray(r2.codes).reshape(-1, 3), OFFSETS)
  np.testing.assert_allclose(
    np.asarray(r2.scores).reshape(-1),
    np.diag(ex[np.repeat(np.arange(2), 8)]),
    atol=1e-4,
  )
  assert np.asarray(r1.scores).shape == (2, 8)
  # The long-seq features feed the Q-Former: other features, other scores.
  b3 = dict(b1, long_seq_features=b1["long_seq_features"][::-1].copy())
  assert not np.allclose(np.asarray(searcher(b3).scores), np.asarray(r1.scores))


def test_sharded_batch_equals_single_device():
  model, trie, batch, allowed, _ = masked_problem(8, 30, seed=5, share=0.5)
  single = make_beam_search(model, trie, beam_size=6)(batch, allowed)
  mesh = sh.make_mesh(sh.MeshConfig(shape=(8, 1, 1)))
  sharded_search = make_beam_search(model, trie, beam_size=6, mesh=mesh)
  sharded = sharded_search(batch, allowed)
  assert len(sharded.scores.sharding.device_set) == 8
  assert_same_beams(sharded, single)


def test_onesearch_layout_with_shared_opq_range_equals_exhaustive():
  """Levels a, b, then two OPQ codes sharing one 'd' range (2nd code + V)."""
  v = 4
  d0 = 30 + 3 + 2
  ranges = ((30, 33), (33, 35), (d0, d0 + 2 * v), (d0, d0 + 2 * v))
  cfg = ModelConfig.tiny(sid_ranges=ranges, restrict_sid_levels=True)
  model = create_model(cfg, seed=3)
  sizes, offsets = (3, 2, v, v), (30, 33, d0, d0 + v)
  codes = random_codes(6, 30, sizes)
  trie = build_trie(codes, sizes, offsets, dense_levels=1)
  unique = unique_sids(codes)
  batch = synthetic.make_batch(cfg, 2, 7, seed=5)
  res = beam_search(model, batch, trie, beam_size=len(unique))
  ex = score_all_sids(model, batch, unique, offsets)
  order, top = _exhaustive_top(ex, len(unique))
  np.testing.assert_array_equal(np.asarray(res.sid_index), order)
  np.testing.assert_allclose(np.asarray(res.scores), top, atol=1e-4)
  np.testing.assert_array_equal(
    np.asarray(res.tokens), unique[order] + np.asarray(offsets)
  )


@pytest.mark.parametrize("block", [1, 2])
def test_query_blocks_equal_one_block(block):
  model, trie, batch, allowed, rng = masked_problem(4, 40, seed=6, share=0.7)
  masks = (rng.random((4, SIZES[0])) < 0.8, None, rng.random((4, SIZES[2])) < 0.8)
  one = make_beam_search(model, trie, beam_size=7, query_block=None)(
    batch, allowed, masks
  )
  blocked = make_beam_search(model, trie, beam_size=7, query_block=block)(
    batch, allowed, masks
  )
  assert_same_beams(blocked, one)


def test_beam_slots_per_level_are_bounded_by_distinct_prefixes():
  bs = importlib.import_module("onesearch_jax.decoding.beam_search")
  step = importlib.import_module("onesearch_jax.decoding.beam_step")
  codes = random_codes(7, 30)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  n = trie.num_nodes
  assert step.beams_per_level(trie, SIZES, 1000, 3) == (1, n[1], n[2], n[3])
  assert step.beams_per_level(trie, SIZES, 5, 3) == (1, min(5, n[1]), 5, 5)
  assert step.beams_per_level(None, SIZES, 10, 2) == (1, 4, 10)
  assert bs.num_query_blocks(32, 4) == 8
  assert bs.num_query_blocks(32, 3) == 8  # 32 / 3 -> 10 -> largest divisor 8
  assert bs.num_query_blocks(32, 4, shards=8) == 1
  assert bs.num_query_blocks(8, None) == 1


def test_shared_cross_kv_exhaustive_scores_equal_full_forward():
  model = make_model(restrict=True)
  unique = unique_sids(random_codes(8, 25))
  batch = batch_for(model, 3, seed=4)
  full = score_all_sids(model, batch, unique, OFFSETS, chunk_size=8)
  fast = score_all_sids(
    model, batch, unique, OFFSETS, chunk_size=8, shared_cross_kv=True
  )
  np.testing.assert_allclose(fast, full, atol=1e-4)
