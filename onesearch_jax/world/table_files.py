"""Which file holds a table of a world directory.

A table is ``<dir>/<name>.jsonl`` or one of its aliases
(``schema.Table.aliases``: ``rank.jsonl``, the public KuaiSearch release's
name of the ranking table). ``reader`` and every module that opens a table
file by name go through ``table_path``.
"""

from __future__ import annotations

import os

from onesearch_jax.world import schema
from onesearch_jax.world.validation import SchemaError


def table_path(directory: str | os.PathLike, table: schema.Table | str) -> str:
  """The file of ``table`` in ``directory``: ``<name>.jsonl`` or one of its
  aliases (``rank.jsonl`` for the ranking table).

  Raises:
    SchemaError: no accepted name exists (``missing_file``), or two do
      (``ambiguous_file``: which one is meant cannot be guessed).
  """
  table = table_of(table)
  directory = os.fspath(directory)
  found = [n for n in table.filenames if os.path.isfile(os.path.join(directory, n))]
  if not found:
    names = " or ".join(table.filenames)
    problem = "file is missing" + (f" (looked for {names})" if table.aliases else "")
    raise SchemaError(table.filename, None, None, "missing_file", problem)
  if len(found) > 1:
    raise SchemaError(
      found[1],
      None,
      None,
      "ambiguous_file",
      f"both {' and '.join(found)} exist; keep one",
    )
  return os.path.join(directory, found[0])


def table_of(table: schema.Table | str) -> schema.Table:
  """``table`` itself, or the schema table of that name."""
  if isinstance(table, schema.Table):
    return table
  if table not in schema.TABLES:
    raise KeyError(f"unknown table {table!r}; expected one of {tuple(schema.TABLES)}")
  return schema.TABLES[table]
