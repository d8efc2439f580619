"""Serving variant: re-rank the generated list by R_score ("OneSearch²_RM").

`rerank_order` is the pure ranking rule: sort the W candidates by
R_score + gen_weight · generator score, descending; ties keep the
generator's order; invalid candidates (R_score -inf, no item for the SID)
go last in generator order. `RMReranker` wires it to a trained reward model
for eval / infer: (session ids, generated tokens, generator scores) ->
re-ordered tokens and scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from onesearch_jax.pars.reward_model import RScoreConfig, TrainedRewardModel
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec


def sort_key(
  rm_scores: np.ndarray, gen_scores: np.ndarray, gen_weight: float = 0.0
) -> np.ndarray:
  """[B, W] R_score + gen_weight · generator score (a non-finite generator
  score counts 0; -inf where R_score is not finite: an invalid candidate)."""
  rm = np.asarray(rm_scores, np.float64)
  gen = np.asarray(gen_scores, np.float64)
  return np.where(
    np.isfinite(rm), rm + gen_weight * np.where(np.isfinite(gen), gen, 0.0), -np.inf
  )


def rerank_order(
  rm_scores: np.ndarray, gen_scores: np.ndarray, gen_weight: float = 0.0
) -> np.ndarray:
  """[B, W] permutation: position j of row b holds the candidate ranked j.

  Args:
    rm_scores: [B, W] R_score (-inf = invalid candidate).
    gen_scores: [B, W] generator scores (higher = better).
    gen_weight: weight of the generator score in the sort key (0 = the pure
      RM re-rank of the paper's best online variant).
  """
  rm = np.asarray(rm_scores, np.float64)
  gen = np.asarray(gen_scores, np.float64)
  b, w = rm.shape
  gen_order = np.argsort(-gen, axis=1, kind="stable")
  gen_rank = np.empty_like(gen_order)
  np.put_along_axis(gen_rank, gen_order, np.arange(w)[None].repeat(b, 0), axis=1)
  valid = np.isfinite(rm)
  key = sort_key(rm, gen, gen_weight)
  # lexsort: last key primary -> invalid last, then key desc, then gen rank.
  return np.lexsort((gen_rank, -key, ~valid), axis=1)


@dataclasses.dataclass
class RMReranker:
  """Re-ranks generated SID lists of logged sessions by R_score.

  Attributes:
    score_fn: (session rows [B, 1], item rows [B, W]) -> R_score [B, W]
      (-inf for item -1); `from_reward_model` binds a trained RM.
    session_index: session id -> session row of the RM's log.
    codec: SID tokens <-> codes.
    lookup: SID codes -> item rows.
    gen_weight: see rerank_order.
  """

  score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
  session_index: Mapping[str, int]
  codec: SidCodec
  lookup: ItemLookup
  gen_weight: float = 0.0

  @classmethod
  def from_reward_model(
    cls,
    rm: TrainedRewardModel,
    codec: SidCodec,
    lookup: ItemLookup,
    cfg: RScoreConfig | None = None,
    gen_weight: float = 0.0,
  ) -> RMReranker:
    cfg = cfg or RScoreConfig()

    def score(session, items):
      return rm.score(session, items, cfg)["r_score"]

    return cls(score, rm.interactions.session_index(), codec, lookup, gen_weight)

  def session_rows(self, session_ids: Sequence[str]) -> np.ndarray:
    rows = [self.session_index.get(str(s), -1) for s in session_ids]
    missing = [s for s, r in zip(session_ids, rows, strict=True) if r < 0]
    if missing:
      raise KeyError(
        f"RMReranker: {len(missing)} unknown session ids, e.g. {missing[:3]}"
      )
    return np.asarray(rows, np.int64)

  def scores(self, session_ids: Sequence[str], tokens: np.ndarray) -> np.ndarray:
    """[B, W] R_score of generated SIDs (-inf for SIDs with no item)."""
    codes, valid = self.codec.codes(tokens)
    items = self.lookup.lookup(codes, valid)
    rows = self.session_rows(session_ids)
    r = np.asarray(self.score_fn(rows[:, None], items), np.float64)
    return np.where(items >= 0, r, -np.inf)

  def __call__(
    self, session_ids: Sequence[str], tokens: np.ndarray, gen_scores: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-ranked (tokens [B, W, S], generator scores [B, W], R_score [B, W])."""
    rm = self.scores(session_ids, tokens)
    order = rerank_order(rm, gen_scores, self.gen_weight)
    tok = np.take_along_axis(np.asarray(tokens), order[..., None], axis=1)
    return (
      tok,
      np.take_along_axis(np.asarray(gen_scores), order, axis=1),
      np.take_along_axis(rm, order, axis=1),
    )
