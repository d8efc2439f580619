"""Row-level validation of world files: the error type, the per-row checks
and the report of what a tolerant load skipped.

``check_row(table, row, file, line)`` checks one decoded row on its own
(object, required fields present, each value of its declared kind, allowed
values); every problem is a ``SchemaError`` naming file, 1-based line and
field. ``SkipReport`` counts skipped rows by (table, reason) with the first
few messages. ``world/reader.py`` streams files through these and adds the
checks that need more than one row.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from typing import Any

from onesearch_jax.world import jsonl, schema

# Reasons a row is skipped (the ``SchemaError.reason`` values).
REASONS = (
  "bad_encoding",
  "malformed_json",
  "not_object",
  "missing_field",
  "wrong_type",
  "bad_value",
  "empty_key",
  "duplicate_key",
  "unknown_user_id",
  "unknown_item_id",
  "missing_file",
  "ambiguous_file",
  "manifest",
)

_MAX_EXAMPLES = 3
_REPR_CHARS = 40


class SchemaError(ValueError):
  """A world file breaks the schema.

  Attributes:
    file: file name (relative to the world directory), e.g. "items.jsonl".
    line: 1-based line number, or None for a whole-file problem.
    field: the offending field (with ``[i]`` / ``["key"]`` for list elements
      and dict values), or None.
    reason: one of REASONS.
    problem: what is wrong, in words.
  """

  def __init__(
    self,
    file: str,
    line: int | None,
    field: str | None,
    reason: str,
    problem: str,
  ):
    self.file = file
    self.line = line
    self.field = field
    self.reason = reason
    self.problem = problem
    where = file if line is None else f"{file}:{line}"
    what = problem if field is None else f"field '{field}': {problem}"
    super().__init__(f"{where}: {what}")


@dataclasses.dataclass
class SkipReport:
  """What loading a world skipped, warned about or noticed.

  Counters are keyed by ``(table, reason)``; examples keep the first few
  error messages (which carry file:line) per key.
  """

  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skip_examples: dict[tuple[str, str], list[str]] = dataclasses.field(
    default_factory=dict
  )
  warnings: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  warning_examples: dict[tuple[str, str], list[str]] = dataclasses.field(
    default_factory=dict
  )
  extra_fields: dict[str, set[str]] = dataclasses.field(default_factory=dict)
  blank_lines: collections.Counter = dataclasses.field(
    default_factory=collections.Counter
  )
  rows_kept: collections.Counter = dataclasses.field(
    default_factory=collections.Counter
  )
  manifest_checked: bool = False
  # Rows dropped because they reference an id outside the directory (the
  # ``dangling="drop"`` policy of ``reader.load_world``): not errors.
  dangling: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  dangling_examples: dict[tuple[str, str], list[str]] = dataclasses.field(
    default_factory=dict
  )
  # How relevance rows were tied to items (``relevance_match.match_relevance``).
  relevance: collections.Counter = dataclasses.field(
    default_factory=collections.Counter
  )

  def record_skip(self, table: str, error: SchemaError) -> None:
    _count(self.skipped, self.skip_examples, (table, error.reason), str(error))

  def record_warning(self, table: str, reason: str, message: str) -> None:
    _count(self.warnings, self.warning_examples, (table, reason), message)

  def record_dangling(self, table: str, error: SchemaError) -> None:
    """A row dropped for an id outside the directory (``error.reason`` is
    ``unknown_user_id`` / ``unknown_item_id``)."""
    _count(self.dangling, self.dangling_examples, (table, error.reason), str(error))

  def record_extra_field(self, table: str, name: str) -> None:
    self.extra_fields.setdefault(table, set()).add(name)

  @property
  def total_skipped(self) -> int:
    return sum(self.skipped.values())

  def skipped_in(self, table: str) -> int:
    """Rows of ``table`` skipped for any reason."""
    return sum(n for (t, _), n in self.skipped.items() if t == table)

  def dangling_in(self, table: str) -> int:
    """Rows of ``table`` dropped for ids outside the directory."""
    return sum(n for (t, _), n in self.dangling.items() if t == table)

  def format(self) -> str:
    """A human-readable multi-line summary."""
    out = []
    if self.rows_kept:
      kept = ", ".join(f"{t}={n}" for t, n in sorted(self.rows_kept.items()))
      out.append(f"rows kept: {kept}")
    out.append(f"rows skipped: {self.total_skipped}")
    for (table, reason), n in sorted(self.skipped.items()):
      out.append(f"  {table}: {reason}: {n}")
      out.extend(f"    e.g. {e}" for e in self.skip_examples[(table, reason)])
    if self.dangling:
      out.append(
        f"rows dropped for ids outside this directory: {sum(self.dangling.values())}"
      )
      for (table, reason), n in sorted(self.dangling.items()):
        out.append(f"  {table}: {reason}: {n}")
        out.extend(f"    e.g. {e}" for e in self.dangling_examples[(table, reason)])
    if self.relevance:
      how = ", ".join(f"{k}={n}" for k, n in sorted(self.relevance.items()))
      out.append(f"relevance rows tied to items: {how}")
    if self.warnings:
      out.append(f"warnings: {sum(self.warnings.values())}")
      for (table, reason), n in sorted(self.warnings.items()):
        out.append(f"  {table}: {reason}: {n}")
        out.extend(f"    e.g. {e}" for e in self.warning_examples[(table, reason)])
    for table, names in sorted(self.extra_fields.items()):
      out.append(f"extra fields kept in {table}: {', '.join(sorted(names))}")
    for table, n in sorted(self.blank_lines.items()):
      out.append(f"blank lines ignored in {table}: {n}")
    out.append(
      "manifest: verified" if self.manifest_checked else "manifest: not verified"
    )
    return "\n".join(out)

  def __str__(self) -> str:
    return self.format()


def _count(
  counter: collections.Counter,
  examples: dict[tuple[str, str], list[str]],
  key: tuple[str, str],
  message: str,
) -> None:
  counter[key] += 1
  kept = examples.setdefault(key, [])
  if len(kept) < _MAX_EXAMPLES:
    kept.append(message)


def _show(value: Any) -> str:
  """A short description of a bad value: its JSON type and a clipped repr."""
  if value is None:
    return "null"
  if isinstance(value, bool):
    return f"bool {json.dumps(value)}"
  kind = {
    str: "str",
    int: "int",
    float: "float",
    list: "list",
    dict: "object",
  }.get(type(value), type(value).__name__)
  text = json.dumps(value, ensure_ascii=False)
  if len(text) > _REPR_CHARS:
    text = text[: _REPR_CHARS - 3] + "..."
  return f"{kind} {text}"


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _scalar_problem(value: Any, kind: str) -> str | None:
  """Why ``value`` is not of scalar ``kind`` ("str"/"int"/"float"/"bool")."""
  if kind == "str":
    ok = isinstance(value, str)
  elif kind == "int":
    ok = _is_int(value)
  elif kind == "float":
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and not math.isfinite(value):
      return f"expected finite float, got {value}"
  elif kind == "bool":
    ok = isinstance(value, bool)
  else:  # pragma: no cover - schema.Field validates kinds
    raise AssertionError(kind)
  return None if ok else f"expected {kind}, got {_show(value)}"


def _type_problem(value: Any, kind: str, name: str) -> tuple[str, str] | None:
  """Returns (field path, problem) if ``value`` is not of ``kind``."""
  if kind.startswith("list["):
    if not isinstance(value, list):
      return name, f"expected {kind}, got {_show(value)}"
    inner = kind[5:-1]
    for i, element in enumerate(value):
      problem = _scalar_problem(element, inner)
      if problem:
        return f"{name}[{i}]", problem
    return None
  if kind.startswith("dict["):
    if not isinstance(value, dict):
      return name, f"expected {kind}, got {_show(value)}"
    inner = kind.split(",")[1][:-1]
    for key, element in value.items():
      problem = _scalar_problem(element, inner)
      if problem:
        return f"{name}[{json.dumps(key, ensure_ascii=False)}]", problem
    return None
  problem = _scalar_problem(value, kind)
  return (name, problem) if problem else None


def _value_problem(table: schema.Table, name: str, value: Any) -> str | None:
  """Checks on allowed values, after the type check passed."""
  if name == "split" and value not in schema.SPLITS:
    return f"unknown split {_show(value)}; expected one of {list(schema.SPLITS)}"
  if table.name == "relevance" and name == "score" and not 0 <= value <= 3:
    return f"score must be in 0..3, got {value}"
  if name in ("is_clicked", "is_purchased") and value not in (0, 1):
    return f"expected 0 or 1, got {value}"
  if name == "position" and value is not None and value < 1:
    return f"position is 1-based, got {value}"
  if name in table.key and value == "":
    return "empty key value"
  return None


def id_strings(value: Any) -> Any:
  """An id value with JSON integers turned into their decimal strings.

  The KuaiSearch release writes ids (and the elements of id lists) as JSON
  integers; internally every id is a string. Anything else is returned as is
  for the type check to judge (a bool or a float is never an id).
  """
  if _is_int(value):
    return str(value)
  if isinstance(value, list) and any(_is_int(v) for v in value):
    return [str(v) if _is_int(v) else v for v in value]
  return value


def check_row(table: schema.Table, row: Any, file: str, line: int) -> list[str]:
  """Checks one decoded row on its own; raises SchemaError on a problem.

  Args:
    table: the row's table.
    row: the decoded JSON value of the line.
    file: file name used in error messages.
    line: 1-based line number used in error messages.

  Returns:
    The names of fields that are not in the schema (kept, not an error).
    Id fields given as JSON integers are rewritten in ``row`` as strings.
  """
  if not isinstance(row, dict):
    raise SchemaError(
      file, line, None, "not_object", f"expected a JSON object, got {_show(row)}"
    )
  for field in table.fields:
    if field.name not in row:
      if field.required:
        raise SchemaError(
          file, line, field.name, "missing_field", "missing required field"
        )
      continue
    value = row[field.name]
    if value is None and not field.required:
      continue
    if field.is_id:
      value = row[field.name] = id_strings(value)
    bad = _type_problem(value, field.kind, field.name)
    if bad:
      raise SchemaError(file, line, bad[0], "wrong_type", bad[1])
    problem = _value_problem(table, field.name, value)
    if problem:
      reason = "empty_key" if problem == "empty key value" else "bad_value"
      raise SchemaError(file, line, field.name, reason, problem)
  names = table.field_names
  return [k for k in row if k not in names]


def schema_error(error: jsonl.JsonlError) -> SchemaError:
  """The reader's wording of a line ``jsonl`` could not decode."""
  if error.reason == "malformed_json" and error.field is not None:
    problem = "appears twice in one object"
  elif error.reason == "malformed_json":
    problem = f"malformed JSON: {error.detail}"
  else:
    problem = error.problem
  return SchemaError(error.file, error.line, error.field, error.reason, problem)
