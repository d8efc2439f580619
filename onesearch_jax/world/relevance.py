"""Graded query-item relevance labels (0-3, ESCI-style) from query intents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from onesearch_jax.world.catalog import Catalog, CategoryIndex
from onesearch_jax.world.queries import Intent, match_counts
from onesearch_jax.world.sessions import QueryLogEntry

# KuaiSearch's label mix: 13.13 / 19.03 / 33.98 / 33.86 % (grades 0..3).
KUAISEARCH_MIX = (0.1313, 0.1903, 0.3398, 0.3386)
# Wanted-grade mix of the sampler: more 2s than KuaiSearch because a wanted 2
# turns into a 3 for queries without attribute constraints (any item of the
# category is then Exact).
TARGET_MIX = (0.13, 0.19, 0.38, 0.30)


def grade(catalog: Catalog, intent: Intent, item: int) -> int:
  """ESCI grade of an item for an intent.

  3 (Exact): the intended category and every constraint matches; 2
  (Substitute): the intended category, some constraint fails; 1 (Complement):
  a sibling category (same L2, or same L1 for L2-level intents); 0
  (Irrelevant): anything else.

  Args:
    catalog: the catalogue.
    intent: the query's intent.
    item: item index.

  Returns:
    The grade in 0..3.
  """
  tree = catalog.tree
  l3 = int(catalog.l3[item])
  l2 = int(tree.l3_parent[l3])
  l1 = int(tree.l2_parent[l2])
  same = l3 == intent.l3 if intent.l3 >= 0 else l2 == intent.l2
  if same:
    m = int(match_counts(catalog, np.array([item]), intent)[0])
    return 3 if m == len(intent.constraints) else 2
  sibling = l2 == intent.l2 if intent.l3 >= 0 else l1 == intent.l1
  return 1 if sibling else 0


def attr_value(attributes: dict[str, str]) -> str:
  """KuaiSearch's attr_value: the item's attributes as 'type:value' pairs."""
  return ", ".join(
    f"{t}:{v}" for t, v in attributes.items() if t not in ("entity", "brand")
  )


def relevance_rows(
  catalog: Catalog,
  index: CategoryIndex,
  query_log: dict[str, QueryLogEntry],
  n_pairs: int,
  rng: np.random.Generator,
) -> Iterator[dict[str, Any]]:
  """Samples judged (query, item) pairs with their rule-based grade.

  A wanted grade is drawn from TARGET_MIX and an item is picked from the pool
  that can give it; the written score is always grade() of the pair, so the
  mix is near TARGET_MIX but the label is never wrong for its item.

  Args:
    catalog: the catalogue.
    index: items grouped by category.
    query_log: distinct queries with their intents (from the sessions).
    n_pairs: rows to produce.
    rng: the generator (consumed).

  Yields:
    relevance.jsonl rows (with the item_id extension).
  """
  queries = list(query_log)
  if not queries:
    return
  w = np.sqrt(np.array([query_log[q].count for q in queries], dtype=np.float64))
  cum = np.cumsum(w)
  tree = catalog.tree
  item_l1 = tree.l3_l1[catalog.l3]
  for _ in range(n_pairs):
    q = queries[
      min(int(np.searchsorted(cum, rng.random() * cum[-1])), len(queries) - 1)
    ]
    intent = query_log[q].intent
    wanted = int(np.searchsorted(np.cumsum(TARGET_MIX), rng.random()))
    if intent.l3 >= 0:
      same, sib = index.members("l3", intent.l3), index.members("l2", intent.l2)
    else:
      same, sib = index.members("l2", intent.l2), index.members("l1", intent.l1)
    if wanted >= 2:
      m = match_counts(catalog, same, intent)
      full = m == len(intent.constraints)
      cand = same[full] if wanted == 3 else same[~full]
      if cand.size == 0:
        cand = same
    elif wanted == 1:
      if intent.l3 >= 0:
        cand = sib[catalog.l3[sib] != intent.l3]
      else:
        cand = sib[tree.l3_parent[catalog.l3[sib]] != intent.l2]
      if cand.size == 0:
        cand = sib
    else:
      cand = np.empty(0, dtype=np.int64)
      for _try in range(20):
        i = int(rng.integers(0, catalog.n_items))
        if item_l1[i] != intent.l1:
          cand = np.array([i])
          break
      if cand.size == 0:
        cand = np.array([int(rng.integers(0, catalog.n_items))])
    if cand.size == 0:  # an empty category in a very small world
      cand = np.array([int(rng.integers(0, catalog.n_items))])
    item = int(cand[int(rng.integers(0, cand.size))])
    attrs = catalog.attributes(item)
    yield {
      "query": q,
      "item_title": catalog.title(item, attrs),
      "brand": catalog.brand_names[catalog.brand[item]],
      "seller_name": catalog.seller_names[catalog.seller[item]],
      "attr_value": attr_value(attrs),
      "score": grade(catalog, intent, item),
      "item_id": catalog.item_id(item),
    }
