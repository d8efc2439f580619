"""The one place where ``data/`` reads a world directory (KuaiSearch schema).

``read_world(dir)`` returns the three tables ``data/`` needs (users, items,
recall). It uses the validating row reader ``onesearch_jax.world.reader.iter_rows``
when ``USE_SCHEMA_READER`` is true (the default), else the plain JSON-lines
reader ``onesearch_jax.world.jsonl`` that still names the file, line and
field of a bad row.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from onesearch_jax.world import jsonl, reader

# Switch: False reads the files with plain json (no cross-table validation).
USE_SCHEMA_READER = True

_REQUIRED = {
  "users": ("user_id", "gender", "age_bucket"),
  "items": (
    "item_id",
    "item_title",
    "category_level1_name",
    "category_level2_id",
    "category_level2_name",
    "category_level3_name",
  ),
  "recall": (
    "user_id",
    "session_id",
    "query",
    "clicked_item_ids",
    "purchased_item_ids",
    "time_index",
    "split",
  ),
}


@dataclasses.dataclass(frozen=True)
class WorldTables:
  """The rows ``data/`` uses, in file order.

  Attributes:
    path: the world directory.
    users: user rows.
    items: item rows.
    recall: recall (search session) rows.
  """

  path: str
  users: list[dict[str, Any]]
  items: list[dict[str, Any]]
  recall: list[dict[str, Any]]


def _read_jsonl(directory: str, table: str) -> list[dict[str, Any]]:
  path = os.path.join(directory, f"{table}.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing")
  return jsonl.read_jsonl(path, name=f"{table}.jsonl", required=_REQUIRED[table])


def read_world(directory: str | os.PathLike) -> WorldTables:
  """Reads users, items and recall of a world directory.

  Args:
    directory: ``<dir>/{users,items,recall,...}.jsonl``.

  Returns:
    The tables.

  Raises:
    ValueError (``SchemaError``): the first bad row, naming file, line, field.
  """
  directory = os.fspath(directory)
  if USE_SCHEMA_READER:
    # Per-row validation of the three tables only: the ranking table can be
    # 100x larger and data/ never reads it (cross-table checks are the world
    # stage's job: python -m onesearch_jax.world.reader <dir>).
    tables = {
      name: [
        row
        for _, row in reader.iter_rows(os.path.join(directory, f"{name}.jsonl"), name)
      ]
      for name in ("users", "items", "recall")
    }
    return WorldTables(path=directory, **tables)
  return WorldTables(
    path=directory,
    users=_read_jsonl(directory, "users"),
    items=_read_jsonl(directory, "items"),
    recall=_read_jsonl(directory, "recall"),
  )
