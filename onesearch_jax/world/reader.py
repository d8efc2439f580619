"""Read and validate a world directory in the KuaiSearch schema (schema.py).

Two levels:

  * ``iter_rows(path, table)`` streams one ``<table>.jsonl`` file and checks
    each row on its own: valid JSON, an object, every required field present,
    every value of the declared kind, ``split`` in ``schema.SPLITS``,
    ``score`` in 0..3, 0/1 flags, non-empty key fields;
  * ``load_world(dir)`` reads all five tables and adds the checks that need
    more than one row: duplicate keys, ids referenced from recall, ranking and
    relevance that are not in users/items, and the manifest's sha256 hashes;
    it ties relevance rows without an item id to items by title
    (``relevance_match``);
  * ``validate_world(dir)`` runs the same checks streamed, keeping no table
    in memory (the ids and per-row key hashes only; see its docstring), and
    returns the counts and the report. The command line uses it, so the full
    release validates in bounded memory.

The public KuaiSearch release is read as it is: ``rank.jsonl`` is the ranking
table (``table_path``), integer ids become their decimal strings
(``validation.id_strings``), and because its sample files do not reference
each other, a directory with ``rank.jsonl`` drops the rows whose ids are not
in users/items and counts them (``dangling="drop"``) instead of failing.

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
[--no-verify-manifest] [--dangling=auto|error|drop]`` validates a directory
and prints the row counts and the report (rows dropped for dangling ids are
counted by table and reason); it exits with status 1 on the first error
(raise mode) or when any row was skipped (skip mode); dropped rows are not
errors.
"""

from __future__ import annotations

import array
import dataclasses
import json
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import numpy as np

from onesearch_jax.world import (
  jsonl,
  manifest_check,
  ranking_statistics,
  schema,
  table_files,
)
from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import relevance_match as relevance_lib
from onesearch_jax.world.validation import (  # the reader's API re-exports these
  REASONS as REASONS,
)
from onesearch_jax.world.validation import (
  SchemaError,
  SkipReport,
  check_row,
  id_strings,
  schema_error,
)

# The manifest's hash rules, re-exported for existing callers (world/manifest.py
# owns them), its check (world/manifest_check.py) and the table file lookup
# (world/table_files.py).
file_sha256 = manifest_lib.file_sha256
content_hash = manifest_lib.content_hash
check_manifest = manifest_check.check_manifest
table_path = table_files.table_path
table_of = table_files.table_of

ON_ERROR = ("raise", "skip")
# What load_world does with a row that references an id outside the
# directory: "error" (an unknown_*_id error, raised or skipped by on_error),
# "drop" (dropped and counted in SkipReport.dangling, not an error), "auto"
# ("drop" for the release layout, a directory with rank.jsonl; else "error").
DANGLING = ("auto", "error", "drop")


@dataclasses.dataclass(frozen=True)
class World:
  """A loaded world: each table as a list of row dicts, in file order.

  Rows keep their extra (unknown) fields. Absent optional fields are absent
  from the dict (or None where the file wrote null). Ids are strings (JSON
  integers in the file are read as their decimal strings).

  ``relevance_match`` ties each relevance row to an item where it can
  (``world/relevance_match.py``): ``relevance_match.item_ids[i]`` is row i's
  item id (its own ``item_id``, or the one its title matches) or None; the
  rows themselves stay as in the file. The unmatched rows are
  ``relevance_pairs``, (query, title, score) text pairs; counts by outcome
  are in ``report.relevance``. The ranking rows' statistics objects stay
  per-row dicts under their field names; ``statistics()`` stacks them into
  float32 arrays.
  """

  path: str
  users: list[dict[str, Any]]
  items: list[dict[str, Any]]
  recall: list[dict[str, Any]]
  ranking: list[dict[str, Any]]
  relevance: list[dict[str, Any]]
  report: SkipReport
  manifest: Mapping[str, Any] | None = None
  relevance_match: relevance_lib.RelevanceMatch | None = None

  def table(self, name: str) -> list[dict[str, Any]]:
    if name not in schema.TABLES:
      raise KeyError(f"unknown table {name!r}; expected one of {tuple(schema.TABLES)}")
    return getattr(self, name)

  @property
  def counts(self) -> dict[str, int]:
    return {name: len(self.table(name)) for name in schema.TABLES}

  @property
  def relevance_pairs(self) -> tuple[relevance_lib.RelevancePair, ...]:
    """The relevance rows no item matches, as text pairs."""
    return self.matched_relevance().pairs

  def matched_relevance(self) -> relevance_lib.RelevanceMatch:
    """``relevance_match``, computed here for a World built by hand."""
    if self.relevance_match is not None:
      return self.relevance_match
    return relevance_lib.match_relevance(self.items, self.relevance)

  def statistics(self) -> ranking_statistics.RankingStatistics:
    """The ranking rows' user and item statistics as float32 arrays."""
    return ranking_statistics.ranking_statistics(self.ranking)


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
  table = table_of(table)
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

  def __init__(
    self,
    directory: str,
    on_error: str,
    report: SkipReport,
    dangling: str,
    keep: bool = True,
  ):
    self.directory = directory
    self.on_error = on_error
    self.report = report
    self.dangling = dangling
    # keep=False (validate_world): rows are checked and counted, not kept
    # (the relevance table excepted); duplicate keys are found from 8-byte
    # key hashes at the end of each table (_deferred_duplicates).
    self.keep = keep
    # Known ids per referenced table, and ids of rows that were skipped
    # (for a clearer message on the rows that reference them).
    self.known: dict[str, set[str]] = {"users": set(), "items": set()}
    self.skipped_ids: dict[str, dict[str, str]] = {"users": {}, "items": {}}

  def fail(self, table: str, error: SchemaError) -> None:
    if self.on_error == "raise":
      raise error
    self.report.record_skip(table, error)

  def read(self, table: schema.Table) -> list[dict[str, Any]]:
    """The kept rows of ``table`` (none unless ``keep`` or relevance)."""
    path = table_path(self.directory, table)
    file = os.path.basename(path)
    rows = []
    kept = 0
    keep_rows = self.keep or table.name == "relevance"
    first_line: dict[tuple, int] = {}
    digests, digest_lines = array.array("q"), array.array("q")
    for line, row, error in _scan(path, table, self.report):
      if error is not None:
        self._note_skipped_id(table, row, line)
        self.fail(table.name, error)
        continue
      error, outside = self._reference_error(table, file, row, line)
      if outside and self.dangling == "drop":
        self.report.record_dangling(table.name, error)
        continue
      if error is None and table.key:
        key = tuple(row[k] for k in table.key)
        if not self.keep:
          digests.append(hash(key))
          digest_lines.append(line)
        elif key in first_line:
          error = _duplicate_error(table, file, line, key, first_line[key])
        else:
          first_line[key] = line
      if error is not None:
        self._note_skipped_id(table, row, line)
        self.fail(table.name, error)
        continue
      self._check_subsets(table, file, row, line)
      if table.name in self.known:
        self.known[table.name].add(row[table.key[0]])
      kept += 1
      if keep_rows:
        rows.append(row)
    if digests:  # keep=False: the kept tables (relevance) have no key
      kept -= len(self._deferred_duplicates(table, path, digests, digest_lines))
    self.report.rows_kept[table.name] = kept
    return rows

  def _deferred_duplicates(
    self,
    table: schema.Table,
    path: str,
    digests: array.array,
    digest_lines: array.array,
  ) -> set[int]:
    """Finds duplicate keys from the key hashes of one table's rows.

    Rows whose hash occurs twice are candidates; one more pass over the file
    compares their actual keys (a hash collision is not a duplicate). Each
    duplicate is failed (raised or skipped) like in the in-memory reader,
    but after the whole table was read.

    Returns:
      The lines of the duplicate rows (they are not kept).
    """
    d = np.frombuffer(digests, np.int64)
    sd = np.sort(d)
    repeated = sd[1:][sd[1:] == sd[:-1]]
    if not repeated.size:
      return set()
    lines = np.frombuffer(digest_lines, np.int64)
    candidates = set(lines[np.isin(d, repeated)].tolist())
    first: dict[tuple, int] = {}
    dups: list[tuple[int, tuple]] = []
    for line, row, error in _scan(path, table, None):
      if line not in candidates or error is not None:
        continue
      key = tuple(row[k] for k in table.key)
      if key in first:
        dups.append((line, key))
      else:
        first[key] = line
    file = os.path.basename(path)
    for line, key in dups:
      self.fail(table.name, _duplicate_error(table, file, line, key, first[key]))
    return {line for line, _ in dups}

  def _note_skipped_id(self, table: schema.Table, row: Any, line: int) -> None:
    """Remembers the key of a skipped users/items row (for clearer messages)."""
    if table.name not in self.skipped_ids or not isinstance(row, dict):
      return
    key = id_strings(row.get(table.key[0]))
    if isinstance(key, str):
      self.skipped_ids[table.name].setdefault(key, f"{table.filename}:{line}")

  def _reference_error(
    self, table: schema.Table, file: str, row: dict[str, Any], line: int
  ) -> tuple[SchemaError | None, bool]:
    """The first unknown id of ``row`` as an error (or None), and whether
    that id is outside the directory (True) rather than the key of a row
    that was skipped as bad (False)."""
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
        error = SchemaError(file, line, name, f"unknown_{kind}_id", problem)
        return error, where is None
    return None, False

  def _check_subsets(
    self, table: schema.Table, file: str, row: dict[str, Any], line: int
  ):
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
          f"{file}:{line}: field '{name}': "
          f"{json.dumps(outside, ensure_ascii=False)} not in "
          f"{'impressed' if within is impressed else 'clicked'}_item_ids",
        )


def _duplicate_error(
  table: schema.Table, file: str, line: int, key: tuple, first: int
) -> SchemaError:
  shown = ", ".join(
    f"{k}={json.dumps(v, ensure_ascii=False)}"
    for k, v in zip(table.key, key, strict=True)
  )
  return SchemaError(
    file,
    line,
    table.key[0] if len(table.key) == 1 else "+".join(table.key),
    "duplicate_key",
    f"duplicate key {shown} (first at line {first})",
  )


def dangling_policy(directory: str | os.PathLike, dangling: str = "auto") -> str:
  """ "error" or "drop": ``dangling`` with "auto" resolved (module docstring)."""
  if dangling not in DANGLING:
    raise ValueError(f"dangling must be one of {DANGLING}, got {dangling!r}")
  if dangling != "auto":
    return dangling
  release = os.path.isfile(os.path.join(os.fspath(directory), "rank.jsonl"))
  return "drop" if release else "error"


def load_world(
  path: str | os.PathLike,
  *,
  on_error: str = "raise",
  verify_manifest: bool = True,
  dangling: str = "auto",
  skip_tables: Collection[str] = (),
) -> World:
  """Loads and validates a world directory.

  Args:
    path: directory holding ``{users,items,recall,ranking,relevance}.jsonl``
      (the ranking table may be ``rank.jsonl``) and optionally
      ``manifest.json``.
    on_error: "raise" (the first problem raises SchemaError) or "skip" (bad
      rows are skipped and counted in ``World.report``).
    verify_manifest: check the manifest's sha256 hashes when it is present.
    dangling: a row referencing a user or item id that is not in the
      directory: "error" (an ``unknown_*_id`` error, raised or skipped by
      ``on_error``), "drop" (dropped and counted in
      ``World.report.dangling``; the rest loads), "auto" ("drop" when the
      directory has ``rank.jsonl``, the public release whose sample files do
      not reference each other, else "error").
    skip_tables: tables neither read nor checked (their field in the World
      is an empty list), e.g. ("ranking",) for a caller that never uses the
      largest table; only "ranking" may be skipped (no other table refers
      to it). The manifest hashes still cover every file.

  Returns:
    The World; ``world.report`` lists skips, dropped rows, warnings, extra
    fields and how relevance rows were tied to items.

  Raises:
    SchemaError: on the first problem (raise mode), or when a table file is
      missing or the manifest itself is unreadable (both modes).
  """
  skip = frozenset(skip_tables)
  if not skip <= {"ranking"}:
    raise ValueError(f"load_world: only 'ranking' may be skipped, got {sorted(skip)}")
  directory, report, manifest, tables, match = _read(
    path, on_error, verify_manifest, dangling, keep=True, skip=skip
  )
  return World(
    path=directory,
    report=report,
    manifest=manifest,
    relevance_match=match,
    **tables,
  )


@dataclasses.dataclass(frozen=True)
class WorldSummary:
  """What ``validate_world`` found: counts and the report, no rows.

  Attributes:
    path: the directory.
    counts: table -> rows kept (as ``World.counts``).
    report: skips, dropped rows, warnings, extra fields, relevance outcomes.
    manifest: the manifest dict, or None.
    relevance_match: how each relevance row was tied to an item.
  """

  path: str
  counts: dict[str, int]
  report: SkipReport
  manifest: Mapping[str, Any] | None
  relevance_match: relevance_lib.RelevanceMatch


def validate_world(
  path: str | os.PathLike,
  *,
  on_error: str = "raise",
  verify_manifest: bool = True,
  dangling: str = "auto",
) -> WorldSummary:
  """``load_world``'s checks, streamed: every row is read, none is kept.

  For directories too big to hold (the full release: 18.6 M items, 81 M
  ranking rows). Same arguments, same checks, same counts and report as
  ``load_world``, with these differences:

  * memory: the user and item ids are kept (a set of strings, for the
    reference checks; ~90 bytes per id), plus 16 bytes per row of a keyed
    table (an 8-byte key hash and its line) while that table is read, and
    the relevance rows (a judgment set, small) with the items whose title
    one of them names;
  * duplicate keys are found at the end of their table (one more pass over
    the file compares the keys of rows whose hashes collide), so in raise
    mode a later bad row of the same table raises first, and a duplicate
    recall row's subset warnings are still counted.

  Raises:
    SchemaError: as ``load_world``.
  """
  directory, report, manifest, _, match = _read(
    path, on_error, verify_manifest, dangling, keep=False
  )
  return WorldSummary(
    path=directory,
    counts={name: report.rows_kept[name] for name in schema.TABLES},
    report=report,
    manifest=manifest,
    relevance_match=match,
  )


def _titled_items(
  directory: str, known: set[str], titles: set[str]
) -> Iterator[dict[str, Any]]:
  """The valid, first-seen item rows whose normalised title is in ``titles``
  (one more streamed pass over the items table)."""
  table = schema.TABLES["items"]
  seen: set[str] = set()
  for _, row, error in _scan(table_path(directory, table), table, None):
    if error is not None or row["item_id"] not in known or row["item_id"] in seen:
      continue
    if relevance_lib.normalise_text(row["item_title"]) in titles:
      seen.add(row["item_id"])
      yield row


def _read(path, on_error, verify_manifest, dangling, *, keep, skip=frozenset()):
  """(directory, report, manifest, tables, relevance match) of a world."""
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
  directory = os.fspath(path)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: not a directory")
  report = SkipReport()
  manifest = manifest_check.read_manifest(directory)
  if manifest is not None and verify_manifest:
    for problem in check_manifest(directory):
      if on_error == "raise":
        raise problem
      report.record_skip("manifest", problem)
    report.manifest_checked = True
  loader = _Loader(
    directory, on_error, report, dangling_policy(directory, dangling), keep=keep
  )
  tables = {
    name: [] if name in skip else loader.read(table)
    for name, table in schema.TABLES.items()
  }
  items = tables["items"]
  if not keep:
    titles = {
      relevance_lib.normalise_text(r["item_title"])
      for r in tables["relevance"]
      if r.get("item_id") in (None, "")
    }
    items = list(_titled_items(directory, loader.known["items"], titles))
  match = relevance_lib.match_relevance(items, tables["relevance"])
  report.relevance.update(match.counts)
  if manifest is not None and verify_manifest:
    counts = manifest.get("counts", {})
    for name in schema.TABLES:
      if name not in counts or name in skip:
        continue
      lines = (
        report.rows_kept[name] + report.skipped_in(name) + report.dangling_in(name)
      )
      if counts[name] != lines:
        file = os.path.basename(table_path(directory, name))
        problem = SchemaError(
          schema.MANIFEST,
          None,
          f"counts.{name}",
          "manifest",
          f"says {counts[name]} rows, {file} has {lines}",
        )
        if on_error == "raise":
          raise problem
        report.record_skip("manifest", problem)
  return directory, report, manifest, tables, match


def main(argv: list[str]) -> int:
  """``python -m onesearch_jax.world.reader <dir> [--skip] [--no-verify-manifest]
  [--dangling=auto|error|drop]``."""
  usage = (
    "usage: python -m onesearch_jax.world.reader <dir> [--skip] "
    "[--no-verify-manifest] [--dangling=auto|error|drop]"
  )
  flags = {a for a in argv[1:] if a.startswith("--")}
  dirs = [a for a in argv[1:] if not a.startswith("--")]
  dangling = [f.split("=", 1)[1] for f in flags if f.startswith("--dangling=")]
  unknown = flags - {"--skip", "--no-verify-manifest"}
  unknown -= {f"--dangling={d}" for d in DANGLING}
  if len(dirs) != 1 or unknown or "--help" in flags or len(dangling) > 1:
    print(usage, file=sys.stderr)
    return 2
  on_error = "skip" if "--skip" in flags else "raise"
  try:
    world = validate_world(
      dirs[0],
      on_error=on_error,
      verify_manifest="--no-verify-manifest" not in flags,
      dangling=dangling[0] if dangling else "auto",
    )
  except (SchemaError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{dirs[0]}: " + ", ".join(f"{t}={n}" for t, n in world.counts.items()))
  print(world.report.format())
  return 1 if world.report.total_skipped else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
