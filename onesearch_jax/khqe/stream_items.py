"""The streamed build's one pass over items.jsonl (stream_build.py, step 1).

``ItemScan`` reads every line of the catalogue once and keeps, per item, its
id (to a scratch file, then the sorted fixed-width array ``ItemIds``), the
byte offset and the line number of its row (two int64 arrays of N);
``StreamSample.items`` rows are reservoir-sampled on the way. ``fetch`` then
reads any other rows (the items the sampled sessions show, known only after
the log pass) by seeking to their offsets, so the file is not read a second
time for them.

Checks. ``checked=False`` gives every row the schema reader's per-row checks
(``validation.check_row``: every field's kind, allowed values, a name written
twice), what ``reader.iter_rows`` does. ``checked=True`` is for a world the
world stage has already validated (``reader.validate_world``) or simulated,
the pipeline's sids stage: only what this pass reads is checked, each line
valid UTF-8 JSON, an object, with a non-empty string (or integer) ``item_id``;
the rows it keeps (sample, fetched rows) get the schema reader's id strings
(integer ids as decimal strings), so both modes keep the same rows. Either
way a bad line raises a SchemaError naming the file, line and field, and a
repeated item id names both lines (``ItemIds``).
"""

from __future__ import annotations

import array
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from onesearch_jax.world import jsonl, reader, schema, validation

_ITEMS = schema.TABLES["items"]
_ID_FIELDS = tuple(f.name for f in _ITEMS.fields if f.is_id)


class Reservoir:
  """A seeded uniform sample of at most k items of a stream, returned in
  stream order (Li's algorithm L: random numbers only at the replacements,
  ~k log(n / k) of them, not one per item)."""

  def __init__(self, k: int, seed: int):
    self.k, self.seen = k, 0
    self._rng = np.random.default_rng(seed)
    self._keep: list[tuple[int, Any]] = []
    self._w = 1.0
    self._next = k - 1
    self._advance()

  def _advance(self) -> None:
    """Draws the next weight and the position of the next replacement."""
    self._w *= float(np.exp(np.log(self._rng.random()) / self.k))
    gap = np.floor(np.log(self._rng.random()) / np.log1p(-self._w))
    self._next += int(min(gap, 2**62)) + 1

  def add(self, value: Any) -> None:
    if self.seen < self.k:
      self._keep.append((self.seen, value))
    elif self.seen == self._next:
      self._keep[int(self._rng.integers(self.k))] = (self.seen, value)
      self._advance()
    self.seen += 1

  def rows(self) -> list[tuple[int, Any]]:
    """(stream position, value) pairs sorted by position."""
    return sorted(self._keep, key=lambda p: p[0])


class ItemIds:
  """Item ids as a fixed-width byte array on disk, with id -> row look-ups.

  Attributes:
    ids: [N] ``S<w>`` memory map, row order (the world's item order).
    order: [N] int64, the rows sorted by id.
  """

  def __init__(
    self,
    scratch: pathlib.Path,
    ids_jsonl: pathlib.Path,
    n: int,
    w: int,
    lines: np.ndarray,
  ):
    self.width = max(w, 1)
    path = scratch / "item_ids.npy"
    self.ids = np.lib.format.open_memmap(path, "w+", f"S{self.width}", (n,))
    row, block = 0, []
    with open(ids_jsonl, encoding="utf-8") as f:
      for line in f:
        block.append(json.loads(line).encode())
        if len(block) == 65_536:
          self.ids[row : row + len(block)] = block
          row, block = row + len(block), []
    if block:
      self.ids[row : row + len(block)] = block
    self.ids.flush()
    self.order = np.argsort(self.ids, kind="stable")
    self._sorted = self.ids[self.order]
    dup = np.flatnonzero(self._sorted[1:] == self._sorted[:-1])
    if dup.size:
      a, b = sorted(self.order[dup[0] : dup[0] + 2].tolist())
      raise reader.SchemaError(
        "items.jsonl",
        int(lines[b]),
        "item_id",
        "duplicate_key",
        f"duplicate key item_id={json.dumps(self.get(b), ensure_ascii=False)} "
        f"(first at line {int(lines[a])})",
      )

  def get(self, row: int) -> str:
    return self.ids[row].decode()

  def rows(self, ids: Sequence[str]) -> np.ndarray:
    """Rows of ``ids`` ([M] int64), -1 for an id not in the catalogue."""
    enc = [i.encode() for i in ids]
    fits = np.asarray([len(b) <= self.width for b in enc], bool)
    arr = np.asarray([b if ok else b"" for b, ok in zip(enc, fits, strict=True)])
    arr = arr.astype(f"S{self.width}")
    pos = np.minimum(np.searchsorted(self._sorted, arr), len(self._sorted) - 1)
    hit = fits & (self._sorted[pos] == arr)
    return np.where(hit, self.order[pos], -1)


class ItemScan:
  """One pass over items.jsonl: ids, line offsets, a reservoir sample.

  Attributes:
    path: the items file.
    ids: the ItemIds (row order = file order of the non-blank lines).
    sample: the Reservoir of (row, row dict) pairs.
    offsets: [N] int64, the byte offset of each row's line.
    lines: [N] int64, its 1-based line number.
  """

  def __init__(
    self,
    world: pathlib.Path,
    scratch: pathlib.Path,
    sample: Reservoir,
    *,
    checked: bool,
    log: Callable[[str], None] = lambda _: None,
  ):
    """Reads the file (see the module doc for ``checked``).

    Raises:
      reader.SchemaError: a bad line (file, line, field), a repeated id.
      ValueError: no item.
    """
    self.path = reader.table_path(world, _ITEMS)
    self._file = os.path.basename(self.path)
    self._checked = checked
    self.sample = sample
    size = max(os.path.getsize(self.path), 1)
    offsets, lines = array.array("q"), array.array("q")
    width = offset = 0
    step = max(size // 10, 1)
    next_report = step
    ids_jsonl = scratch / "item_ids.jsonl"
    with open(self.path, "rb") as f, open(ids_jsonl, "w", encoding="utf-8") as out:
      for line, raw in enumerate(f, start=1):
        start, offset = offset, offset + len(raw)
        if not raw.strip():
          continue
        row = self._decode(raw, line)
        offsets.append(start)
        lines.append(line)
        item_id = row["item_id"]
        out.write(json.dumps(item_id, ensure_ascii=False) + "\n")
        width = max(width, len(item_id.encode()))
        sample.add(row)
        if offset >= next_report:
          log(f"items pass: {100 * offset // size}% ({len(offsets)} items)")
          next_report += step
    if not offsets:
      raise ValueError(f"{world}: need items, got none")
    self.offsets = np.frombuffer(offsets, np.int64)
    self.lines = np.frombuffer(lines, np.int64)
    self.ids = ItemIds(scratch, ids_jsonl, len(offsets), width, self.lines)

  def __len__(self) -> int:
    return len(self.offsets)

  def sampled(self) -> dict[int, dict[str, Any]]:
    """row -> row dict of the sample, ids as the schema reader gives them."""
    return {n: _schema_ids(row) for n, row in self.sample.rows()}

  def fetch(self, rows: Sequence[int]) -> dict[int, dict[str, Any]]:
    """row -> row dict of the given rows, read at their offsets (checked as
    the pass checked them; ids as the schema reader gives them)."""
    out = {}
    with open(self.path, "rb") as f:
      for n in sorted(set(rows)):
        f.seek(int(self.offsets[n]))
        out[n] = _schema_ids(self._decode(f.readline(), int(self.lines[n])))
    return out

  def _decode(self, raw: bytes, line: int) -> dict[str, Any]:
    """The row of one line; its id a str; raises a SchemaError."""
    if self._checked:
      try:
        row = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError):
        row = self._strict(raw, line)  # raises with the reader's wording
      return _checked_id(row, self._file, line)
    row = self._strict(raw, line)
    validation.check_row(_ITEMS, row, self._file, line)
    return row

  def _strict(self, raw: bytes, line: int) -> Any:
    try:
      return jsonl.decode_line(raw, self._file, line, unique_names=True)
    except jsonl.JsonlError as e:
      raise validation.schema_error(e) from None


def _checked_id(row: Any, file: str, line: int) -> dict[str, Any]:
  """``row`` with a valid ``item_id`` (an integer id becomes its string)."""
  if not isinstance(row, dict):
    kind = "list" if isinstance(row, list) else type(row).__name__
    raise validation.SchemaError(
      file, line, None, "not_object", f"expected a JSON object, got {kind}"
    )
  if "item_id" not in row:
    raise validation.SchemaError(
      file, line, "item_id", "missing_field", "missing required field"
    )
  value = row["item_id"] = validation.id_strings(row["item_id"])
  if not isinstance(value, str):
    shown = json.dumps(value, ensure_ascii=False)[:40]
    raise validation.SchemaError(
      file, line, "item_id", "wrong_type", f"expected str, got {shown}"
    )
  if not value:
    raise validation.SchemaError(file, line, "item_id", "empty_key", "empty key value")
  return row


def _schema_ids(row: dict[str, Any]) -> dict[str, Any]:
  """``row`` with its id fields as ``check_row`` leaves them (in place)."""
  for name in _ID_FIELDS:
    if row.get(name) is not None:
      row[name] = validation.id_strings(row[name])
  return row
