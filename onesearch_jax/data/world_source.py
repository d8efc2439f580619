"""The one place where ``data/`` reads a world directory (KuaiSearch schema).

``read_world(dir)`` returns the three tables ``data/`` needs (users, items,
recall). It uses the validating row reader ``onesearch_jax.world.reader.iter_rows``
when ``USE_SCHEMA_READER`` is true (the default), else the plain JSON-lines
reader ``onesearch_jax.world.jsonl`` that still names the file, line and
field of a bad row.

For catalogues too big to hold (``register_tasks(..., stream_items=True)``):
``iter_table(dir, name)`` yields one table's rows lazily, and
``read_world(dir, items="referenced")`` keeps only the item rows that a
recall row clicks or purchases (what the Mu-Seq index, the query categories
and the phase-2 pairs look up); the phase-1 item tasks then stream
``items.jsonl`` themselves.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
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


ITEMS = ("all", "referenced")  # read_world's choice of item rows


def iter_table(
  directory: str | os.PathLike, table: str, *, schema_checks: bool | None = None
) -> Iterator[dict[str, Any]]:
  """The rows of ``<directory>/<table>.jsonl`` one at a time, in file order.

  Rows are checked as ``read_world`` checks them (the schema reader, or the
  plain reader's required fields); nothing is kept.

  Args:
    directory: the world directory.
    table: "users", "items" or "recall".
    schema_checks: None follows ``USE_SCHEMA_READER``; False reads with the
      plain reader (JSON and the required fields only: ~5x faster, for
      repeated passes over a file one checked pass has already validated).

  Raises:
    FileNotFoundError: the file is missing.
    ValueError (``SchemaError``): the first bad row, naming file, line, field.
  """
  path = os.path.join(os.fspath(directory), f"{table}.jsonl")
  if USE_SCHEMA_READER if schema_checks is None else schema_checks:
    for _, row in reader.iter_rows(path, table):
      yield row
    return
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing")
  for _, row in jsonl.iter_jsonl(
    path, name=f"{table}.jsonl", required=_REQUIRED[table]
  ):
    yield row


def read_world(directory: str | os.PathLike, *, items: str = "all") -> WorldTables:
  """Reads users, items and recall of a world directory.

  Per-row validation of the three tables only: the ranking table can be 100x
  larger and data/ never reads it (cross-table checks are the world stage's
  job: python -m onesearch_jax.world.reader <dir>).

  Args:
    directory: ``<dir>/{users,items,recall,...}.jsonl``.
    items: "all" item rows, or only those "referenced" by a recall row's
      clicked or purchased ids (memory bounded by the log, not the catalogue;
      the whole items file is still read and checked).

  Returns:
    The tables.

  Raises:
    ValueError (``SchemaError``): the first bad row, naming file, line, field.
  """
  if items not in ITEMS:
    raise ValueError(f"read_world: items must be one of {ITEMS}, got {items!r}")
  directory = os.fspath(directory)
  users = list(iter_table(directory, "users"))
  if items == "all":  # the tables in schema order (the first bad row raises)
    item_rows = list(iter_table(directory, "items"))
    recall = list(iter_table(directory, "recall"))
  else:
    recall = list(iter_table(directory, "recall"))
    wanted = {
      i
      for r in recall
      for f in ("clicked_item_ids", "purchased_item_ids")
      for i in r[f]
    }
    item_rows = [
      row for row in iter_table(directory, "items") if row["item_id"] in wanted
    ]
  return WorldTables(path=directory, users=users, items=item_rows, recall=recall)
