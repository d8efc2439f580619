"""Composite item reward and format reward vs hand values (SPEC §6.5)."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.v2 import grpo_rewards as gr


def test_click_order_reward_order_beats_click():
  got = gr.click_order_reward([True, True, False, False], [True, False, True, False])
  np.testing.assert_array_equal(got, [4.0, 4.0, 3.0, 0.0])


def test_composite_item_reward_hand_values():
  got = gr.composite_item_reward(
    is_order=[True, False, False, False],
    is_click=[False, True, False, False],
    ctr=[0.2, 1.7, -0.5, 0.05],
    relevance=[3, 2, 0, 1],
  )
  np.testing.assert_allclose(got, [4.0 + 0.2 + 3, 3.0 + 1.0 + 2, 0.0 + 0.0 + 0, 1.05])


def test_composite_item_reward_rejects_a_bad_tier():
  with pytest.raises(ValueError, match="tier in 0..3, got 4"):
    gr.composite_item_reward([False], [False], [0.1], [4])


def test_format_reward_strings():
  got = gr.format_reward(
    [
      "<a_1><b_22><c_3><d_4><d_260>",
      "<a_1><b_22><c_3><d_4>",  # one OPQ code short
      "<a_1><b_22><c_3><d_4><d_260><d_1>",
      " <a_1><b_22><c_3><d_4><d_260>",
      "<a_1><c_3><b_22><d_4><d_260>",  # level order
      "red shoes",
    ]
  )
  np.testing.assert_array_equal(got, [1, 0, 0, 0, 0, 0])
  assert gr.format_reward(["<a_1><b_2><c_3>"], n_opq=0).tolist() == [1.0]


def test_format_reward_tokens_checks_each_position_range():
  ranges = [(10, 14), (14, 18), (18, 22), (22, 26), (26, 30)]
  toks = np.array([[10, 14, 18, 22, 26], [13, 17, 21, 25, 29], [10, 14, 18, 22, 25]])
  np.testing.assert_array_equal(gr.format_reward_tokens(toks, ranges), [1, 1, 0])
  with pytest.raises(ValueError, match="5 ranges"):
    gr.format_reward_tokens(toks[:, :4], ranges)
