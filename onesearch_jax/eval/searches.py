"""Example searches: a few test-day queries with one system's top items.

The main job prints them after the results table and writes them to
``workdir/eval/examples.md``. Choice (deterministic): in eval-set order, the
first click session of each level-1 category not yet shown (the category of
its first clicked item), up to ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

N_EXAMPLES = 4
TOP = 5
EXAMPLES_MD = "examples.md"


def pick_rows(eval_set, n: int = N_EXAMPLES) -> list[int]:
  """Eval-set rows: the first click session of each new level-1 category."""
  cats = tuple(eval_set.item_categories or ())
  rows, seen = [], set()
  for r in eval_set.rows_of("click"):
    cat = cats[int(eval_set.click_targets[r, 0])] if cats else str(r)
    if cat in seen:
      continue
    seen.add(cat)
    rows.append(int(r))
    if len(rows) == n:
      break
  return rows


def _path(item: Mapping) -> str:
  names = [item.get(f"category_level{lvl}_name") for lvl in (1, 2, 3)]
  return " > ".join(str(x) for x in names if x)


def example_searches(
  eval_set,
  rankings: Mapping[str, np.ndarray],
  items: Sequence[Mapping],
  *,
  system: str = "onesearch",
  n: int = N_EXAMPLES,
  top: int = TOP,
) -> str:
  """Markdown for ``n`` example searches of ``system`` (empty if absent).

  Args:
    eval_set: the ``examples.EvalSet``.
    rankings: system -> [E, K_max] item rows (as for ``evaluate_rankings``).
    items: the world's items.jsonl rows, in ``eval_set.item_ids`` order.
    system: whose ranking to show.
    n: how many searches.
    top: items shown per search.

  Returns:
    Per search: query, user, the clicked item(s) and the best rank of a
    clicked item in the ranking (or "not in top-K_max"), then the top items
    with their titles and category paths.
  """
  if system not in rankings:
    return ""
  ranked = np.asarray(rankings[system])
  k_max = ranked.shape[1]
  lines = [f"# Example searches ({system}, top {top})", ""]
  for num, r in enumerate(pick_rows(eval_set, n), 1):
    targets = [int(t) for t in eval_set.click_targets[r] if t >= 0]
    hits = [int(k) + 1 for k in np.flatnonzero(np.isin(ranked[r], targets))]
    rank = f"rank {hits[0]}" if hits else f"not in top-{k_max}"
    lines += [
      f'## {num}. "{eval_set.queries[r]}" (user {eval_set.user_ids[r]}, '
      f"session {eval_set.session_ids[r]})",
      "",
    ]
    for t in targets:
      it = items[t]
      lines.append(f"clicked: {it['item_id']} {it.get('item_title', '')} ({_path(it)})")
    lines += [f"clicked item in the {system} ranking: {rank}", ""]
    lines += ["| rank | item | title | category |", "|---|---|---|---|"]
    for k, row in enumerate(ranked[r, :top].tolist(), 1):
      if row < 0:
        break
      it = items[row]
      mark = " (clicked)" if row in targets else ""
      lines.append(
        f"| {k} | {it['item_id']}{mark} | {it.get('item_title', '')} | {_path(it)} |"
      )
    lines.append("")
  return "\n".join(lines)
