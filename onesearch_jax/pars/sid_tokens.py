"""SID local codes <-> decoder token ids, and generated SIDs -> items.

`SidCodec`: token = starts[k] + code[k] per SID position k. `from_ranges`
reads the model's `sid_ranges`; when an OPQ position shares the previous
position's range (one `<d_>` range for both d codes, the vocabulary's
layout), the j-th OPQ code is offset by j * opq_codes inside it, as the
`<d_{v + j*opq}>` token strings are.

`ItemLookup`: SID codes -> the item row (the most popular item of a SID;
ties: most train clicks, then smallest item id), -1 for a SID no item has.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SidCodec:
  """Per-position token offsets of a C-token SID."""

  starts: tuple[int, ...]
  sizes: tuple[int, ...]

  @classmethod
  def from_ranges(cls, sid_ranges, code_ranges) -> SidCodec:
    """From the model's sid_ranges and the SID table's code_ranges.

    Args:
      sid_ranges: ((start, end), ...) per position (ModelConfig.sid_ranges).
      code_ranges: [C] local code bounds (SIDTable.code_ranges).
    """
    if len(sid_ranges) != len(code_ranges):
      raise ValueError(
        f"SidCodec: {len(sid_ranges)} sid_ranges vs {len(code_ranges)} code positions"
      )
    starts = []
    for k, ((start, end), size) in enumerate(zip(sid_ranges, code_ranges, strict=True)):
      j = 0
      while k - j - 1 >= 0 and tuple(sid_ranges[k - j - 1]) == (start, end):
        j += 1
      s = start + j * size
      if s + size > end:
        raise ValueError(
          f"SidCodec: position {k} needs [{s}, {s + size}) inside range {(start, end)}"
        )
      starts.append(s)
    return cls(tuple(starts), tuple(int(c) for c in code_ranges))

  def tokens(self, codes: np.ndarray) -> np.ndarray:
    """[..., C] local codes -> [..., C] int32 token ids."""
    codes = np.asarray(codes)
    return (codes + np.asarray(self.starts)).astype(np.int32)

  def codes(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., C] token ids -> (codes [..., C] int32, valid [...] bool: every
    position inside its range)."""
    tokens = np.asarray(tokens)
    codes = tokens - np.asarray(self.starts)
    ok = ((codes >= 0) & (codes < np.asarray(self.sizes))).all(-1)
    return np.where(ok[..., None], codes, 0).astype(np.int32), ok


@dataclasses.dataclass(frozen=True, eq=False)
class ItemLookup:
  """Sorted mixed-radix SID keys -> item row."""

  keys: np.ndarray  # [U] int64 sorted unique SID keys
  items: np.ndarray  # [U] int32 item row chosen for each key
  radix: tuple[int, ...]

  @classmethod
  def build(
    cls, item_codes: np.ndarray, has_sid: np.ndarray, popularity: np.ndarray, radix
  ) -> ItemLookup:
    """Args: item_codes [N, C], has_sid [N], popularity [N] (ties: higher
    first, then lower row), radix [C] code bounds."""
    rows = np.flatnonzero(has_sid)
    keys = _keys(item_codes[rows], radix)
    order = np.lexsort((rows, -np.asarray(popularity)[rows], keys))
    keys, rows = keys[order], rows[order]
    first = np.ones(keys.size, bool)
    first[1:] = keys[1:] != keys[:-1]
    return cls(keys[first], rows[first].astype(np.int32), tuple(int(r) for r in radix))

  def lookup(self, codes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """[..., C] codes -> [...] item rows, -1 where no item has the SID."""
    codes = np.asarray(codes)
    keys = _keys(codes.reshape(-1, codes.shape[-1]), self.radix).reshape(
      codes.shape[:-1]
    )
    if self.keys.size == 0:
      return np.full(keys.shape, -1, np.int32)
    pos = np.clip(np.searchsorted(self.keys, keys), 0, self.keys.size - 1)
    hit = self.keys[pos] == keys
    if valid is not None:
      hit &= np.asarray(valid)
    return np.where(hit, self.items[pos], -1).astype(np.int32)


def _keys(codes: np.ndarray, radix) -> np.ndarray:
  codes = np.asarray(codes, np.int64)
  key = np.zeros(codes.shape[:-1], np.int64)
  for k, r in enumerate(radix):
    key = key * int(r) + codes[..., k]
  return key
