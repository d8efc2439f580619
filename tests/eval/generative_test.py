"""eval.generative: beams of the click/order sets -> item rows of the eval set."""

import types

import numpy as np
import pytest

from onesearch_jax.eval import examples, generative
from onesearch_jax.eval.sid_items import SidItemIndex

# 4 items, 3 SIDs: items b and c collide on SID (0, 1); c is more popular.
ITEMS = ("a", "b", "c", "d")
CODES = np.array([[0, 0], [0, 1], [0, 1], [1, 0]])
POP = np.array([1.0, 1.0, 5.0, 2.0])
# unique SIDs in lexicographic order: 0 -> (0, 0), 1 -> (0, 1), 2 -> (1, 0)


def _eval_set():
  e = 3
  return examples.EvalSet(
    item_ids=ITEMS,
    queries=("q0", "q1", "q2"),
    user_ids=("u0", "u1", "u2"),
    session_ids=("s0", "s1", "s2"),
    times=np.zeros(e, np.int64),
    has_click=np.array([True, True, False]),
    has_order=np.array([False, True, True]),
    click_targets=np.array([[0], [1], [-1]], np.int32),
    order_targets=np.array([[-1], [1], [3]], np.int32),
    rel_items=np.full((e, 1), -1, np.int32),
    rel_grades=np.zeros((e, 1), np.int32),
    query_freq=np.array(["head"] * e),
    user_slice=np.array(["warm"] * e),
    click_item_slice=np.array(["warm"] * e),
    order_item_slice=np.array(["warm"] * e),
    train_query_counts={},
    skips={},
  )


class _FakeSearcher:
  """Returns fixed beams per query string row (first token of the batch)."""

  beam_size = 2

  def __init__(self, beams):
    self.beams = beams

  def __call__(self, batch):
    q = np.asarray(batch["encoder_input_tokens"])[:, 0]
    sid = np.stack([self.beams[int(i)] for i in q]).astype(np.int32)
    return types.SimpleNamespace(sid_index=sid, scores=-np.ones(sid.shape, np.float32))


def _inputs(rows, sessions, batch_size=2):
  """Batches padded to batch_size; metas only for real rows."""
  for start in range(0, len(rows), batch_size):
    chunk = rows[start : start + batch_size]
    tok = np.zeros((batch_size, 3), np.int32)
    tok[: len(chunk), 0] = chunk
    metas = [{"session_id": sessions[r]} for r in chunk]
    yield {"encoder_input_tokens": tok}, metas


def test_rank_eval_set_maps_beams_to_items_with_tie_policy():
  es = _eval_set()
  index = SidItemIndex.from_arrays(ITEMS, CODES, POP)
  searcher = _FakeSearcher({0: [1, 0], 1: [0, -1], 2: [2, 2], 0 + 9: [0, 0]})
  per_set = {
    "click": generative.decode_set(searcher, _inputs([0, 1], es.session_ids)),
    "order": generative.decode_set(searcher, _inputs([1, 2], es.session_ids)),
  }
  rows, sid_rows, diag = generative.rank_eval_set(es, per_set, index, k_max=3)
  # row 0: SID 1 -> (c before b by popularity), then SID 0 -> a
  assert rows[0].tolist() == [2, 1, 0]
  # row 1: SID 0 -> a, then an empty beam
  assert rows[1].tolist() == [0, -1, -1]
  # row 2: SID 2 twice -> d once (the repeat is dropped)
  assert rows[2].tolist() == [3, -1, -1]
  assert sid_rows.tolist() == [[1, 0], [0, -1], [2, 2]]
  # 6 beams, 5 valid; one duplicate among the valid ones
  assert diag["valid_sid_rate"] == pytest.approx(5 / 6)
  assert diag["duplicate_rate"] == pytest.approx(1 / 5)
  assert diag["sets_differ"] == 0.0


def test_misaligned_rows_are_refused_with_the_row():
  es = _eval_set()
  searcher = _FakeSearcher({0: [0, 1], 1: [0, 1], 2: [0, 1]})
  beams = generative.decode_set(searcher, _inputs([1, 0], es.session_ids))
  with pytest.raises(ValueError, match="first mismatch at row 0"):
    generative.check_alignment(es, "click", beams)


class _CountingSearcher(_FakeSearcher):
  def __init__(self, beams):
    super().__init__(beams)
    self.calls = 0

  def __call__(self, batch):
    self.calls += 1
    return super().__call__(batch)


def test_decode_sets_decodes_each_distinct_row_once():
  sessions = ("s0", "s1", "s2", "s3", "s4")
  beams = {i: [i, -1] for i in range(5)}
  searcher = _CountingSearcher(beams)
  got = generative.decode_sets(
    searcher,
    {
      "click": _inputs([0, 1, 2, 3], sessions),
      "order": _inputs([3, 1], sessions),  # every row seen: no decode
    },
  )
  assert searcher.calls == 2
  for kind, rows in (("click", [0, 1, 2, 3]), ("order", [3, 1])):
    want = generative.decode_set(_FakeSearcher(beams), _inputs(rows, sessions))
    np.testing.assert_array_equal(got[kind].sid_index, want.sid_index)
    np.testing.assert_array_equal(got[kind].scores, want.scores)
    assert got[kind].session_ids == want.session_ids
  assert (got["click"].reused, got["order"].reused) == (0, 2)

  # a batch with a new row (s4) or a seen session with other inputs is decoded
  def changed():
    yield from _inputs([1, 4], sessions)
    tok = np.zeros((2, 3), np.int32)
    tok[0, 0], tok[0, 1] = 2, 7  # s2 with different inputs
    yield {"encoder_input_tokens": tok}, [{"session_id": "s2"}]

  searcher = _CountingSearcher(beams)
  got = generative.decode_sets(
    searcher, {"click": _inputs([0, 1, 2, 3], sessions), "order": changed()}
  )
  assert searcher.calls == 2 + 2
  assert got["order"].reused == 0
  assert got["order"].sid_index[:, 0].tolist() == [1, 4, 2]
