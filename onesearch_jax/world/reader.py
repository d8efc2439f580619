"""Read and validate a world directory in the KuaiSearch schema (schema.py).

Two levels:

  * ``iter_rows(path, table)`` streams one ``<table>.jsonl`` file and checks
    each row on its own: valid JSON, an object, every required field present,
    every value of the declared kind, ``split`` in ``schema.SPLITS``,
    ``score`` in 0..3, 0/1 flags, non-empty key fields;
  * ``load_world(dir)`` reads all five tables and adds the checks that need
    more than one row: duplicate keys, ids referenced from recall, ranking and
    relevance that are not in users/items, and the manifest's sha256 hashes.

Every problem is a ``SchemaError`` (a ``ValueError``) whose message names the
file, the 1-based line, the field and what is wrong::

    items.jsonl:17: field 'item_price': expected float, got str "abc"

With ``on_error="skip"`` nothing raises: each bad row is skipped and counted
in a ``SkipReport`` by table and reason, with the first few examples; rows
that reference a skipped or unknown id are skipped and counted in turn.

Choices (see docs/DATA.md (Part 2)):
  * An int is accepted for a float field; a bool is never an int or a float;
    NaN and infinities are rejected.
  * ``null`` is accepted for an optional (extension) field and means absent.
  * A JSON object that names a field twice is malformed (json would keep
    the last value silently).
  * Blank lines are ignored but counted (``SkipReport.blank_lines``).
  * Unknown extra fields are kept in the rows; their names are reported once.
  * ``clicked ⊆ impressed`` and ``purchased ⊆ clicked`` are *warnings*, not
    errors: KuaiSearch does not document either guarantee.
  * ``gender`` and ``search_entrance`` values are not checked (real logs may
    use other spellings than schema.GENDERS / schema.SEARCH_ENTRANCES).
  * A missing manifest is fine (real KuaiSearch files have none); a manifest
    that is present is verified unless ``verify_manifest=False``.

Command line: ``python -m onesearch_jax.world.reader <dir> [--skip]
[--no-verify-manifest]`` validates a directory and prints the row counts and
the report; it exits with status 1 on the first error (raise mode) or when
any row was skipped (skip mode).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from onesearch_jax.world import jsonl, schema
from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world.validation import (  # the reader's API re-exports these
  REASONS as REASONS,
)
from onesearch_jax.world.validation import (
  SchemaError,
  SkipReport,
  check_row,
  schema_error,
)

# The manifest's hash rules, re-exported for existing callers (world/manifest.py
# owns them).
file_sha256 = manifest_lib.file_sha256
content_hash = manifest_lib.content_hash

ON_ERROR = ("raise", "skip")


@dataclasses.dataclass(frozen=True)
class World:
  """A loaded world: each table as a list of row dicts, in file order.

  Rows keep their extra (unknown) fields. Absent optional fields are absent
  from the dict (or None where the file wrote null).
  """

  path: str
  users: list[dict[str, Any]]
  items: list[dict[str, Any]]
  recall: list[dict[str, Any]]
  ranking: list[dict[str, Any]]
  relevance: list[dict[str, Any]]
  report: SkipReport
  manifest: Mapping[str, Any] | None = None

  def table(self, name: str) -> list[dict[str, Any]]:
    if name not in schema.TABLES:
      raise KeyError(f"unknown table {name!r}; expected one of {tuple(schema.TABLES)}")
    return getattr(self, name)

  @property
  def counts(self) -> dict[str, int]:
    return {name: len(self.table(name)) for name in schema.TABLES}


def _table_of(table: schema.Table | str) -> schema.Table:
  if isinstance(table, schema.Table):
    return table
  if table not in schema.TABLES:
    raise KeyError(f"unknown table {table!r}; expected one of {tuple(schema.TABLES)}")
  return schema.TABLES[table]


def iter_rows(
  path: str | os.PathLike,
  table: schema.Table | str,
  *,
  on_error: str = "raise",
  report: SkipReport | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
  """Streams the rows of one table file, checking each row on its own.

  Cross-row checks (duplicate keys, unknown ids) are ``load_world``'s job.

  Args:
    path: the ``.jsonl`` file.
    table: its table (a ``schema.Table`` or a name in ``schema.TABLES``).
    on_error: "raise" to raise the first SchemaError, "skip" to skip bad rows
      and count them in ``report``.
    report: where skips, blank lines and extra field names are recorded
      (required for on_error="skip").

  Yields:
    (1-based line number, row dict) for every valid row, in file order.
  """
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
  if on_error == "skip" and report is None:
    raise ValueError("on_error='skip' needs a SkipReport to count the skipped rows")
  table = _table_of(table)
  for line, row, error in _scan(path, table, report):
    if error is None:
      yield line, row
    elif on_error == "raise":
      raise error
    else:
      report.record_skip(table.name, error)


def _scan(
  path: str | os.PathLike, table: schema.Table, report: SkipReport | None
) -> Iterator[tuple[int, Any, SchemaError | None]]:
  """Yields (line, decoded value or None, error or None) for each data line."""
  file = os.path.basename(os.fspath(path))
  seen_extra: set[str] = set()

  def on_blank() -> None:
    if report is not None:
      report.blank_lines[table.name] += 1

  for line, row, decode_error in jsonl.scan(
    path, name=file, unique_names=True, on_blank=on_blank
  ):
    if decode_error is not None:
      yield line, None, schema_error(decode_error)
      continue
    try:
      extra = check_row(table, row, file, line)
    except SchemaError as e:
      yield line, row, e
      continue
    for name in extra:
      if name not in seen_extra:
        seen_extra.add(name)
        if report is not None:
          report.record_extra_field(table.name, name)
    yield line, row, None


# ------------------------------------------------------------------ manifest


def check_manifest(directory: str | os.PathLike) -> list[SchemaError]:
  """Verifies ``<dir>/manifest.json`` against the files beside it.

  Checks that every listed file exists and has the listed sha256, and that
  ``content_hash`` matches the ``files`` dict.

  Returns:
    The problems found (empty if the manifest is consistent).

  Raises:
    FileNotFoundError: there is no manifest.json.
    SchemaError: the manifest itself is not valid JSON or lacks ``files``.
  """
  directory = os.fspath(directory)
  manifest = _read_manifest(directory, must_be_object=False)
  if manifest is None:
    path = os.path.join(directory, schema.MANIFEST)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
  files = manifest.get("files") if isinstance(manifest, dict) else None
  if not isinstance(files, dict):
    raise SchemaError(
      schema.MANIFEST, None, "files", "manifest", "missing or not an object"
    )
  problems = []
  for name, expected in sorted(files.items()):
    target = os.path.join(directory, name)
    if not os.path.isfile(target):
      problems.append(
        SchemaError(name, None, None, "manifest", "listed in manifest.json but missing")
      )
      continue
    actual = manifest_lib.file_sha256(target)
    if actual != expected:
      problems.append(
        SchemaError(
          name,
          None,
          None,
          "manifest",
          f"sha256 {actual} differs from manifest.json's {expected}",
        )
      )
  expected_hash = manifest_lib.content_hash(files)
  if "content_hash" in manifest and manifest["content_hash"] != expected_hash:
    problems.append(
      SchemaError(
        schema.MANIFEST,
        None,
        "content_hash",
        "manifest",
        f"{manifest['content_hash']} differs from the hash of 'files' "
        f"({expected_hash})",
      )
    )
  return problems


def _read_manifest(directory: str, must_be_object: bool = True) -> Any:
  """The parsed manifest (None when absent); SchemaError when unreadable."""
  try:
    manifest = manifest_lib.read_manifest(directory)
  except json.JSONDecodeError as e:
    raise SchemaError(
      schema.MANIFEST, e.lineno, None, "manifest", f"malformed JSON: {e.msg}"
    ) from None
  if must_be_object and manifest is not None and not isinstance(manifest, dict):
    raise SchemaError(schema.MANIFEST, 1, None, "manifest", "expected a JSON object")
  return manifest


# --------------------------------------------------------------------- world

# Fields that reference ids in another table: table -> ((field, target), ...).
REFERENCES: Mapping[str, tuple[tuple[str, str], ...]] = {
  "recall": (
    ("user_id", "users"),
    ("impressed_item_ids", "items"),
    ("clicked_item_ids", "items"),
    ("purchased_item_ids", "items"),
  ),
  "ranking": (
    ("user_id", "users"),
    ("target_item_id", "items"),
    ("recently_clicked_item_ids", "items"),
    ("recently_purchased_item_ids", "items"),
  ),
  "relevance": (("item_id", "items"),),
}


class _Loader:
  """Reads the tables in dependency order and applies cross-row checks."""

  def __init__(self, directory: str, on_error: str, report: SkipReport):
    self.directory = directory
    self.on_error = on_error
    self.report = report
    # Known ids per referenced table, and ids of rows that were skipped
    # (for a clearer message on the rows that reference them).
    self.known: dict[str, set[str]] = {"users": set(), "items": set()}
    self.skipped_ids: dict[str, dict[str, str]] = {"users": {}, "items": {}}

  def fail(self, table: str, error: SchemaError) -> None:
    if self.on_error == "raise":
      raise error
    self.report.record_skip(table, error)

  def read(self, table: schema.Table) -> list[dict[str, Any]]:
    path = os.path.join(self.directory, table.filename)
    if not os.path.isfile(path):
      raise SchemaError(table.filename, None, None, "missing_file", "file is missing")
    rows = []
    first_line: dict[tuple, int] = {}
    for line, row, error in _scan(path, table, self.report):
      if error is not None:
        self._note_skipped_id(table, row, line)
        self.fail(table.name, error)
        continue
      error = self._reference_error(table, row, line)
      if error is None and table.key:
        key = tuple(row[k] for k in table.key)
        if key in first_line:
          shown = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}"
            for k, v in zip(table.key, key, strict=True)
          )
          error = SchemaError(
            table.filename,
            line,
            table.key[0] if len(table.key) == 1 else "+".join(table.key),
            "duplicate_key",
            f"duplicate key {shown} (first at line {first_line[key]})",
          )
        else:
          first_line[key] = line
      if error is not None:
        self._note_skipped_id(table, row, line)
        self.fail(table.name, error)
        continue
      self._check_subsets(table, row, line)
      rows.append(row)
    if table.name in self.known:
      key_field = table.key[0]
      self.known[table.name] = {row[key_field] for row in rows}
    self.report.rows_kept[table.name] = len(rows)
    return rows

  def _note_skipped_id(self, table: schema.Table, row: Any, line: int) -> None:
    """Remembers the key of a skipped users/items row (for clearer messages)."""
    if table.name not in self.skipped_ids or not isinstance(row, dict):
      return
    key = row.get(table.key[0])
    if isinstance(key, str):
      self.skipped_ids[table.name].setdefault(key, f"{table.filename}:{line}")

  def _reference_error(
    self, table: schema.Table, row: dict[str, Any], line: int
  ) -> SchemaError | None:
    for field, target in REFERENCES.get(table.name, ()):
      value = row.get(field)
      if value is None:
        continue
      values = value if isinstance(value, list) else [value]
      for i, ref in enumerate(values):
        if ref in self.known[target]:
          continue
        name = f"{field}[{i}]" if isinstance(value, list) else field
        kind = "user" if target == "users" else "item"
        problem = f"unknown {kind} id {json.dumps(ref, ensure_ascii=False)}"
        where = self.skipped_ids[target].get(ref)
        if where is not None:
          problem += f" (its row was skipped at {where})"
        else:
          problem += f" (not in {target}.jsonl)"
        return SchemaError(table.filename, line, name, f"unknown_{kind}_id", problem)
    return None

  def _check_subsets(self, table: schema.Table, row: dict[str, Any], line: int):
    if table.name != "recall":
      return
    impressed = set(row["impressed_item_ids"])
    clicked = set(row["clicked_item_ids"])
    for name, ids, within, reason in (
      ("clicked_item_ids", row["clicked_item_ids"], impressed, "clicked_not_impressed"),
      (
        "purchased_item_ids",
        row["purchased_item_ids"],
        clicked,
        "purchased_not_clicked",
      ),
    ):
      outside = [i for i in ids if i not in within]
      if outside:
        self.report.record_warning(
          table.name,
          reason,
          f"{table.filename}:{line}: field '{name}': "
          f"{json.dumps(outside, ensure_ascii=False)} not in "
          f"{'impressed' if within is impressed else 'clicked'}_item_ids",
        )


def load_world(
  path: str | os.PathLike,
  *,
  on_error: str = "raise",
  verify_manifest: bool = True,
) -> World:
  """Loads and validates a world directory.

  Args:
    path: directory holding ``{users,items,recall,ranking,relevance}.jsonl``
      and optionally ``manifest.json``.
    on_error: "raise" (the first problem raises SchemaError) or "skip" (bad
      rows are skipped and counted in ``World.report``).
    verify_manifest: check the manifest's sha256 hashes when it is present.

  Returns:
    The World; ``world.report`` lists skips, warnings and extra fields.

  Raises:
    SchemaError: on the first problem (raise mode), or when a table file is
      missing or the manifest itself is unreadable (both modes).
  """
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
  directory = os.fspath(path)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: not a directory")
  report = SkipReport()
  manifest = _read_manifest(directory)
  if manifest is not None and verify_manifest:
    for problem in check_manifest(directory):
      if on_error == "raise":
        raise problem
      report.record_skip("manifest", problem)
    report.manifest_checked = True
  loader = _Loader(directory, on_error, report)
  tables = {name: loader.read(table) for name, table in schema.TABLES.items()}
  if manifest is not None and verify_manifest:
    counts = manifest.get("counts", {})
    for name in schema.TABLES:
      if name not in counts:
        continue
      lines = report.rows_kept[name] + report.skipped_in(name)
      if counts[name] != lines:
        problem = SchemaError(
          schema.MANIFEST,
          None,
          f"counts.{name}",
          "manifest",
          f"says {counts[name]} rows, {schema.TABLES[name].filename} has {lines}",
        )
        if on_error == "raise":
          raise problem
        report.record_skip("manifest", problem)
  return World(path=directory, report=report, manifest=manifest, **tables)


def main(argv: list[str]) -> int:
  """``python -m onesearch_jax.world.reader <dir> [--skip] [--no-verify-manifest]``."""
  usage = (
    "usage: python -m onesearch_jax.world.reader <dir> [--skip] [--no-verify-manifest]"
  )
  flags = {a for a in argv[1:] if a.startswith("--")}
  dirs = [a for a in argv[1:] if not a.startswith("--")]
  unknown = flags - {"--skip", "--no-verify-manifest"}
  if len(dirs) != 1 or unknown or "--help" in flags:
    print(usage, file=sys.stderr)
    return 2
  on_error = "skip" if "--skip" in flags else "raise"
  try:
    world = load_world(
      dirs[0], on_error=on_error, verify_manifest="--no-verify-manifest" not in flags
    )
  except (SchemaError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{dirs[0]}: " + ", ".join(f"{t}={n}" for t, n in world.counts.items()))
  print(world.report.format())
  return 1 if world.report.total_skipped else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
