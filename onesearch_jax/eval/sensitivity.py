"""Query sensitivity: does a system's top-K change with the query?

``qsens@K`` of a system = the mean of |top-K(a) ∩ top-K(b)| / K over pairs
(a, b) of test click queries whose level-1 categories differ. A query is a
distinct query text of the click set, represented by its first click row
(eval-set order); its level-1 category is that of the row's first click
target. Pairs are chosen once, independent of any system: every pair of
distinct queries with different categories, or a seeded uniform sample of
``max_pairs`` of them when there are more. A system that ranks per query is
near 0 (BM25 is); a query-blind one (global popularity) is 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

K = 10
MAX_PAIRS = 2000
SEED = 0
# Up to this many candidate pairs they are enumerated; above, rejection sampled.
_ENUMERATE = 500_000


def query_rows(eval_set) -> tuple[np.ndarray, list[str]]:
  """(rows [Q] of the first click row of each distinct click query, in eval
  order; the level-1 category of each). Empty without item categories."""
  cats = tuple(getattr(eval_set, "item_categories", ()) or ())
  if not cats:
    return np.zeros(0, np.int64), []
  rows, out, seen = [], [], set()
  for r in eval_set.rows_of("click"):
    q = eval_set.queries[r]
    if q in seen:
      continue
    seen.add(q)
    rows.append(int(r))
    out.append(str(cats[int(eval_set.click_targets[r, 0])]))
  return np.asarray(rows, np.int64), out


def sample_pairs(
  categories: Sequence[str], max_pairs: int = MAX_PAIRS, seed: int = SEED
) -> np.ndarray:
  """[P, 2] index pairs (i < j) into ``categories`` with different values:
  all of them if at most ``max_pairs``, else a seeded sample (sorted)."""
  codes = np.unique(
    np.asarray(categories, dtype=object).astype(str), return_inverse=True
  )[1]
  n = len(codes)
  rng = np.random.default_rng(seed)
  if n * (n - 1) // 2 <= _ENUMERATE:
    i, j = np.triu_indices(n, 1)
    keep = codes[i] != codes[j]
    pairs = np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
    if len(pairs) > max_pairs:
      pairs = pairs[np.sort(rng.choice(len(pairs), max_pairs, replace=False))]
    return pairs
  found: dict[tuple[int, int], None] = {}
  for _ in range(1000):
    a, b = rng.integers(0, n, size=(2, 4 * max_pairs))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    for x, y in zip(lo.tolist(), hi.tolist(), strict=True):
      if codes[x] != codes[y] and (x, y) not in found:
        found[(x, y)] = None
        if len(found) == max_pairs:
          return np.asarray(sorted(found), np.int64)
  return np.asarray(sorted(found), np.int64).reshape(-1, 2)


def overlap_at_k(ranking: np.ndarray, row_pairs: np.ndarray, k: int = K) -> float:
  """Mean |top-k(a) ∩ top-k(b)| / k over ``row_pairs`` [P, 2] of ranking rows
  (-1 padding never overlaps; a short list still divides by k). NaN if P = 0."""
  row_pairs = np.asarray(row_pairs, np.int64).reshape(-1, 2)
  if not len(row_pairs):
    return float("nan")
  top = np.asarray(ranking)[:, :k]
  a, b = top[row_pairs[:, 0]], top[row_pairs[:, 1]]
  hit = (a[:, :, None] == b[:, None, :]).any(axis=2) & (a >= 0)
  return float(hit.sum(axis=1).mean() / k)


def query_sensitivity(
  eval_set, rankings, k: int = K, max_pairs: int = MAX_PAIRS, seed: int = SEED
) -> tuple[dict, dict[str, float]]:
  """({"k", "queries", "pairs", "seed"}, system -> qsens@k (NaN: no pairs))."""
  rows, cats = query_rows(eval_set)
  pairs = rows[sample_pairs(cats, max_pairs, seed)] if len(rows) else rows
  info = {"k": k, "queries": len(rows), "pairs": int(len(pairs)), "seed": seed}
  return info, {name: overlap_at_k(r, pairs, k) for name, r in rankings.items()}
