"""EvalConfig: what the pipeline's eval stage decodes and reports."""

from __future__ import annotations

import dataclasses

from onesearch_jax.eval import baselines as baselines_lib
from onesearch_jax.eval import metrics


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """The eval stage (``stages.eval``).

  Attributes:
    beam_size: W beams per query; the generative ranking holds up to W SIDs
      (more items where SIDs collide), so HR@K for K > W mostly counts
      collisions: keep W >= max(ks).
    batch_size: queries per beam-search call (fixed shape, compiled once).
    ks: the K of HR/Recall/MRR/NDCG@K.
    k_max: ranking length kept per system (>= max(ks)).
    baselines: which of ``eval.baselines.NAMES`` (bm25, dense, mca,
      sidq_pop, query_memory) to run beside the model.
    exact_rows: eval queries whose exhaustive top-W (every catalogue SID
      scored by teacher forcing) measures the beam-search error (the
      ``beam_recall`` diagnostic); 0 = skip (the main job: ~11 s of its
      budget; gin/runs/full.gin sets 8).
  """

  beam_size: int = 350
  batch_size: int = 32
  ks: tuple[int, ...] = metrics.DEFAULT_KS
  k_max: int = 350
  baselines: tuple[str, ...] = ("bm25", "dense", "mca", "sidq_pop", "query_memory")
  exact_rows: int = 0

  def __post_init__(self):
    if self.beam_size <= 0 or self.batch_size <= 0 or self.exact_rows < 0:
      raise ValueError(
        f"EvalConfig: beam_size {self.beam_size} and batch_size "
        f"{self.batch_size} must be > 0, exact_rows {self.exact_rows} >= 0"
      )
    if not self.ks or min(self.ks) <= 0 or self.k_max < max(self.ks):
      raise ValueError(
        f"EvalConfig: ks {self.ks} must be > 0 and <= k_max {self.k_max}"
      )
    bad = sorted(set(self.baselines) - set(baselines_lib.NAMES))
    if bad:
      raise ValueError(f"EvalConfig: unknown baselines {bad}")
