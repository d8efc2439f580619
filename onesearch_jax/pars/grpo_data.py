"""GRPO prompts from the interaction log: ground truths, judgements, batches.

A prompt is a train-split session with at least one clicked or ordered item
that has a SID. Its ground truths are those items' SIDs, ordered items first
(then clicked ones, each in item-row order), at most `max_targets`. Its judged
SIDs are the items the world's relevance labels tie to the session's query
(``rm_features.RelevanceRows``, the rows outside the reward model's 20 %
hold-out), with the rounded mean grade as the tier, highest first, at most
`max_judged`. The PARS phase 1 re-rank already reads the same labels for
train sessions (``TrainedRewardModel.label_relevance``).

`RolloutTables.sid_ctr`: for every SID of the trie (sid_index order) the
calibrated CTR (``RewardTable.ctr``) of the item ``ItemLookup`` maps it to.

`batch_stream(position)` is deterministic: batch p holds the prompts
perm_e[(p % nb)·B : ...] of epoch e = p // nb, perm_e seeded by (seed, e)
(as ``phases.batch_stream``); a short last batch is padded with
example_weight 0 rows.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from onesearch_jax.pars import phases
from onesearch_jax.pars.grpo import GRPOConfig, RolloutTables
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.pars.rewards import RewardTable
from onesearch_jax.pars.rm_features import RelevanceRows
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec


@dataclasses.dataclass(frozen=True, eq=False)
class GRPOPrompts:
  """P prompts: session rows, ground-truth and judged SID tokens.

  Attributes:
    session: [P] int32 session rows of the log.
    gt_tokens: [P, T, S] int32; gt_mask, gt_order: [P, T] bool.
    rel_tokens: [P, J, S] int32; rel_tier: [P, J] int32 (0 = padding).
    stats: counts (sessions, prompts, without_target, ...).
  """

  session: np.ndarray
  gt_tokens: np.ndarray
  gt_mask: np.ndarray
  gt_order: np.ndarray
  rel_tokens: np.ndarray
  rel_tier: np.ndarray
  stats: dict[str, int]

  def __len__(self) -> int:
    return int(self.session.shape[0])


def _judgements(
  interactions: InteractionLog, relevance: RelevanceRows
) -> dict[int, list[tuple[int, int]]]:
  """query index -> [(tier, item)] from the non-held-out relevance rows,
  tier = the rounded mean grade of the pair's labels, best tier first."""
  sums: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
  for q, item, grade, held in zip(
    relevance.query_index, relevance.item, relevance.grade, relevance.held_out,
    strict=True,
  ):  # fmt: skip
    if q >= 0 and not held and interactions.has_sid[item]:
      sums[(int(q), int(item))].append(int(grade))
  out: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
  for (q, item), grades in sums.items():
    tier = int(np.clip(np.round(np.mean(grades)), 0, 3))
    if tier > 0:
      out[q].append((tier, item))
  for q in out:
    out[q].sort(key=lambda ti: (-ti[0], ti[1]))
  return out


def build_prompts(
  interactions: InteractionLog,
  relevance: RelevanceRows,
  codec: SidCodec,
  cfg: GRPOConfig,
) -> GRPOPrompts:
  """The GRPO prompts of the train split (module docstring).

  Args:
    interactions: the log.
    relevance: the world's relevance rows (``rm_features.relevance_rows``).
    codec: SID codes -> decoder tokens.
    cfg: max_targets (T), max_judged (J).
  """
  n, t, j = interactions.n_items, cfg.max_targets, cfg.max_judged
  s_len = interactions.code_width
  bought = phases.group_keys(interactions.purchased_keys, n, interactions.n_sessions)
  clicked = phases.group_keys(interactions.clicked_keys, n, interactions.n_sessions)
  judged = _judgements(interactions, relevance)
  stats: collections.Counter = collections.Counter()
  rows = []
  for s in np.flatnonzero(interactions.session_train):
    orders = [int(i) for i in bought[s] if interactions.has_sid[i]]
    clicks = [int(i) for i in clicked[s] if interactions.has_sid[i] and i not in orders]
    items = (orders + clicks)[:t]
    if not items:
      stats["without_target"] += 1
      continue
    stats["targets_cut"] += max(len(orders) + len(clicks) - t, 0)
    rel = judged.get(int(interactions.session_query[s]), [])[:j]
    rows.append((s, items, len(orders), rel))
  stats["sessions_train"] = int(interactions.session_train.sum())
  stats["prompts"] = len(rows)
  p = len(rows)
  gt_items = np.zeros((p, t), np.int64)
  gt_mask = np.zeros((p, t), bool)
  gt_order = np.zeros((p, t), bool)
  rel_items = np.zeros((p, j), np.int64)
  rel_tier = np.zeros((p, j), np.int32)
  for x, (_, items, n_order, rel) in enumerate(rows):
    gt_items[x, : len(items)] = items
    gt_mask[x, : len(items)] = True
    gt_order[x, : min(n_order, len(items))] = True
    for k, (tier, item) in enumerate(rel):
      rel_items[x, k] = item
      rel_tier[x, k] = tier
  stats["judged"] = int((rel_tier > 0).sum())

  def tokens(items, mask):
    codes = interactions.item_codes[items].reshape(items.shape + (s_len,))
    return np.where(mask[..., None], codec.tokens(np.maximum(codes, 0)), 0).astype(
      np.int32
    )

  return GRPOPrompts(
    session=np.asarray([r[0] for r in rows], np.int32),
    gt_tokens=tokens(gt_items, gt_mask),
    gt_mask=gt_mask,
    gt_order=gt_order,
    rel_tokens=tokens(rel_items, rel_tier > 0),
    rel_tier=rel_tier,
    stats=dict(stats),
  )


def rollout_tables(
  unique_codes: np.ndarray, lookup: ItemLookup, table: RewardTable
) -> RolloutTables:
  """Per-SID CTR of the trie's SIDs.

  Args:
    unique_codes: [U, S] the trie's SIDs in sid_index order
      (``decoding.unique_sids`` of the catalogue codes).
    lookup: SID codes -> item row.
    table: the calibrated rates (``RewardTable.ctr``; an SID without an
      item gets ``ctr_unknown``).
  """
  items = lookup.lookup(np.asarray(unique_codes))
  ctr = np.where(items >= 0, table.ctr[np.maximum(items, 0)], table.ctr_unknown)
  return RolloutTables(sid_ctr=ctr.astype(np.float32))


def batch_stream(
  prompts: GRPOPrompts,
  interactions: InteractionLog,
  prompt_fn: phases.PromptFn,
  batch_size: int,
  seed: int = 0,
) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
  """position -> iterator of GRPO batches from that position on (forever)."""
  e = len(prompts)
  if e == 0:
    raise ValueError("grpo batch_stream: no prompts (no train session with a click)")

  def make(pos: int) -> dict[str, np.ndarray]:
    idx, weight = phases.batch_rows(e, batch_size, seed, pos)
    sessions = [interactions.session_ids[i] for i in prompts.session[idx]]
    out = {k: np.asarray(v) for k, v in prompt_fn(sessions).items()}
    out.update(
      gt_tokens=prompts.gt_tokens[idx],
      gt_mask=prompts.gt_mask[idx],
      gt_order=prompts.gt_order[idx],
      rel_tokens=prompts.rel_tokens[idx],
      rel_tier=prompts.rel_tier[idx],
      position=np.full(batch_size, pos, np.int32),
      example_weight=weight,
    )
    return out

  return phases.positions(make)
