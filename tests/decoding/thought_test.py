"""Direct CoT decoding: the greedy thought and the beam search after a
decoder prefix, against teacher-forced brute force."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.decoding import build_trie, thought, unique_sids
from tests.decoding.beam_search_test import (
  OFFSETS,
  RANGES,
  SIZES,
  assert_same_beams,
  batch_for,
  make_model,
  random_codes,
)

# The module (the package's `beam_search` name is the one-shot function).
beam_lib = importlib.import_module("onesearch_jax.decoding.beam_search")
STOP = 7  # a text id playing [GEN_IID]


def search(model, batch, trie, **kw):
  """``beam_lib.search`` jitted (static settings in ``kw``; ``prefix``
  traced)."""
  graphdef, state = nnx.split(model)
  prefix = kw.pop("prefix", None)

  @jax.jit
  def run(state, batch, prefix):
    return beam_lib.search(nnx.merge(graphdef, state), batch, trie, prefix=prefix, **kw)

  return run(state, batch, prefix)


@nnx.jit
def decode(model, dec_in, enc, mask):
  return model.decode(dec_in, enc, mask)


greedy = nnx.jit(thought.greedy_thought, static_argnums=3)


def _sid_logprobs(model, enc, mask, prefix, sids, restrict):
  """Teacher-forced log P(SID | BOS prefix) of one row for every SID tokens
  row of ``sids`` [U, S], decoded from position 0 (no padding): the brute
  force the left-aligned prefix must reproduce."""
  u = len(sids)
  dec_in = np.asarray([[0, *prefix, *row[:-1]] for row in sids], np.int32)
  enc, mask = jnp.repeat(enc, u, 0), jnp.repeat(mask, u, 0)
  logits = np.asarray(decode(model, jnp.asarray(dec_in), enc, mask))
  ids = np.arange(logits.shape[-1])
  total = np.zeros(u)
  for lvl in range(sids.shape[1]):
    rows = logits[:, len(prefix) + lvl]
    if restrict:
      a, e = RANGES[lvl]
      rows = np.where((ids >= a) & (ids < e), rows, -np.inf)
    lse = np.asarray(jax.scipy.special.logsumexp(rows, axis=-1))
    total += rows[np.arange(u), sids[:, lvl]] - lse
  return total


@pytest.mark.parametrize("restrict", [False, True])
def test_bos_prefix_equals_the_plain_search(restrict):
  model = make_model(restrict=restrict)
  trie = build_trie(random_codes(0, 25), SIZES, OFFSETS, dense_levels=1)
  batch = batch_for(model, 3)
  plain = search(model, batch, trie, beam_size=8)
  bos = (jnp.zeros((3, 1), jnp.int32), jnp.ones((3, 1), bool))
  got = search(model, batch, trie, beam_size=8, prefix=bos)
  assert_same_beams(got, plain)
  assert got.thought is None


@pytest.mark.parametrize("restrict", [False, True])
def test_prefix_beams_are_trie_sids_scored_as_teacher_forcing(restrict):
  model = make_model(restrict=restrict)
  codes = random_codes(1, 30)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  unique = unique_sids(codes)
  u = len(unique)
  batch = batch_for(model, 3, seed=2)
  # Prefixes of 0, 2 and 5 text tokens in one batch (different padding).
  spans = np.zeros((3, 5), np.int32)
  lengths = np.asarray([0, 2, 5], np.int32)
  rng = np.random.default_rng(3)
  for r, n in enumerate(lengths):
    spans[r, :n] = rng.integers(4, 30, size=n)
  prefix = thought.left_aligned_prefix(jnp.asarray(spans), jnp.asarray(lengths))
  np.testing.assert_array_equal(np.asarray(prefix[1]).sum(1), lengths + 1)  # BOS + span
  res = search(model, batch, trie, beam_size=u + 2, prefix=prefix)
  sid = np.asarray(res.sid_index)
  assert np.all(sid[:, :u] >= 0) and np.all(sid[:, u:] == -1)
  enc, mask = model.encode(batch)
  for r in range(3):
    np.testing.assert_array_equal(np.asarray(res.codes[r, :u]), unique[sid[r, :u]])
    assert len(set(sid[r, :u])) == u
    brute = _sid_logprobs(
      model, enc[r : r + 1], mask[r : r + 1], list(spans[r, : lengths[r]]),
      unique + np.asarray(OFFSETS), restrict,
    )  # fmt: skip
    order = np.argsort(-brute, kind="stable")
    np.testing.assert_allclose(np.asarray(res.scores[r, :u]), brute[order], atol=1e-4)
    np.testing.assert_allclose(brute[sid[r, :u]], brute[order], atol=1e-4)


def test_greedy_thought_is_the_argmax_over_text_tokens_until_the_marker():
  model = make_model(restrict=True)
  batch = batch_for(model, 4, seed=5)
  enc, mask = model.encode(batch)
  banned = tuple(RANGES)
  first = thought.ThoughtConfig(stop_id=STOP, max_len=6, banned=banned)
  span0, _ = greedy(model, enc, mask, first)
  # Make row 0's second greedy token the stop marker: it stops at length 2.
  stop = int(span0[0, 1])
  cfg = thought.ThoughtConfig(stop_id=stop, max_len=6, banned=banned)
  span, lengths = greedy(model, enc, mask, cfg)
  span, lengths = np.asarray(span), np.asarray(lengths)
  assert lengths[0] <= 2
  ids = np.arange(model.cfg.vocab_size)
  ok = (ids > 1) & ((ids < RANGES[0][0]) | (ids >= RANGES[-1][1]))
  ok[stop] = True
  # Brute force: the teacher-forced decoder over BOS + span (causal: the
  # zeros after the stop marker do not change earlier positions).
  dec_in = jnp.asarray(np.concatenate([np.zeros((4, 1), np.int32), span], 1))
  logits = np.asarray(decode(model, dec_in, enc, mask))
  for r in range(4):
    n = lengths[r]
    assert 1 <= n <= 6 and span[r, n - 1] == stop
    assert np.all(span[r, n:] == 0)
    assert stop not in span[r, : n - 1]
    for t in range(n):
      if t == 5 and n == 6 and span[r, 5] == stop:
        continue  # the marker forced at max_len
      want = int(np.argmax(np.where(ok, logits[r, t], -np.inf)))
      assert span[r, t] == want
  # A compiled searcher with the thought (query blocks of 1) decodes the
  # same span, then continues it like the search after that prefix.
  trie = build_trie(random_codes(4, 20), SIZES, OFFSETS, dense_levels=1)
  searcher = beam_lib.make_beam_search(
    model, trie, beam_size=4, query_block=1, thought=cfg
  )
  res = searcher(batch)
  np.testing.assert_array_equal(np.asarray(res.thought), span)
  prefix = thought.left_aligned_prefix(jnp.asarray(span), jnp.asarray(lengths))
  assert_same_beams(res, search(model, batch, trie, beam_size=4, prefix=prefix))
  with pytest.raises(ValueError, match="not both"):
    search(model, batch, trie, beam_size=4, thought=cfg, prefix=prefix)
