"""CUR / ICR on hand-built examples (expected values computed by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.khqe import sid_metrics


def test_hand_built_five_items_with_opq_columns():
  codes = np.array(
    [
      [0, 0, 0, 1, 1],
      [0, 0, 0, 1, 1],  # same full SID as item 0
      [0, 1, 0, 0, 0],
      [2, 1, 1, 0, 0],
      [2, 1, 1, 0, 1],  # differs from item 3 only in the OPQ code
    ]
  )
  m = sid_metrics.cur_icr(codes, (4, 2, 2))
  assert m["CUR_L1"] == 2 / 4  # {0, 2}
  assert m["CUR_L1xL2"] == 3 / 8  # {(0,0), (0,1), (2,1)}
  assert m["CUR_Total"] == 4 / 16  # 4 distinct full SIDs / (4*2*2)
  assert m["ICR"] == 3 / 5  # items 2, 3, 4 are alone on their SID
  assert m["collision_rate"] == pytest.approx(2 / 5)
  assert (m["n_items"], m["n_sids"]) == (5, 4)


def test_all_items_on_one_sid():
  codes = np.zeros((7, 3), int)
  m = sid_metrics.cur_icr(codes, (8, 8, 8))
  assert m["CUR_L1"] == 1 / 8
  assert m["CUR_L1xL2"] == 1 / 64
  assert m["CUR_Total"] == 1 / 512
  assert m["ICR"] == 0.0


def test_full_utilisation_rq_only():
  # Every (a, b, c) of a 2x2x2 codebook used exactly once.
  codes = np.array([[a, b, c] for a in range(2) for b in range(2) for c in range(2)])
  m = sid_metrics.cur_icr(codes, (2, 2, 2))
  assert m["CUR_L1"] == m["CUR_L1xL2"] == m["CUR_Total"] == m["ICR"] == 1.0


def test_rejects_bad_shapes():
  with pytest.raises(ValueError, match="codes"):
    sid_metrics.cur_icr(np.zeros((3, 2), int), (2, 2, 2))
  with pytest.raises(ValueError, match="codes"):
    sid_metrics.cur_icr(np.zeros((0, 3), int), (2, 2, 2))
