"""SID -> item rows (CSR) and the generative ranking at the item level.

A beam search returns, per query, ``sid_index [B, W]``: the row of each beam's
SID in ``unique_codes = np.unique(item_codes, axis=0)`` (lexicographic order of
the local codes), -1 for an invalid or empty beam, beams sorted by score. The
item-level ranking walks the beams in order and, inside one SID, its items in
the artefact's tie policy order (descending popularity, then ascending
item_id; ``SIDArtefact.sid_to_items``). A SID emitted twice contributes its
items once (the repeat is a duplicate beam, counted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SidItemIndex:
  """CSR of unique SID -> item rows.

  Attributes:
    item_ids: N item ids; an "item row" is an index into this tuple.
    unique_codes: [U, L] int32 distinct SIDs, lexicographic order.
    offsets: [U + 1] int64 CSR offsets into ``items``.
    items: [N] int32 item rows grouped by SID, tie-policy order inside a SID.
    sid_of_item: [N] int32 row in ``unique_codes`` of each item.
  """

  item_ids: tuple[str, ...]
  unique_codes: np.ndarray
  offsets: np.ndarray
  items: np.ndarray
  sid_of_item: np.ndarray

  @classmethod
  def from_arrays(
    cls,
    item_ids: Sequence[str],
    item_codes: np.ndarray,
    popularity: np.ndarray,
  ) -> SidItemIndex:
    """Builds the index (vectorised).

    Args:
      item_ids: N unique item ids.
      item_codes: [N, L] integer local codes.
      popularity: [N] popularity (higher first inside a SID).
    """
    item_ids = tuple(str(i) for i in item_ids)
    codes = np.asarray(item_codes)
    pop = np.asarray(popularity, np.float64)
    n = len(item_ids)
    if codes.ndim != 2 or codes.shape[0] != n or pop.shape != (n,):
      raise ValueError(
        f"SidItemIndex: {n} item ids, item_codes {codes.shape}, popularity "
        f"{pop.shape} (want [N, L] and [N])"
      )
    if len(set(item_ids)) != n:
      raise ValueError("SidItemIndex: item ids are not unique")
    if n == 0:
      raise ValueError("SidItemIndex: empty catalogue")
    unique, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    id_rank = np.empty(n, np.int64)
    id_rank[np.argsort(np.asarray(item_ids), kind="stable")] = np.arange(n)
    order = np.lexsort((id_rank, -pop, inverse))
    counts = np.bincount(inverse, minlength=len(unique))
    offsets = np.zeros(len(unique) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return cls(
      item_ids=item_ids,
      unique_codes=unique.astype(np.int32),
      offsets=offsets,
      items=order.astype(np.int32),
      sid_of_item=inverse.astype(np.int32),
    )

  @classmethod
  def from_artefact(cls, artefact) -> SidItemIndex:
    """From a ``khqe.artefact.SIDArtefact``."""
    return cls.from_arrays(
      artefact.item_ids, artefact.item_codes, artefact.item_popularity
    )

  @property
  def n_sids(self) -> int:
    return int(self.unique_codes.shape[0])

  @property
  def n_items(self) -> int:
    return len(self.item_ids)

  def items_of(self, sid: int) -> np.ndarray:
    """Item rows of one SID row, tie-policy order."""
    return self.items[self.offsets[sid] : self.offsets[sid + 1]]

  def sid_index_of_codes(self, codes: np.ndarray) -> np.ndarray:
    """Maps SID codes [..., L] to rows of ``unique_codes`` (-1: not a SID)."""
    codes = np.asarray(codes, np.int64)
    width = self.unique_codes.shape[1]
    if codes.shape[-1] != width:
      raise ValueError(f"sid_index_of_codes: last axis {codes.shape[-1]} != {width}")
    flat = codes.reshape(-1, width)
    pos = np.zeros(len(flat), np.int64)
    lo = np.zeros(len(flat), np.int64)
    hi = np.full(len(flat), self.n_sids, np.int64)
    # Vectorised lexicographic binary search over the sorted unique codes.
    uc = self.unique_codes.astype(np.int64)
    while np.any(lo < hi):
      mid = (lo + hi) // 2
      row = uc[np.minimum(mid, self.n_sids - 1)]
      diff = row - flat
      first = np.argmax(diff != 0, axis=1)
      d = diff[np.arange(len(flat)), first]
      less = (d < 0) & (lo < hi)
      lo = np.where(less, mid + 1, lo)
      hi = np.where(~less & (lo < hi), mid, hi)
    pos = lo
    found = pos < self.n_sids
    safe = np.minimum(pos, self.n_sids - 1)
    found &= np.all(uc[safe] == flat, axis=1)
    return np.where(found, pos, -1).astype(np.int32).reshape(codes.shape[:-1])

  def expand(
    self, sid_index: np.ndarray, k_max: int, *, return_duplicates: bool = False
  ):
    """The item-level ranking of beam outputs.

    Args:
      sid_index: [B, W] int rows of ``unique_codes`` (-1: invalid/empty beam),
        best beam first.
      k_max: length of the item ranking.
      return_duplicates: also return the per-query count of duplicate beams
        (a valid SID already emitted by an earlier beam of the same query);
        their items are not repeated.

    Returns:
      rows [B, k_max] int32 item rows (-1 pad); with ``return_duplicates``,
      (rows, duplicates [B] int32).
    """
    sid = np.asarray(sid_index)
    if sid.ndim != 2:
      raise ValueError(f"expand: sid_index must be [B, W], got shape {sid.shape}")
    if sid.size and (sid.max() >= self.n_sids or sid.min() < -1):
      raise ValueError(
        f"expand: sid_index values must be in [-1, {self.n_sids}), got "
        f"[{sid.min()}, {sid.max()}]"
      )
    b, w = sid.shape
    if w == 0:
      rows = np.full((b, k_max), -1, np.int32)
      return (rows, np.zeros(b, np.int32)) if return_duplicates else rows
    sid = sid.astype(np.int64)
    valid = sid >= 0
    # First occurrence of each valid SID inside its row.
    order = np.argsort(np.where(valid, sid, -1 - np.arange(w)), axis=1, kind="stable")
    sorted_sid = np.take_along_axis(sid, order, axis=1)
    repeat_sorted = np.zeros_like(valid)
    repeat_sorted[:, 1:] = (sorted_sid[:, 1:] == sorted_sid[:, :-1]) & (
      sorted_sid[:, 1:] >= 0
    )
    repeat = np.zeros_like(valid)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    keep = valid & ~repeat
    safe = np.where(keep, sid, 0)
    lengths = np.where(keep, self.offsets[safe + 1] - self.offsets[safe], 0)
    cum = np.cumsum(lengths, axis=1)  # [B, W]
    total = cum[:, -1]
    big = int(max(int(total.max()) if b else 0, k_max)) + 1
    flat_cum = (cum + big * np.arange(b)[:, None]).reshape(-1)
    pos = np.arange(k_max)[None, :] + big * np.arange(b)[:, None]  # [B, K]
    beam = np.searchsorted(flat_cum, pos, side="right")  # flat beam index
    beam_in_row = beam - w * np.arange(b)[:, None]
    ok = np.arange(k_max)[None, :] < total[:, None]
    beam_in_row = np.clip(beam_in_row, 0, max(w - 1, 0))
    row_idx = np.arange(b)[:, None]
    start = cum[row_idx, beam_in_row] - lengths[row_idx, beam_in_row]
    within = np.arange(k_max)[None, :] - start
    s = safe[row_idx, beam_in_row]
    item_pos = np.where(ok, self.offsets[s] + within, 0)
    rows = np.where(ok, self.items[item_pos], -1).astype(np.int32)
    if return_duplicates:
      return rows, repeat.sum(axis=1).astype(np.int32)
    return rows
