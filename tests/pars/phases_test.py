"""Phase 1 / phase 2 example construction, batches and the rerank rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onesearch_jax.pars import phases, rerank, rewards
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec
from onesearch_jax.train import synthetic

A, B, C = 0, 1, 2
S1, S2, S3 = 0, 1, 2
# code ranges of the hand table: (4, 2, 2, 4, 4)
SID_RANGES = synthetic.sid_ranges_for(64, 24, (4, 2, 2, 4, 4))


@pytest.fixture()
def tools(hand_log):
  table = rewards.RewardTable.build(hand_log)
  codec = SidCodec.from_ranges(SID_RANGES, hand_log.code_ranges)
  lookup = ItemLookup.build(
    hand_log.item_codes, hand_log.has_sid, table.counts.clicks, hand_log.code_ranges
  )
  return table, codec, lookup


def test_codec_round_trip_and_shared_d_range():
  codec = SidCodec.from_ranges(SID_RANGES, (4, 2, 2, 4, 4))
  codes = np.array([[3, 1, 0, 2, 3]])
  tok = codec.tokens(codes)
  np.testing.assert_array_equal(tok, [[27, 29, 30, 34, 39]])
  back, ok = codec.codes(tok)
  np.testing.assert_array_equal(back, codes)
  assert ok.all()
  _, ok = codec.codes(np.array([[24, 28, 30, 32, 36], [28, 28, 30, 32, 36]]))
  np.testing.assert_array_equal(ok, [True, False])
  # one shared <d_> range for both OPQ codes: the second is offset by opq_codes
  shared = SidCodec.from_ranges(((10, 14), (14, 16), (16, 18), (18, 26), (18, 26)),
                                (4, 2, 2, 4, 4))  # fmt: skip
  assert shared.starts == (10, 14, 16, 18, 22)


def test_phase2_examples(hand_log, tools):
  table, codec, _ = tools
  cfg = phases.PhaseDataConfig(num_negatives=2, max_positives=2, seed=0)
  ex = phases.logged_examples(hand_log, table, codec, cfg)
  # s1: A (purchase); s2: A (rec-purchase proxy) first, then B (click)
  assert ex.session.tolist() == [S1, S2, S2]
  np.testing.assert_array_equal(ex.levels[:, 0], [rewards.PURCHASE, rewards.REC_PURCHASE,
                                                  rewards.CLICK])  # fmt: skip
  np.testing.assert_array_equal(ex.chosen, codec.tokens(hand_log.item_codes[[A, A, B]]))
  for x in range(len(ex)):
    lv = ex.levels[x, 1:][ex.rejected_mask[x]]
    assert lv.size >= 1 and np.isin(lv, rewards.NEGATIVE_LEVELS).all()
    want = table.rewards(
      np.full(3, ex.session[x]),
      np.array(
        [codec_item(codec, hand_log, t) for t in [ex.chosen[x], *ex.rejected[x]]]
      ),
    )
    np.testing.assert_allclose(ex.rewards[x][np.r_[True, ex.rejected_mask[x]]],
                               want[np.r_[True, ex.rejected_mask[x]]], rtol=1e-6)  # fmt: skip
  # s1 negatives: B shown-not-clicked (slot 0), C other category (slot 1)
  np.testing.assert_array_equal(
    ex.rejected[0], codec.tokens(hand_log.item_codes[[B, C]])
  )
  assert ex.stats["examples"] == 3


def test_phase2_exposed_negatives_are_the_sessions_unclicked_impressions(
  hand_log, tools
):
  table, codec, _ = tools
  cfg = phases.PhaseDataConfig(
    num_negatives=2, max_positives=2, seed=0, phase2_rejected="exposed"
  )
  ex = phases.logged_examples(hand_log, table, codec, cfg)
  # s1 showed A B and bought A: A over B. s2 showed B C and clicked B; A is
  # its rec-purchase proxy: A over C, B over C. C is the only exposure of s2.
  assert ex.session.tolist() == [S1, S2, S2]
  np.testing.assert_array_equal(ex.chosen, codec.tokens(hand_log.item_codes[[A, A, B]]))
  np.testing.assert_array_equal(ex.rejected_mask, [[True, False]] * 3)
  np.testing.assert_array_equal(
    ex.rejected[:, 0], codec.tokens(hand_log.item_codes[[B, C, C]])
  )
  np.testing.assert_array_equal(ex.levels[:, 1], [rewards.EXPOSED] * 3)
  np.testing.assert_array_equal(ex.levels[:, 2], [-1] * 3)
  with pytest.raises(ValueError, match="phase2_rejected"):
    phases.PhaseDataConfig(phase2_rejected="shown")


def test_phase1_pool_unclicked_leaves_out_sessions_with_a_click(hand_log):
  assert phases.phase1_pool(hand_log, "train").tolist() == [S1, S2]
  assert phases.phase1_pool(hand_log, "unclicked").tolist() == []
  # without s2's click, s2 is the one unclicked train session (s3 is test)
  n = hand_log.n_items
  keep = hand_log.clicked_keys // n != S2
  log = dataclasses.replace(hand_log, clicked_keys=hand_log.clicked_keys[keep])
  assert phases.phase1_pool(log, "unclicked").tolist() == [S2]
  with pytest.raises(ValueError, match="phase1_pool"):
    phases.PhaseDataConfig(phase1_pool="test")


def codec_item(codec, interactions, tokens):
  codes, _ = codec.codes(tokens)
  hit = np.flatnonzero((interactions.item_codes == codes).all(1))
  return int(hit[0]) if hit.size else -1


R_ITEM = np.array([0.5, 0.1, 0.9])  # R_score of A, B, C


def _rm_score(session, items):
  """R_ITEM of each candidate item, -inf for an invalid SID (item -1)."""
  return np.where(items >= 0, R_ITEM[np.maximum(items, 0)], -np.inf)


def test_phase1_keeps_changed_orders(hand_log, tools):
  table, codec, lookup = tools
  toks = codec.tokens(hand_log.item_codes)
  invalid = codec.tokens(np.array([2, 0, 0, 0, 0]))  # no item has this SID
  # session s2: generator order B, A, invalid, C; session s3: A, C, B, invalid
  tokens = np.stack([
    np.stack([toks[B], toks[A], invalid, toks[C]]),
    np.stack([toks[A], toks[C], toks[B], invalid]),
  ])  # fmt: skip
  gen = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])

  ex = phases.rm_guided_from_candidates(
    np.array([S2, S3]), tokens, gen, _rm_score, table, codec, lookup, num_negatives=2
  )
  # s2: logged positives B (click) and A (rec purchase) -> A (better level),
  # generator rank 1 -> kept. s3: no positive, RM top-1 = C (rank 1) -> kept.
  assert ex.session.tolist() == [S2, S3]
  np.testing.assert_array_equal(ex.chosen, [toks[A], toks[C]])
  # s2 rejected: non-positives {invalid, C}; invalid demoted (2 -> 3) first
  np.testing.assert_array_equal(ex.rejected[0], [invalid, toks[C]])
  # s3: RM order C, A, B, invalid; demoted: A (0->1), B? (2->2 no), invalid no
  np.testing.assert_array_equal(ex.rejected[1], [toks[A], invalid])
  assert ex.stats["invalid_sids"] == 2 and ex.stats["kept"] == 2

  unchanged = phases.rm_guided_from_candidates(
    np.array([S3]),
    tokens[1:, [1, 0, 2, 3]],
    gen[1:],
    _rm_score,
    table,
    codec,
    lookup,
    2,
  )
  assert len(unchanged) == 0 and unchanged.stats["unchanged"] == 1


def test_phase1_with_fake_generate_fn_and_batches(hand_log, tools):
  table, codec, lookup = tools
  toks = codec.tokens(hand_log.item_codes)

  def prompt_fn(ids):
    return {
      "encoder_input_tokens": np.array([[2 + int(s[1:]), 3, 0] for s in ids], np.int32)
    }

  def generate(prompts):
    b = prompts["encoder_input_tokens"].shape[0]
    return np.broadcast_to(toks[[B, C, A]], (b, 3, 5)), np.tile([3.0, 2.0, 1.0], (b, 1))

  def score_fn(session, items):
    return np.where(items == A, 1.0, 0.0) + 0 * session

  cfg = phases.PhaseDataConfig(num_negatives=2, phase1_sessions=5, generate_batch=1)
  ex = phases.rm_guided_examples(hand_log, table, codec, lookup, score_fn, prompt_fn,
                                 generate, cfg)  # fmt: skip
  # 2 train sessions sampled; s1: positive A (rank 2) kept; s2: A/B positive.
  assert ex.stats["generated"] == 2 and len(ex) == 2
  stream = phases.batch_stream(ex, hand_log, prompt_fn, batch_size=3, seed=1)
  it = stream(0)
  first, second = next(it), next(it)
  np.testing.assert_array_equal(next(stream(1))["decoder_target_tokens"],
                                second["decoder_target_tokens"])  # fmt: skip
  assert first["decoder_target_tokens"].shape == (3, 3, 6)
  assert first["example_weight"].tolist() == [1.0, 1.0, 0.0]
  np.testing.assert_array_equal(first["decoder_target_tokens"][..., -1], 1)


def test_rerank_order():
  rm = np.array([[0.2, 0.9, -np.inf, 0.9, 0.1]])
  gen = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
  np.testing.assert_array_equal(rerank.rerank_order(rm, gen), [[1, 3, 0, 4, 2]])
  # key rm + 0.5 gen: 2.7, 2.9, invalid, 1.9, 0.6
  np.testing.assert_array_equal(rerank.rerank_order(rm, gen, 0.5), [[1, 0, 3, 4, 2]])


def test_rm_reranker(hand_log, tools):
  _, codec, lookup = tools
  toks = codec.tokens(hand_log.item_codes)

  def score_fn(session, items):
    return R_ITEM[np.maximum(items, 0)] + 0 * session

  rr = rerank.RMReranker(score_fn, hand_log.session_index(), codec, lookup)
  invalid = codec.tokens(np.array([2, 0, 0, 0, 0]))
  tokens = np.stack([toks[A], invalid, toks[B], toks[C]])[None]
  out_tok, out_gen, out_rm = rr(["s3"], tokens, np.array([[4.0, 3.0, 2.0, 1.0]]))
  np.testing.assert_array_equal(out_tok[0], [toks[C], toks[A], toks[B], invalid])
  np.testing.assert_array_equal(out_gen[0], [1.0, 4.0, 2.0, 3.0])
  assert out_rm[0, -1] == -np.inf
  with pytest.raises(KeyError, match="unknown session"):
    rr(["nope"], tokens, np.zeros((1, 4)))


def test_phase1_distill_lists_keep_every_session_in_rm_order(hand_log, tools):
  table, codec, lookup = tools
  toks = codec.tokens(hand_log.item_codes)
  invalid = codec.tokens(np.array([2, 0, 0, 0, 0]))  # no item has this SID
  # s2: generator order B, A, invalid, C; s3: C, A, B, invalid (C already first)
  tokens = np.stack([
    np.stack([toks[B], toks[A], invalid, toks[C]]),
    np.stack([toks[C], toks[A], toks[B], invalid]),
  ])  # fmt: skip
  gen = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])

  ex = phases.rm_guided_from_candidates(
    np.array([S2, S3]), tokens, gen, _rm_score, table, codec, lookup,
    num_negatives=3, rejected="distill", gen_weight=0.1,
  )  # fmt: skip
  # Both sessions kept (s3's top is already the generator's first), each list
  # in R_score + 0.1 * gen order with the invalid candidate dropped.
  assert ex.session.tolist() == [S2, S3]
  assert ex.stats["kept"] == 2 and ex.stats["unchanged"] == 1
  np.testing.assert_array_equal(ex.chosen, [toks[C], toks[C]])
  np.testing.assert_array_equal(ex.rejected[0, :2], [toks[A], toks[B]])
  np.testing.assert_array_equal(ex.rejected[1, :2], [toks[A], toks[B]])
  assert ex.rejected_mask.tolist() == [[True, True, False]] * 2
  # rewards hold the teacher keys: R_score + 0.1 * generator score
  np.testing.assert_allclose(ex.rewards[0, :3], [0.9 + 0.1, 0.5 + 0.3, 0.1 + 0.4])
  np.testing.assert_allclose(ex.rewards[1, :3], [0.9 + 0.4, 0.5 + 0.3, 0.1 + 0.2])
  assert (ex.levels[:, 3] == -1).all() and (ex.levels[:, :3] >= 0).all()
