"""The ranking table's statistics objects as float arrays.

Each ranking row carries ``user_statistical_features`` and
``target_item_statistical_features``: JSON objects of floats (e.g.
``user_show_cnt_30d_hist``, ``item_click_cnt_30d_hist``). The reader keeps
them as per-row dicts (validated ``dict[str,float]``);
``ranking_statistics(rows)`` stacks them into one float32 matrix per object
for a model (e.g. a reward model's feature input), one column per name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

USER_FIELD = "user_statistical_features"
ITEM_FIELD = "target_item_statistical_features"


@dataclasses.dataclass(frozen=True, eq=False)
class RankingStatistics:
  """Statistics of ranking rows, row-aligned with the rows given.

  Attributes:
    user_names: column names of ``user``: every key of any row's
      ``user_statistical_features``, sorted.
    user: [R, len(user_names)] float32; NaN where a row lacks that key.
    item_names: column names of ``item`` (``target_item_statistical_features``).
    item: [R, len(item_names)] float32; NaN where a row lacks that key.
  """

  user_names: tuple[str, ...]
  user: np.ndarray
  item_names: tuple[str, ...]
  item: np.ndarray


def _stack(rows: Sequence[dict[str, Any]], field: str):
  names = tuple(sorted({k for row in rows for k in row.get(field) or {}}))
  column = {name: j for j, name in enumerate(names)}
  out = np.full((len(rows), len(names)), np.nan, np.float32)
  for i, row in enumerate(rows):
    for name, value in (row.get(field) or {}).items():
      out[i, column[name]] = value
  return names, out


def ranking_statistics(rows: Sequence[dict[str, Any]]) -> RankingStatistics:
  """Stacks the statistics objects of ranking rows (validated by the reader).

  Args:
    rows: ranking rows, e.g. ``reader.load_world(dir).ranking``.

  Returns:
    The RankingStatistics; row i is ``rows[i]``.
  """
  user_names, user = _stack(rows, USER_FIELD)
  item_names, item = _stack(rows, ITEM_FIELD)
  return RankingStatistics(user_names, user, item_names, item)
