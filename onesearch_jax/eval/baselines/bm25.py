"""BM25 over item text (title + attribute values) with the ``bm25s`` library.

Settings: bm25s' "lucene" variant, k1 = 1.2, b = 0.75. Tokens: NFKC,
lower case, runs of letters/digits, and every CJK character on its own (so
Chinese titles and queries match without a segmenter). Items with a zero score
(no query token in their text) are not retrieved: the ranking is padded
with -1 instead of filled with arbitrary items. Ties: item row ascending.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import bm25s
import numpy as np

from onesearch_jax.eval.baselines import ranking

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


def tokenize(text: str) -> list[str]:
  """Lower-cased word tokens; CJK characters one token each."""
  return _TOKEN.findall(unicodedata.normalize("NFKC", str(text)).lower())


def item_text(row: Mapping[str, Any]) -> str:
  """Title plus attribute values (items.jsonl row)."""
  parts = [str(row.get("item_title") or "")]
  attrs = row.get("attributes") or {}
  parts.extend(str(v) for v in attrs.values())
  return " ".join(p for p in parts if p)


@dataclasses.dataclass(frozen=True)
class BM25Config:
  k1: float = 1.2
  b: float = 0.75
  method: str = "lucene"


class BM25Retriever:
  """BM25 index over N item texts (item row = position in ``texts``)."""

  def __init__(self, texts: Sequence[str], config: BM25Config | None = None):
    self.config = config or BM25Config()
    self.n_items = len(texts)
    if self.n_items == 0:
      raise ValueError("BM25Retriever: empty catalogue")
    self._bm25 = bm25s.BM25(
      k1=self.config.k1, b=self.config.b, method=self.config.method
    )
    self._bm25.index([tokenize(t) for t in texts], show_progress=False)

  def scores(self, query: str) -> np.ndarray:
    """[N] float32 BM25 scores of every item for one query."""
    toks = tokenize(query)
    if not toks:
      return np.zeros(self.n_items, np.float32)
    return np.asarray(self._bm25.get_scores(toks), np.float32)

  def search(self, queries: Sequence[str], k: int, chunk: int = 256):
    """Top-k items of each query (each distinct query scored once).

    Returns:
      (rows [E, k] int32, -1 pad; scores [E, k] float32, -inf pad).
    """
    distinct = sorted(set(queries))
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(distinct), chunk):
      block = distinct[start : start + chunk]
      r, v = ranking.top_k_rows(
        np.stack([self.scores(q) for q in block]), k, min_score=0.0
      )
      for j, q in enumerate(block):
        found[q] = (r[j], v[j])
    rows = np.full((len(queries), k), -1, np.int32)
    vals = np.full((len(queries), k), -np.inf, np.float32)
    for i, q in enumerate(queries):
      rows[i], vals[i] = found[q]
    return rows, vals
