"""The eval's RM re-rank of generated beams ("onesearch+rm" rows).

``beam_reranker(world_dir, workdir, cfg, generator)`` restores the pars
stage's reward model and returns a ``BeamReranker``: (session ids,
sid_index [n, W], scores [n, W]) -> the same beams re-ordered by R_score
(``rerank.rerank_order``).

No leakage: the reward model's context of a test session is Mu-Seq features
strictly before the session's time (rm_features), its heads see only SID
codes (no item id, no test-day counts), and it was trained on train-split
impressions. Its S_rel, however, looks up the world's relevance LABELS where a
(query, item) pair is labelled, and the eval's graded NDCG uses the same
labels; the eval variant therefore scores with the relevance TOWER's
prediction only (``ParsStageConfig.rerank_label_relevance = False``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np

from onesearch_jax import generator as generator_lib
from onesearch_jax.pars import rerank
from onesearch_jax.pars import reward_model as rm_lib
from onesearch_jax.pars import run as run_lib
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec
from onesearch_jax.stages.workdir import Workdir


@dataclasses.dataclass
class BeamReranker:
  """RM re-rank of beams given as trie sid_index rows.

  Attributes:
    reranker: the RMReranker (session ids -> R_score of SID tokens).
    unique_codes: [U, S] the trie's SIDs (sid_index order), local codes.
  """

  reranker: rerank.RMReranker
  unique_codes: np.ndarray

  def __call__(
    self, session_ids: Sequence[str], sid_index: np.ndarray, scores: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    """(sid_index [n, W], scores [n, W]) re-ordered by R_score (invalid /
    padding beams last, generator order among ties)."""
    sid_index = np.asarray(sid_index)
    if sid_index.shape[0] == 0:
      return sid_index, np.asarray(scores)
    codes = self.unique_codes[np.maximum(sid_index, 0)]
    tokens = self.reranker.codec.tokens(codes)
    tokens = np.where((sid_index >= 0)[..., None], tokens, -1)  # -1: invalid
    rm = self.reranker.scores(list(session_ids), tokens)
    order = rerank.rerank_order(rm, scores, self.reranker.gen_weight)
    return (
      np.take_along_axis(sid_index, order, axis=1),
      np.take_along_axis(np.asarray(scores), order, axis=1),
    )


def beam_reranker(
  world_dir: str | os.PathLike,
  workdir: Workdir | str | os.PathLike,
  pars: run_lib.ParsConfig,
  generator: generator_lib.Generator,
  *,
  label_relevance: bool = False,
  log: Callable[[str], None] = print,
) -> BeamReranker:
  """The eval's RM re-rank: the pars stage's trained reward model, restored.

  Args:
    world_dir: the world the workdir was built from.
    workdir: holds ``pars/reward_model``.
    pars: the ParsConfig the pars stage ran with.
    generator: the workdir's generator (its SID table, SID token layout and
      ``unique_codes``: the beams' ``sid_index`` order).
    label_relevance: let S_rel use the world's relevance labels (leaks the
      eval's graded-NDCG labels; the main job keeps it off).
    log: progress printer.
  """
  table = generator.table
  pars_dir = Workdir.of(workdir).pars
  ilog, ctx, rel, rtable = run_lib.reward_inputs_of(world_dir, table, pars)
  rm = rm_lib.restore(pars_dir / "reward_model", pars.reward_model, ctx, ilog, rel)
  codec = SidCodec.from_ranges(generator.model_config.sid_ranges, table.code_ranges)
  lookup = ItemLookup.build(
    ilog.item_codes, ilog.has_sid, rtable.counts.clicks, table.code_ranges
  )
  score_cfg = pars.r_score
  if label_relevance:
    rr = rerank.RMReranker.from_reward_model(
      rm, codec, lookup, score_cfg, gen_weight=score_cfg.gen_weight
    )
  else:

    def score(session, items):
      session, items = np.broadcast_arrays(np.asarray(session), np.asarray(items))
      out = rm.predict(session, items)
      r = rm_lib.r_score(out["ctr"], out["cvr"], out["ctcvr"], out["s_rel_model"],
                         score_cfg)  # fmt: skip
      return np.where(items >= 0, r, -np.inf)

    rr = rerank.RMReranker(
      score, ilog.session_index(), codec, lookup, score_cfg.gen_weight
    )
  log(f"[eval] RM re-rank: reward model of {pars_dir}, label relevance "
      f"{'on' if label_relevance else 'off'}")  # fmt: skip
  return BeamReranker(rr, np.asarray(generator.unique_codes))
