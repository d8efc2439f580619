"""Adaptive reward signal (SPEC §4.2): levels, calibrated CTR/CVR, r(q, i).

Six interaction levels (0-based index here, 1-based in the paper) with base
weights LEVEL_WEIGHTS = [2.0, 1.5, 1.0, 0.5, 0.2, 0.0]:

  0 PURCHASE            bought in this search session
  1 REC_PURCHASE        same-category purchase "in the recommendation feed"
  2 CLICK               clicked (not bought) in this session
  3 EXPOSED             shown, not clicked
  4 SAME_CATEGORY       the session's category, not shown
  5 OTHER_CATEGORY      any other category (or an invalid / unknown item)

Calibrated rates per item (counts over the TRAIN split; Cnt_pos = exposures):

  Cnt_T  = log((Cnt_pos + 10) · (Cnt_clk + 10) · (Cnt_order + 10))
  Ctr_i  = log(Cnt_clk + 10) / Cnt_T
  Cvr_i  = log(Cnt_order + 10) / log(Cnt_clk + 10)

Item reward r(q, i) = 2 λ_level · Ctr_i · Cvr_i / (Ctr_i + Cvr_i), i.e. the
level weight times the harmonic mean of the two calibrated rates.

Pair weight (paper form) rw_Δ = 1 / (r(q, i_pos) − r(q, i_neg)).
Gap weight (official code form, what listwise.py uses)
w = (max(r_pos, 1) − r_neg)^(−α) + 1.

Choices / fixes (also in docs/PARS.md):
  * The world has no recommendation feed. REC_PURCHASE is the proxy "this
    user bought the item in ANOTHER train-split search session, and the item
    is in this session's category (L3)".
  * SAME_CATEGORY uses the session category of logs.InteractionLog (the mode
    L3 of the clicked, else shown, items); OTHER_CATEGORY is everything else.
  * Both pair-weight forms divide by or raise to a negative power a gap that
    can be <= 0 (a phase-1 chosen item may have a lower logged reward than a
    rejected one); the gap is clipped below at `gap_floor` (default 0.1, so
    rw_Δ <= 10 and w <= 1 + 0.1^-α) instead of producing inf/NaN. Since
    Ctr < 1/2 and Cvr <= 1 (exposures >= clicks >= orders), r < 2λ/3, so a
    level-3..5 negative has r < 1/3 and the official clamped gap against any
    positive is > 2/3: it is never clipped in phase 2.
  * Counts use each (session, item) once (a session clicks an item at most
    once in the schema's list form).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from onesearch_jax.pars.logs import InteractionLog

LEVEL_WEIGHTS = (2.0, 1.5, 1.0, 0.5, 0.2, 0.0)
LEVEL_NAMES = (
  "purchase",
  "rec_category_purchase",
  "click",
  "exposed_not_clicked",
  "same_category_not_shown",
  "other_category",
)
PURCHASE, REC_PURCHASE, CLICK, EXPOSED, SAME_CATEGORY, OTHER_CATEGORY = range(6)
POSITIVE_LEVELS = (PURCHASE, REC_PURCHASE, CLICK)  # top-3 (phase 2)
NEGATIVE_LEVELS = (EXPOSED, SAME_CATEGORY, OTHER_CATEGORY)  # bottom-3
SMOOTH = 10.0


@dataclasses.dataclass(frozen=True)
class ItemCounts:
  """Train-split counts per item: [N] exposures, clicks, orders (int64)."""

  exposures: np.ndarray
  clicks: np.ndarray
  orders: np.ndarray


def item_counts(interactions: InteractionLog) -> ItemCounts:
  """Per-item train-split exposures, clicks and orders (vectorised)."""
  n = interactions.n_items
  imp = interactions.train_impressions()
  exposures = np.bincount(interactions.imp_item[imp], minlength=n)

  def count(keys):
    sess, item = keys // n, keys % n
    return np.bincount(item[interactions.session_train[sess]], minlength=n)

  return ItemCounts(
    exposures.astype(np.int64),
    count(interactions.clicked_keys).astype(np.int64),
    count(interactions.purchased_keys).astype(np.int64),
  )


def calibrated_rates(
  exposures: np.ndarray, clicks: np.ndarray, orders: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Log-smoothed (Ctr_i, Cvr_i) from counts (any broadcastable shapes).

  Returns:
    (ctr, cvr) float64: Ctr = log(c+10) / log((p+10)(c+10)(o+10)),
    Cvr = log(o+10) / log(c+10).
  """
  lp = np.log(np.asarray(exposures, np.float64) + SMOOTH)
  lc = np.log(np.asarray(clicks, np.float64) + SMOOTH)
  lo = np.log(np.asarray(orders, np.float64) + SMOOTH)
  return lc / (lp + lc + lo), lo / lc


def item_reward(levels: np.ndarray, ctr: np.ndarray, cvr: np.ndarray) -> np.ndarray:
  """r(q, i) = 2 λ_level · ctr · cvr / (ctr + cvr).

  Args:
    levels: [...] int level indices in 0..5.
    ctr, cvr: [...] calibrated rates (> 0).

  Returns:
    [...] float64 rewards.
  """
  levels = np.asarray(levels)
  if levels.size and (levels.min() < 0 or levels.max() >= len(LEVEL_WEIGHTS)):
    raise ValueError(
      f"levels must be in 0..5, got range {levels.min()}..{levels.max()}"
    )
  lam = np.asarray(LEVEL_WEIGHTS)[levels]
  ctr, cvr = np.asarray(ctr, np.float64), np.asarray(cvr, np.float64)
  return 2.0 * lam * ctr * cvr / (ctr + cvr)


def paper_pair_weight(
  r_pos: np.ndarray, r_neg: np.ndarray, gap_floor: float = 0.1
) -> np.ndarray:
  """rw_Δ = 1 / max(r_pos − r_neg, gap_floor) (the paper's pair weight)."""
  gap = np.asarray(r_pos, np.float64) - np.asarray(r_neg, np.float64)
  return 1.0 / np.maximum(gap, gap_floor)


def official_gap_weight(
  r_pos: np.ndarray, r_neg: np.ndarray, alpha: float = 1.5, gap_floor: float = 0.1
) -> np.ndarray:
  """w = max(max(r_pos, 1) − r_neg, gap_floor)^(−α) + 1 (numpy twin of the
  weight listwise.softmax_dpo_loss computes)."""
  gap = np.maximum(np.asarray(r_pos, np.float64), 1.0) - np.asarray(r_neg, np.float64)
  return np.maximum(gap, gap_floor) ** (-alpha) + 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class RewardTable:
  """Calibrated per-item rates of one log, and level / reward lookups."""

  interactions: InteractionLog
  counts: ItemCounts
  ctr: np.ndarray  # [N] float64
  cvr: np.ndarray  # [N] float64
  ctr_unknown: float  # rates of an item with zero counts (invalid SIDs)
  cvr_unknown: float

  @classmethod
  def build(cls, interactions: InteractionLog) -> RewardTable:
    counts = item_counts(interactions)
    ctr, cvr = calibrated_rates(counts.exposures, counts.clicks, counts.orders)
    c0, v0 = calibrated_rates(0, 0, 0)
    return cls(interactions, counts, ctr, cvr, float(c0), float(v0))

  def levels(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Interaction level of (session, item) pairs (vectorised, any shape).

    Args:
      session: [...] int session rows of the log.
      item: [...] int item rows (-1 = invalid / unknown -> OTHER_CATEGORY).

    Returns:
      [...] int32 level indices 0..5 (the first that applies, top down).
    """
    interactions = self.interactions
    session = np.asarray(session, np.int64)
    item = np.asarray(item, np.int64)
    session, item = np.broadcast_arrays(session, item)
    valid = item >= 0
    safe = np.where(valid, item, 0)
    key = interactions.key(session, item)
    bought = interactions.member(interactions.purchased_keys, key)
    clicked = interactions.member(interactions.clicked_keys, key)
    shown = interactions.member(interactions.impressed_keys, key)
    same_cat = valid & (interactions.item_l3[safe] == interactions.session_l3[session])
    ukey = np.where(
      valid,
      interactions.session_user[session].astype(np.int64) * interactions.n_items + item,
      -1,
    )
    pos = np.clip(
      np.searchsorted(interactions.user_train_purchase_keys, ukey),
      0,
      max(interactions.user_train_purchase_keys.size - 1, 0),
    )
    if interactions.user_train_purchase_keys.size:
      hit = interactions.user_train_purchase_keys[pos] == ukey
      n_user = np.where(hit, interactions.user_train_purchase_counts[pos], 0)
    else:
      n_user = np.zeros(ukey.shape, np.int64)
    here = (bought & interactions.session_train[session]).astype(np.int64)
    elsewhere = (n_user - here) > 0
    out = np.full(session.shape, OTHER_CATEGORY, np.int32)
    out = np.where(same_cat, SAME_CATEGORY, out)
    out = np.where(shown, EXPOSED, out)
    out = np.where(clicked, CLICK, out)
    out = np.where(elsewhere & same_cat & ~bought, REC_PURCHASE, out)
    out = np.where(bought, PURCHASE, out)
    return np.where(valid, out, OTHER_CATEGORY).astype(np.int32)

  def rewards(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """r(q, i) of (session, item) pairs: level weight x calibrated rates."""
    item = np.asarray(item, np.int64)
    levels = self.levels(session, item)
    safe = np.where(item >= 0, item, 0)
    ctr = np.where(item >= 0, self.ctr[safe], self.ctr_unknown)
    cvr = np.where(item >= 0, self.cvr[safe], self.cvr_unknown)
    return item_reward(levels, ctr, cvr)
