"""Deterministic top-K of score vectors (shared by the baselines)."""

from __future__ import annotations

import numpy as np


def top_k_rows(scores: np.ndarray, k: int, *, min_score: float | None = None):
  """Top-k columns of each row: score descending, ties by column ascending.

  Args:
    scores: [E, N] float scores.
    k: how many (k > N: the rest is padding).
    min_score: columns with score <= min_score are not returned (-1 pad).

  Returns:
    (rows [E, k] int32 (-1 pad), values [E, k] float32 (-inf pad)).
  """
  scores = np.asarray(scores, np.float32)
  e, n = scores.shape
  kk = min(k, n)
  rows = np.full((e, k), -1, np.int32)
  vals = np.full((e, k), -np.inf, np.float32)
  if kk == 0 or e == 0:
    return rows, vals
  if kk < n:
    # Threshold = the kk-th largest value; keep everything >= it, then sort.
    part = np.partition(scores, n - kk, axis=1)[:, n - kk]
  else:
    part = np.full(e, -np.inf, np.float32)
  for i in range(e):
    cand = np.flatnonzero(scores[i] >= part[i])
    order = np.lexsort((cand, -scores[i, cand]))[:kk]
    top = cand[order]
    if min_score is not None:
      top = top[scores[i, top] > min_score]
    rows[i, : len(top)] = top
    vals[i, : len(top)] = scores[i, top]
  return rows, vals
