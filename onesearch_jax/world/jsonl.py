"""The one JSON-lines reader: parsed rows, errors that name file:line and field.

Every JSONL file the project reads (world tables, request files, the SID
artefact's tables, training histories) goes through ``scan`` (one decoded
value or error per line, for readers that skip bad rows) or ``iter_jsonl``
(rows; the first bad line raises). A bad line raises ``JsonlError`` (a
``ValueError``)::

    req.jsonl:3: invalid JSON: Expecting value at column 1
    req.jsonl:4: expected a JSON object, got list
    req.jsonl:5: field 'query' is missing

Lines are read as bytes and decoded as UTF-8 (a bad byte is an error naming
its offset); trailing ``\\r\\n`` is dropped; blank lines are skipped unless
``skip_blank=False`` (then a blank line is invalid JSON, as it always was for
the artefact readers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Why a line is bad (``JsonlError.reason``).
REASONS = ("bad_encoding", "malformed_json", "not_object", "missing_field")


class JsonlError(ValueError):
  """A bad line of a JSONL file; ``str()`` is ``"<file>:<line>: <problem>"``.

  Attributes:
    file: the file as named in messages.
    line: the 1-based line number.
    reason: one of REASONS.
    problem: what is wrong, in words (with ``field 'x'`` where one is at fault).
    field: the offending field, or None.
    detail: the decoder's own words (e.g. "Expecting value at column 1" or
      "invalid start byte at byte 3"), "" when there are none.
  """

  def __init__(
    self,
    file: str,
    line: int,
    reason: str,
    problem: str,
    *,
    field: str | None = None,
    detail: str = "",
  ):
    self.file = file
    self.line = line
    self.reason = reason
    self.problem = problem
    self.field = field
    self.detail = detail
    super().__init__(f"{file}:{line}: {problem}")


class _DuplicateName(Exception):
  def __init__(self, name: str):
    super().__init__(name)
    self.name = name


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  """json object hook: a name written twice would silently lose a value."""
  out = dict(pairs)
  if len(out) != len(pairs):
    seen = set()
    for name, _ in pairs:
      if name in seen:
        raise _DuplicateName(name)
      seen.add(name)
  return out


def decode_line(
  raw: bytes | str, file: str, line: int, *, unique_names: bool = False
) -> Any:
  """Decodes one line (UTF-8 bytes or text) to its JSON value.

  Args:
    raw: the line, with or without its line ending.
    file: the file as named in error messages.
    line: 1-based line number for error messages.
    unique_names: refuse an object that names a field twice (json would keep
      the last value silently).

  Raises:
    JsonlError: not UTF-8 ("bad_encoding"), not JSON or a repeated name
      ("malformed_json").
  """
  if isinstance(raw, bytes):
    try:
      raw = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      detail = f"{e.reason} at byte {e.start}"
      raise JsonlError(
        file, line, "bad_encoding", f"not valid UTF-8 ({detail})", detail=detail
      ) from None
  text = raw.rstrip("\r\n")
  hook = _unique_object if unique_names else None
  try:
    return json.loads(text, object_pairs_hook=hook)
  except json.JSONDecodeError as e:
    detail = f"{e.msg} at column {e.colno}"
    raise JsonlError(
      file, line, "malformed_json", f"invalid JSON: {detail}", detail=detail
    ) from None
  except _DuplicateName as e:
    raise JsonlError(
      file,
      line,
      "malformed_json",
      f"field '{e.name}' appears twice in one object",
      field=e.name,
    ) from None


def scan(
  path: str | os.PathLike,
  *,
  name: str | None = None,
  unique_names: bool = False,
  skip_blank: bool = True,
  on_blank: Callable[[], None] | None = None,
) -> Iterator[tuple[int, Any, JsonlError | None]]:
  """Yields ``(line, value, None)`` or ``(line, None, error)`` per data line.

  For readers that count and skip bad lines; ``iter_jsonl`` raises instead.

  Args:
    path: the file.
    name: the file as named in errors (default: ``path`` as given).
    unique_names: see ``decode_line``.
    skip_blank: skip blank lines (else they are decoded, and fail).
    on_blank: called once per skipped blank line.
  """
  file = os.fspath(path) if name is None else name
  with open(path, "rb") as f:
    for line, raw in enumerate(f, start=1):
      if skip_blank and not raw.strip():
        if on_blank is not None:
          on_blank()
        continue
      try:
        value = decode_line(raw, file, line, unique_names=unique_names)
      except JsonlError as e:
        yield line, None, e
        continue
      yield line, value, None


def _kind(value: Any) -> str:
  if value is None:
    return "null"
  return {bool: "bool", str: "str", int: "int", float: "float", list: "list"}.get(
    type(value), type(value).__name__
  )


def check_object(
  value: Any, file: str, line: int, required: Sequence[str] = ()
) -> dict[str, Any]:
  """``value`` if it is a JSON object holding every ``required`` field.

  Raises:
    JsonlError: "not_object" or "missing_field" (the first missing field).
  """
  if not isinstance(value, dict):
    raise JsonlError(
      file, line, "not_object", f"expected a JSON object, got {_kind(value)}"
    )
  for field in required:
    if field not in value:
      raise JsonlError(
        file, line, "missing_field", f"field '{field}' is missing", field=field
      )
  return value


def iter_jsonl(
  path: str | os.PathLike,
  *,
  name: str | None = None,
  required: Sequence[str] = (),
  unique_names: bool = False,
  skip_blank: bool = True,
) -> Iterator[tuple[int, dict[str, Any]]]:
  """Streams ``(1-based line, row)`` of a JSONL file of objects.

  Args:
    path: the file.
    name: the file as named in errors (default: ``path`` as given).
    required: fields every row must have.
    unique_names: see ``decode_line``.
    skip_blank: skip blank lines (else a blank line is invalid JSON).

  Raises:
    JsonlError: on the first bad line (see the module docstring).
  """
  file = os.fspath(path) if name is None else name
  for line, value, error in scan(
    path, name=file, unique_names=unique_names, skip_blank=skip_blank
  ):
    if error is not None:
      raise error
    yield line, check_object(value, file, line, required)


def read_jsonl(
  path: str | os.PathLike,
  *,
  name: str | None = None,
  required: Sequence[str] = (),
  skip_blank: bool = True,
) -> list[dict[str, Any]]:
  """All rows of a JSONL file of objects, in file order (see ``iter_jsonl``)."""
  return [
    row
    for _, row in iter_jsonl(path, name=name, required=required, skip_blank=skip_blank)
  ]
