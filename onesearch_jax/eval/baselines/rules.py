"""Two rule baselines built from train-split clicks alone: ``sidq_pop`` and
``query_memory``.

They are the floor a generative model must clear: no learning, no text
matching, only the query's KHQE SID (its level-1 code) and who clicked what
in the train split.

* ``sidq_pop``: the query's SID_q (the SID artefact's query table) names a
  level-1 cluster; the items whose level-1 code equals it are ranked by their
  number of train-split clicks, ties by item id ascending (string order).
  When the cluster holds fewer than K items the list continues with every
  other item by global train popularity (same order), so the ranking always
  has min(K, N) items. A query without a SID (not in the artefact's query
  table) gets the global train popularity list.
* ``query_memory``: the items clicked in train sessions with exactly this
  query text, by their click count for the query (ties by item id), then the
  query's ``sidq_pop`` list without the items already listed.

Clicks are the entries of ``clicked_item_ids`` of recall rows with
``split == "train"`` (an item listed twice in one session counts twice); an
item without a train click has count 0 and ranks after every clicked one.
Nothing from the valid or test split is read.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

NAMES = ("sidq_pop", "query_memory")


class RuleRanker:
  """Train-click counts and level-1 codes behind both rule baselines.

  Args:
    item_ids: N item ids (item row = index; the output's rows).
    item_level1: [N] level-1 SID code of each item (-1: the item has no SID;
      it is never in a cluster but still in the global popularity list).
    query_level1: query text -> level-1 code of its SID_q.
    recall: recall.jsonl rows (only ``split == "train"`` rows are read).
  """

  def __init__(
    self,
    item_ids: Sequence[str],
    item_level1: np.ndarray,
    query_level1: Mapping[str, int],
    recall: Iterable[Mapping],
  ):
    self.item_ids = tuple(str(i) for i in item_ids)
    n = len(self.item_ids)
    self.item_level1 = np.asarray(item_level1, np.int64)
    if self.item_level1.shape != (n,):
      raise ValueError(
        f"RuleRanker: item_level1 {self.item_level1.shape} for {n} items"
      )
    self.query_level1 = {str(q): int(c) for q, c in query_level1.items()}
    row_of = {i: r for r, i in enumerate(self.item_ids)}
    self.clicks = np.zeros(n, np.int64)
    self.query_clicks: dict[str, collections.Counter] = collections.defaultdict(
      collections.Counter
    )
    for r in recall:
      if r["split"] != "train":
        continue
      for i in r["clicked_item_ids"]:
        if i in row_of:
          self.clicks[row_of[i]] += 1
          self.query_clicks[str(r["query"])][row_of[i]] += 1
    # id_rank[row] = position of the item id in ascending string order.
    self.id_rank = np.empty(n, np.int64)
    self.id_rank[np.argsort(np.asarray(self.item_ids, dtype=object), kind="stable")] = (
      np.arange(n)
    )
    # Every item row: clicks descending, then item id ascending.
    self.global_order = np.lexsort((self.id_rank, -self.clicks)).astype(np.int64)
    self._cluster_cache: dict[int, np.ndarray] = {}

  def cluster_list(self, code: int | None) -> np.ndarray:
    """All item rows in ``sidq_pop`` order for a level-1 code (None: no SID)."""
    if code is None:
      return self.global_order
    if code not in self._cluster_cache:
      inside = self.item_level1[self.global_order] == code
      self._cluster_cache[code] = np.concatenate(
        [self.global_order[inside], self.global_order[~inside]]
      )
    return self._cluster_cache[code]

  def sidq_pop_list(self, query: str) -> np.ndarray:
    return self.cluster_list(self.query_level1.get(str(query)))

  def query_memory_list(self, query: str) -> np.ndarray:
    counts = self.query_clicks.get(str(query))
    pop = self.sidq_pop_list(query)
    if not counts:
      return pop
    mem = sorted(counts, key=lambda r: (-counts[r], self.id_rank[r]))
    mem = np.asarray(mem, np.int64)
    return np.concatenate([mem, pop[~np.isin(pop, mem)]])

  def rank(self, system: str, queries: Sequence[str], k: int) -> np.ndarray:
    """[E, k] int32 item rows of ``system`` for each query (-1 pad if N < k)."""
    fn = {"sidq_pop": self.sidq_pop_list, "query_memory": self.query_memory_list}
    if system not in fn:
      raise ValueError(f"RuleRanker: unknown system {system!r}; known {NAMES}")
    out = np.full((len(queries), k), -1, np.int32)
    found: dict[str, np.ndarray] = {}
    for e, q in enumerate(queries):
      if q not in found:
        found[q] = fn[system](q)[:k]
      out[e, : len(found[q])] = found[q]
    return out


def from_artefact(art, item_ids: Sequence[str], recall: Iterable[Mapping]):
  """A RuleRanker over ``item_ids`` with the level-1 codes of a SID artefact
  (``khqe.artefact.SIDArtefact``; items it lacks get no cluster)."""
  item_codes = np.asarray(art.item_codes).reshape(len(art.item_ids), -1)
  code_of = dict(zip(art.item_ids, item_codes[:, 0].tolist(), strict=True))
  level1 = np.asarray([code_of.get(i, -1) for i in item_ids], np.int64)
  query_codes = np.asarray(art.query_codes).reshape(len(art.query_texts), -1)
  query_level1 = dict(zip(art.query_texts, query_codes[:, 0].tolist(), strict=True))
  return RuleRanker(item_ids, level1, query_level1, recall)
