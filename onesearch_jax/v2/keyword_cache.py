"""Keyword thoughts made offline (by any LLM), read from a JSONL cache file.

One JSON object per line::

    {"query": "running shoes", "user_id": "u17", "keywords": ["sneakers", "nike"]}
    {"query": "running shoes", "keywords": ["sneakers"]}

* ``query`` (string, required) and ``keywords`` (list of strings,
  required, may be empty);
* ``user_id`` (string, optional): absent or "" makes the line the query's
  entry for every user; a (query, user) line wins over it for that user.

Queries are matched in normalised form (``khqe.keywords.normalise``: NFKC,
lower case, single spaces), on both the file and the request side. A key
written twice is an error naming both lines, as is any malformed line
(``KeywordCacheError``: ``<file>:<line>: field 'x' ...``). A request
the file has no entry for gets no keywords and is counted in ``misses``.
"""

from __future__ import annotations

import os

from onesearch_jax.errors import UserError
from onesearch_jax.khqe.keywords import normalise
from onesearch_jax.v2.keyword_thoughts import KeywordRequest
from onesearch_jax.world import jsonl


class KeywordCacheError(UserError):
  """A bad line of a keyword cache file: ``<file>:<line>: <problem>``."""


class CachedKeywords:
  """A ``KeywordGenerator`` over a loaded cache file."""

  def __init__(self, table: dict[tuple[str, str], tuple[str, ...]], source: str = ""):
    """Args: table: (normalised query, user id or "") -> keywords; source:
    the file it came from (for messages)."""
    self.table = table
    self.source = source
    self.misses = 0

  def keywords(self, request: KeywordRequest) -> tuple[str, ...]:
    """The (query, user) entry, else the query's entry for every user, else ()."""
    q = normalise(request.query)
    out = self.table.get((q, request.user_id)) if request.user_id else None
    if out is None:
      out = self.table.get((q, ""))
    if out is None:
      self.misses += 1
      return ()
    return out


def _field_error(path: str, line: int, field: str, problem: str) -> KeywordCacheError:
  return KeywordCacheError(f"{path}:{line}: field '{field}' {problem}")


def load_keyword_cache(path: str | os.PathLike) -> CachedKeywords:
  """Reads a keyword cache file.

  Args:
    path: the JSONL file.

  Returns:
    The generator.

  Raises:
    KeywordCacheError: the first bad line (file, line and field named).
  """
  name = os.fspath(path)
  table: dict[tuple[str, str], tuple[str, ...]] = {}
  first_line: dict[tuple[str, str], int] = {}
  rows = jsonl.iter_jsonl(path, required=("query", "keywords"), unique_names=True)
  try:
    for line, row in rows:
      _add_row(table, first_line, name, line, row)
  except jsonl.JsonlError as e:
    raise KeywordCacheError(str(e)) from None
  return CachedKeywords(table, name)


def _add_row(table, first_line, name: str, line: int, row: dict) -> None:
  query, user, kws = row["query"], row.get("user_id", ""), row["keywords"]
  if not isinstance(query, str) or not query.strip():
    raise _field_error(name, line, "query", "must be a non-empty string")
  if not isinstance(user, str):
    raise _field_error(name, line, "user_id", "must be a string")
  if not isinstance(kws, list):
    raise _field_error(name, line, "keywords", "must be a list of strings")
  for n, k in enumerate(kws):
    if not isinstance(k, str) or not k.strip():
      raise _field_error(
        name, line, "keywords", f"item {n} must be a non-empty string, got {k!r}"
      )
  key = (normalise(query), user)
  if key in first_line:
    raise _field_error(
      name,
      line,
      "query",
      f"{query!r} for user {user!r} is already given on line {first_line[key]}",
    )
  first_line[key] = line
  table[key] = tuple(" ".join(k.split()) for k in kws)
