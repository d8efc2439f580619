"""GRPO rewards of OneSearch-V2 (SPEC §6.5): composite item reward, format.

R_item = R_C&O + R_CTR + R_Rel per rollout:
  * R_C&O: 4.0 if the generated SID is one the user ordered, else 3.0 if
    one the user clicked, else 0 (the official ``rlhf/reward.py`` values;
    the V2 notes' "V_o = 3, V_c = 4" contradicts the code, which wins);
  * R_CTR: the calibrated posterior CTR of the SID, clipped to [0, 1]
    (``pars.rewards.calibrated_rates`` gives it on our world);
  * R_Rel: the 4-tier relevance 3 Excellent, 2 Related, 1 Mismatch,
    0 Irrelevant (a SID without a judgement scores 0, as in the code).

The format reward (an auxiliary signal for *unconstrained* decoding) is 1
when a completion is a well-formed SID: the string form matches
``^<a_\\d+><b_\\d+><c_\\d+><d_\\d+><d_\\d+>$`` (two OPQ codes); the token form
checks each position's token id lies in that position's range.

Choices: an ordered SID that is also clicked scores the order value only
(the code's if/elif); ``format_reward_tokens`` is the stricter id-range
form of the regex (a ``<d_>`` token in the first OPQ half at the second OPQ
position is malformed for it, fine for the regex).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

V_ORDER = 4.0
V_CLICK = 3.0
RELEVANCE_TIERS = (0, 1, 2, 3)  # Irrelevant, Mismatch, Related, Excellent


def click_order_reward(
  is_order: np.ndarray,
  is_click: np.ndarray,
  *,
  v_order: float = V_ORDER,
  v_click: float = V_CLICK,
) -> np.ndarray:
  """R_C&O: v_order for an ordered SID, else v_click for a clicked one, else 0.

  Args:
    is_order, is_click: [...] bool, per rollout.

  Returns:
    [...] float64.
  """
  is_order = np.asarray(is_order, bool)
  is_click = np.asarray(is_click, bool)
  return np.where(is_order, v_order, np.where(is_click, v_click, 0.0))


def composite_item_reward(
  is_order: np.ndarray,
  is_click: np.ndarray,
  ctr: np.ndarray,
  relevance: np.ndarray,
  *,
  v_order: float = V_ORDER,
  v_click: float = V_CLICK,
) -> np.ndarray:
  """R_item = R_C&O + clip(ctr, 0, 1) + relevance tier.

  Args:
    is_order, is_click: [...] bool per rollout.
    ctr: [...] posterior CTR of the generated SID's item (0 if none).
    relevance: [...] int tier in 0..3.

  Returns:
    [...] float64.

  Raises:
    ValueError: a relevance outside 0..3 (naming the first bad value).
  """
  relevance = np.asarray(relevance)
  bad = ~np.isin(relevance, RELEVANCE_TIERS)
  if bad.any():
    raise ValueError(
      f"composite_item_reward: relevance must be a tier in 0..3, got "
      f"{relevance[bad].tolist()[0]!r}"
    )
  ctr = np.clip(np.asarray(ctr, np.float64), 0.0, 1.0)
  co = click_order_reward(is_order, is_click, v_order=v_order, v_click=v_click)
  return co + ctr + relevance.astype(np.float64)


def sid_pattern(n_opq: int = 2) -> re.Pattern:
  """The well-formed SID string: <a_N><b_N><c_N> then n_opq <d_N> tokens."""
  return re.compile(r"^<a_\d+><b_\d+><c_\d+>" + r"<d_\d+>" * n_opq + "$")


def format_reward(completions: Sequence[str], n_opq: int = 2) -> np.ndarray:
  """1.0 for each completion string that is a well-formed SID, else 0.0.

  Args:
    completions: N decoded strings.
    n_opq: OPQ codes per SID (the paper's 2).

  Returns:
    [N] float64.
  """
  pattern = sid_pattern(n_opq)
  return np.asarray([1.0 if pattern.match(c) else 0.0 for c in completions])


def format_reward_tokens(
  tokens: np.ndarray, sid_ranges: Sequence[tuple[int, int]]
) -> np.ndarray:
  """1.0 where every position's token is inside its SID range, else 0.0.

  Args:
    tokens: [..., C] generated token ids of C-token SIDs.
    sid_ranges: C (start, end) ranges (``ModelConfig.sid_ranges``).

  Returns:
    [...] float64.
  """
  tokens = np.asarray(tokens)
  if tokens.shape[-1] != len(sid_ranges):
    raise ValueError(
      f"format_reward_tokens: {tokens.shape[-1]} tokens per SID, "
      f"{len(sid_ranges)} ranges"
    )
  lo = np.asarray([s for s, _ in sid_ranges])
  hi = np.asarray([e for _, e in sid_ranges])
  return ((tokens >= lo) & (tokens < hi)).all(-1).astype(np.float64)
