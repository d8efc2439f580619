"""The SID table: the one adapter between ``data/`` and the KHQE artefact.

Everything in ``data/`` sees the semantic IDs only through ``SIDTable``: item
and query codes, the level sizes and the per-level RQ centroid vectors that
Mu-Seq sums into the long-sequence feature. ``SIDTable.from_artefact`` is the
only place that imports ``onesearch_jax.khqe``; ``SIDTable.synthetic`` builds a
random table for tests and benchmarks.

Codes are LOCAL codes ``[a, b, c, d_1, ..., d_s]``: a in [0, k1), b in [0, k2),
c in [0, k3) (parent-conditional in "parent" mode: the level-3 centroid is
indexed by the pair (b, c)), d_j in [0, opq_codes). The SID token string
offsets the j-th OPQ code by ``j * opq_codes`` so all ``d_`` tokens share one
range of ``s * opq_codes`` (SPEC §2.3).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

# The only import of khqe in data/: everything else goes through SIDTable.
from onesearch_jax.khqe import artefact as artefact_lib


def sid_string(codes, opq_codes: int) -> str:
  """``<a_i><b_j><c_k><d_m><d_{n+opq}>`` of one code row.

  Args:
    codes: [3 + s] int local codes.
    opq_codes: codes per OPQ sub-quantiser.

  Returns:
    The SID token string.
  """
  codes = [int(v) for v in codes]
  parts = [f"<a_{codes[0]}>", f"<b_{codes[1]}>", f"<c_{codes[2]}>"]
  parts += [f"<d_{v + j * opq_codes}>" for j, v in enumerate(codes[3:])]
  return "".join(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class SIDTable:
  """Item and query semantic IDs plus the RQ centroids.

  Attributes:
    item_ids: N item ids.
    item_codes: [N, 3 + s] int32 local codes.
    query_texts: Q query strings.
    query_codes: [Q, 3 + s] int32 local codes.
    levels: RQ sizes (k1, k2, k3).
    opq_codes: codes per OPQ sub-quantiser (256 in the paper).
    rq_centroids: (l1 [k1, D], l2 [k2, D], l3) with l3 [k2, k3, D] in the
      parent-conditional mode or [k3, D] in the global mode. Use
      ``centroid_embeddings`` rather than indexing these directly.
    content_hash: the artefact's content hash ("" for synthetic tables).
  """

  item_ids: tuple[str, ...]
  item_codes: np.ndarray
  query_texts: tuple[str, ...]
  query_codes: np.ndarray
  levels: tuple[int, int, int]
  opq_codes: int
  rq_centroids: tuple[np.ndarray, np.ndarray, np.ndarray]
  content_hash: str = ""

  def __post_init__(self):
    item_codes = np.asarray(self.item_codes, np.int32)
    query_codes = np.asarray(self.query_codes, np.int32).reshape(
      -1, item_codes.shape[1] if item_codes.ndim == 2 else 5
    )
    object.__setattr__(self, "item_codes", item_codes)
    object.__setattr__(self, "query_codes", query_codes)
    object.__setattr__(self, "item_ids", tuple(str(i) for i in self.item_ids))
    object.__setattr__(self, "query_texts", tuple(str(q) for q in self.query_texts))
    object.__setattr__(self, "levels", tuple(int(k) for k in self.levels))
    if item_codes.ndim != 2 or item_codes.shape[1] < 3:
      raise ValueError(f"SIDTable: item_codes must be [N, >=3], got {item_codes.shape}")
    if item_codes.shape[0] != len(self.item_ids):
      raise ValueError(
        f"SIDTable: {len(self.item_ids)} item ids but {item_codes.shape[0]} code rows"
      )
    if query_codes.shape[0] != len(self.query_texts):
      raise ValueError(
        f"SIDTable: {len(self.query_texts)} queries but {query_codes.shape[0]} code rows"
      )
    if len(set(self.item_ids)) != len(self.item_ids):
      raise ValueError("SIDTable: duplicate item ids")
    if len(set(self.query_texts)) != len(self.query_texts):
      raise ValueError("SIDTable: duplicate query strings")
    for name, codes in (("item_codes", item_codes), ("query_codes", query_codes)):
      if codes.size == 0:
        continue
      hi = np.asarray(self.code_ranges)
      bad = np.argwhere((codes < 0) | (codes >= hi[None, :]))
      if bad.size:
        r, c = bad[0]
        raise ValueError(
          f"SIDTable: {name}[{r}, {c}] = {codes[r, c]} outside [0, {hi[c]})"
        )
    l1, l2, l3 = (np.asarray(c, np.float32) for c in self.rq_centroids)
    if l1.shape[0] != self.levels[0] or l2.shape[0] != self.levels[1]:
      raise ValueError("SIDTable: rq_centroids do not match levels")
    k1, k2, k3 = self.levels
    if l3.ndim == 3 and l3.shape[:2] not in ((k2, k3), (k1 * k2, k3)):
      raise ValueError(f"SIDTable: parent l3 centroids shape {l3.shape}")
    if l3.ndim == 2 and l3.shape[0] != self.levels[2]:
      raise ValueError(f"SIDTable: global l3 centroids shape {l3.shape}")
    object.__setattr__(self, "rq_centroids", (l1, l2, l3))

  # ------------------------------------------------------------ shape facts

  @property
  def n_opq(self) -> int:
    """Number of OPQ sub-quantiser codes per SID (s)."""
    return self.item_codes.shape[1] - 3

  @property
  def code_width(self) -> int:
    return self.item_codes.shape[1]

  @property
  def d_range(self) -> int:
    """Size of the shared ``d_`` token range (s * opq_codes)."""
    return self.n_opq * self.opq_codes

  @property
  def code_ranges(self) -> tuple[int, ...]:
    """Exclusive upper bound of each local code position."""
    return tuple(self.levels) + (self.opq_codes,) * self.n_opq

  @property
  def dim(self) -> int:
    """Centroid dimension D."""
    return int(self.rq_centroids[0].shape[1])

  # ------------------------------------------------------------ lookups

  @functools.cached_property
  def item_row(self) -> dict[str, int]:
    """item id -> row of item_codes."""
    return {item: i for i, item in enumerate(self.item_ids)}

  @functools.cached_property
  def query_row(self) -> dict[str, int]:
    """query string -> row of query_codes."""
    return {q: i for i, q in enumerate(self.query_texts)}

  @functools.cached_property
  def _sid_strings(self) -> dict[tuple[str, str], str]:
    # ("item" | "query", id) -> SID string, filled on first use: building
    # every task renders the same SIDs hundreds of thousands of times.
    return {}

  def item_sid(self, item_id: str) -> str:
    """SID token string of an item (KeyError if unknown)."""
    return self._sid("item", item_id, self.item_codes, self.item_row)

  def query_sid(self, query: str) -> str:
    """SID token string of a query (KeyError if unknown)."""
    return self._sid("query", query, self.query_codes, self.query_row)

  def _sid(self, kind: str, key: str, codes: np.ndarray, rows: dict) -> str:
    out = self._sid_strings.get((kind, key))
    if out is None:
      out = sid_string(codes[rows[key]], self.opq_codes)
      self._sid_strings[(kind, key)] = out
    return out

  def centroid_embeddings(self, codes: np.ndarray) -> np.ndarray:
    """Per-level RQ centroid vectors of codes.

    Args:
      codes: [N, >=3] int local codes (only a, b, c are used).

    Returns:
      [N, 3, D] float32: level-1, level-2 and level-3 centroid vectors (the
      level-3 one indexed by (b, c) in parent mode).
    """
    codes = np.asarray(codes).reshape(-1, self.code_width)
    l1, l2, l3 = self.rq_centroids
    a, b, c = codes[:, 0], codes[:, 1], codes[:, 2]
    if l3.ndim == 2:
      v3 = l3[c]
    elif l3.shape[0] == self.levels[1]:  # per-b parents (--balanced 2)
      v3 = l3[b, c]
    else:  # per-(a, b) parents (--balanced 1)
      v3 = l3[a.astype(np.int64) * self.levels[1] + b, c]
    return np.stack([l1[a], l2[b], v3], axis=1).astype(np.float32)

  @functools.cached_property
  def item_centroids(self) -> np.ndarray:
    """[N, 3, D] centroid vectors of every item (row order of item_ids)."""
    return self.centroid_embeddings(self.item_codes)

  # ------------------------------------------------------------ builders

  @classmethod
  def synthetic(
    cls,
    item_ids,
    query_texts=(),
    *,
    levels: tuple[int, int, int] = (8, 4, 4),
    opq_codes: int = 16,
    n_opq: int = 2,
    dim: int = 8,
    parent_l3: bool = True,
    seed: int = 0,
  ) -> SIDTable:
    """A random table (tests, benchmarks): uniform codes, Gaussian centroids.

    Args:
      item_ids: item ids.
      query_texts: query strings.
      levels: (k1, k2, k3).
      opq_codes: codes per OPQ sub-quantiser.
      n_opq: OPQ sub-quantisers s.
      dim: centroid dimension D.
      parent_l3: level-3 centroids per (b, c) ([k2, k3, D]) or global.
      seed: random seed.
    """
    rng = np.random.default_rng(seed)
    ranges = np.asarray(tuple(levels) + (opq_codes,) * n_opq)

    def codes(n):
      return (rng.random((n, len(ranges))) * ranges[None, :]).astype(np.int32)

    item_ids = tuple(item_ids)
    query_texts = tuple(query_texts)
    k1, k2, k3 = levels
    l3_shape = (k2, k3, dim) if parent_l3 else (k3, dim)
    return cls(
      item_ids=item_ids,
      item_codes=codes(len(item_ids)),
      query_texts=query_texts,
      query_codes=codes(len(query_texts)),
      levels=tuple(levels),
      opq_codes=opq_codes,
      rq_centroids=(
        rng.normal(size=(k1, dim)).astype(np.float32),
        rng.normal(size=(k2, dim)).astype(np.float32),
        rng.normal(size=l3_shape).astype(np.float32),
      ),
    )

  @classmethod
  def from_artefact(
    cls, directory: str | os.PathLike, expected_hash: str | None = None
  ) -> SIDTable:
    """Reads the KHQE SID artefact (``onesearch_jax.khqe.artefact``).

    Args:
      directory: the artefact directory (``workdir/sids``).
      expected_hash: refuse an artefact whose content hash differs.

    Returns:
      The table (content_hash set from the artefact's manifest).
    """
    art = artefact_lib.load(directory, expected_hash)
    content_hash = artefact_lib.check_hash(directory)
    quantizer = art.quantizer
    codebooks = quantizer.rq
    return cls(
      item_ids=art.item_ids,
      item_codes=art.item_codes,
      query_texts=art.query_texts,
      query_codes=art.query_codes,
      levels=tuple(quantizer.config.levels),
      opq_codes=int(quantizer.config.opq_codes),
      rq_centroids=(codebooks.l1, codebooks.l2, codebooks.l3),
      content_hash=content_hash,
    )
