"""The catalogue's SID trie as flat device arrays (STATIC-style hybrid index).

Built on the host with numpy (vectorised: sorts and diffs, no loop per item)
and frozen into a pytree of arrays that a jitted beam search takes as an
argument, so a rebuilt trie of the same capacity reuses the compiled program.

Layout. The catalogue's SIDs are `codes [N, S]` of level-LOCAL codes (code c
of level k is vocabulary id `token_offsets[k] + c`). `unique_codes` =
`np.unique(codes, axis=0)`: U rows in lexicographic order.

* A node at depth l (0 <= l <= S) is one distinct length-l prefix of
  `unique_codes`; node ids at depth l number those prefixes 0..n_l-1 in
  lexicographic order. Depth 0 is the root (n_0 = 1); depth S are the leaves,
  and **leaf id == sid_index == row of the SID in unique_codes**.
* Because the prefixes are sorted, the children of node n at depth l are the
  contiguous ids `indptr[l][n] : indptr[l][n + 1]` at depth l + 1 (a CSR with
  implicit column ids), and `child_code[l][j]` is the level-l code of child j
  (sorted within a node). `max_fanout[l]` = K_l, a static int.
* The first `dense_levels` depths also get `dense_child[l]` [n_l, V_l] int32:
  the child id for each level-local code, -1 where the prefix does not exist
  (O(1) lookup, no gather of K children).
* `item_sid [N]`: sid_index of every input row (item), and `parent[l]`
  [n_{l+1}]: the parent id of every depth-(l+1) node, for per-request item
  masks (bottom-up segment-max, no scan).

Beam state carries one node id per beam and advances it by these lookups; a
prefix is never re-walked.

Memory (int32 ids, int16 codes when V_l <= 32768): CSR part
sum_l 4 (n_l + 1) + 2 n_{l+1}; dense part 4 n_l V_l; at most ~18 B per item for
the 3 tail levels of a 5-level SID plus the dense tables (see DECODING.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class HostInfo:
  """Host-side facts of one build; compare equal so jit caches ignore them."""

  num_sids: int  # U, unique SIDs
  num_items: int  # N, catalogue rows
  build_seconds: float

  def __eq__(self, other) -> bool:
    return isinstance(other, HostInfo)

  def __hash__(self) -> int:
    return 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrieIndex:
  """Flat trie arrays (pytree leaves) plus static shape facts (metadata).

  Array fields (numpy on the host; a jitted search receives them as jax
  arrays): indptr[l] [n_l + 1] int32 for l < S; child_code[l] [n_{l+1}]
  int16/int32; dense_child[l] [n_l, V_l] int32 for l < dense_levels;
  item_sid [N] int32 (padding items, with `item_capacity`, hold the leaf
  capacity, i.e. no SID); parent[l] [n_{l+1}] int32 (padding: n_l, dropped). `info` holds host-only facts (U, N, build time).
  """

  indptr: tuple[jax.Array | np.ndarray, ...]
  child_code: tuple[jax.Array | np.ndarray, ...]
  dense_child: tuple[jax.Array | np.ndarray, ...]
  item_sid: jax.Array | np.ndarray
  parent: tuple[jax.Array | np.ndarray, ...]
  level_sizes: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
  token_offsets: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
  max_fanout: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
  num_nodes: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
  info: HostInfo = dataclasses.field(metadata=dict(static=True))

  @property
  def num_sids(self) -> int:
    """U, the number of unique SIDs (leaves)."""
    return self.info.num_sids

  @property
  def num_items(self) -> int:
    """N, the number of catalogue rows the trie was built from."""
    return self.info.num_items

  @property
  def build_seconds(self) -> float:
    return self.info.build_seconds

  @property
  def depth(self) -> int:
    """S, the SID length."""
    return len(self.level_sizes)

  @property
  def dense_levels(self) -> int:
    return len(self.dense_child)

  def index_bytes(self) -> int:
    """Bytes of the decoding index (indptr, child codes, dense tables)."""
    arrays = list(self.indptr) + list(self.child_code) + list(self.dense_child)
    return int(sum(np.asarray(a).nbytes for a in arrays))

  @property
  def bytes_per_item(self) -> float:
    """Decoding-index bytes per catalogue item (goal <= 32)."""
    return self.index_bytes() / self.num_items

  @property
  def item_map_bytes_per_item(self) -> float:
    """Extra bytes per item of item_sid + parent (only for item masks)."""
    arrays = [self.item_sid, *self.parent]
    return sum(np.asarray(a).nbytes for a in arrays) / self.num_items

  def device_put(self, sharding=None) -> TrieIndex:
    """The same trie with every array on device (replicated by default)."""
    return jax.tree.map(lambda a: jax.device_put(a, sharding), self)


def _capacity_nodes(level_sizes: Sequence[int], capacity: int) -> list[int]:
  """Upper bound on the nodes per depth for a catalogue of `capacity` SIDs."""
  out, full = [1], 1
  for v in level_sizes:
    full *= v
    out.append(min(full, capacity))
  return out


def _unique_rows(codes: np.ndarray, level_sizes: Sequence[int]):
  """np.unique(codes, axis=0, return_inverse=True), fast path for packable rows.

  When the levels' bit widths sum to <= 62, each row is packed into one int64
  key whose order is the rows' lexicographic order, so a 1-D unique (a plain
  sort) gives the same result ~10x faster than the row-wise unique.
  """
  bits = [max(int(v - 1).bit_length(), 1) for v in level_sizes]
  if sum(bits) > 62:
    unique, inverse = np.unique(codes.astype(np.int64), axis=0, return_inverse=True)
    return unique, inverse
  shifts = np.cumsum([0] + bits[::-1][:-1])[::-1]  # level 0 most significant
  key = np.zeros(codes.shape[0], np.int64)
  for lvl, sh_ in enumerate(shifts):
    key |= codes[:, lvl].astype(np.int64) << int(sh_)
  ukey, inverse = np.unique(key, return_inverse=True)
  unique = np.stack(
    [(ukey >> int(sh_)) & ((1 << b) - 1) for sh_, b in zip(shifts, bits, strict=True)],
    axis=1,
  )
  return unique, inverse


def build_trie(
  codes: np.ndarray,
  level_sizes: Sequence[int],
  token_offsets: Sequence[int],
  *,
  dense_levels: int = 2,
  capacity: int | None = None,
  max_fanout: Sequence[int] | None = None,
  item_capacity: int | None = None,
) -> TrieIndex:
  """Builds the trie of the catalogue's SIDs (vectorised numpy).

  Args:
    codes: [N, S] int level-local codes, one row per item (duplicates are
      items sharing a SID).
    level_sizes: (S,) V_l, the number of codes of level l.
    token_offsets: (S,) vocabulary id of code 0 of level l.
    dense_levels: how many of the first depths also get a dense
      [n_l, V_l] child table (0..S).
    capacity: optional fixed number of SIDs. Arrays are padded to sizes that
      depend only on (capacity, level_sizes), and K_l defaults to V_l, so a
      rebuilt trie with more items keeps every shape (no recompilation).
    max_fanout: optional static K_l per depth (>= the real fan-out); the
      default is the real max fan-out (V_l with `capacity`).
    item_capacity: optional fixed length of `item_sid` (the N of
      `allowed_items` masks); padding items belong to no SID.

  Returns:
    The TrieIndex (numpy arrays; `device_put()` moves them).

  Raises:
    ValueError: wrong shapes, codes out of [0, V_l), capacity too small.
  """
  t0 = time.perf_counter()
  codes = np.asarray(codes)
  level_sizes = tuple(int(v) for v in level_sizes)
  token_offsets = tuple(int(o) for o in token_offsets)
  s = len(level_sizes)
  if codes.ndim != 2 or codes.shape[1] != s:
    raise ValueError(f"build_trie: codes shape {codes.shape}, expected [N, {s}]")
  if len(token_offsets) != s:
    raise ValueError(f"build_trie: {len(token_offsets)} token_offsets for {s} levels")
  if codes.shape[0] == 0:
    raise ValueError("build_trie: empty catalogue (codes has 0 rows)")
  if not 0 <= dense_levels <= s:
    raise ValueError(f"build_trie: dense_levels {dense_levels} not in [0, {s}]")
  for lvl, v in enumerate(level_sizes):
    col = codes[:, lvl]
    bad = np.flatnonzero((col < 0) | (col >= v))
    if bad.size:
      raise ValueError(
        f"build_trie: codes[{bad[0]}, {lvl}] = {col[bad[0]]} outside level {lvl}'s "
        f"[0, {v}) ({bad.size} rows bad)"
      )
  unique, item_sid = _unique_rows(codes, level_sizes)
  item_sid = item_sid.reshape(-1).astype(np.int32)
  n_u = unique.shape[0]
  if capacity is not None and capacity < n_u:
    raise ValueError(f"build_trie: {n_u} unique SIDs exceed capacity {capacity}")
  if item_capacity is not None:
    if item_capacity < item_sid.shape[0]:
      raise ValueError(
        f"build_trie: {item_sid.shape[0]} items exceed item_capacity {item_capacity}"
      )
    # Padding items point one past the last leaf slot: dropped by the masks.
    pad = capacity if capacity else n_u
    item_sid = np.concatenate(
      [item_sid, np.full(item_capacity - item_sid.shape[0], pad, np.int32)]
    )

  # node[l][r]: id of row r's depth-l prefix; starts[l]: first row of each node.
  new = np.ones((n_u, s + 1), bool)  # new[r, l]: row r starts a depth-l node
  new[0] = True
  if n_u > 1:
    differs = unique[1:] != unique[:-1]  # [U-1, S]
    # a depth-l node starts where any of the first l codes changes
    new[1:, 1:] = np.cumsum(differs, axis=1) > 0
    new[1:, 0] = False
  node = np.cumsum(new, axis=0) - 1  # [U, S + 1]
  n_nodes = [int(node[-1, lvl]) + 1 for lvl in range(s + 1)]
  caps = _capacity_nodes(level_sizes, capacity) if capacity else n_nodes

  indptr, child_code, dense_child, fanouts, parent = [], [], [], [], []
  code_dtype = np.int16 if max(level_sizes) <= np.iinfo(np.int16).max else np.int32
  for lvl in range(s):
    parent_rows = np.flatnonzero(new[:, lvl])
    child_rows = np.flatnonzero(new[:, lvl + 1])
    first_child = node[parent_rows, lvl + 1]
    ptr = np.full(caps[lvl] + 1, n_nodes[lvl + 1], np.int32)
    ptr[: n_nodes[lvl]] = first_child
    fan = int(np.max(np.diff(ptr[: n_nodes[lvl] + 1])))
    cc = np.zeros(caps[lvl + 1], code_dtype)
    cc[: n_nodes[lvl + 1]] = unique[child_rows, lvl]
    indptr.append(ptr)
    child_code.append(cc)
    par = np.full(caps[lvl + 1], caps[lvl], np.int32)
    par[: n_nodes[lvl + 1]] = node[child_rows, lvl]
    parent.append(par)
    k = level_sizes[lvl] if capacity else fan
    if max_fanout is not None:
      k = int(max_fanout[lvl])
    if k < fan:
      raise ValueError(f"build_trie: max_fanout[{lvl}] = {k} < real fan-out {fan}")
    fanouts.append(min(k, level_sizes[lvl]))
    if lvl < dense_levels:
      table = np.full((caps[lvl], level_sizes[lvl]), -1, np.int32)
      table[node[child_rows, lvl], unique[child_rows, lvl]] = np.arange(
        n_nodes[lvl + 1], dtype=np.int32
      )
      dense_child.append(table)
  return TrieIndex(
    indptr=tuple(indptr),
    child_code=tuple(child_code),
    dense_child=tuple(dense_child),
    item_sid=item_sid,
    parent=tuple(parent),
    level_sizes=level_sizes,
    token_offsets=token_offsets,
    max_fanout=tuple(fanouts),
    num_nodes=tuple(caps),
    info=HostInfo(n_u, int(codes.shape[0]), time.perf_counter() - t0),
  )


def choose_dense_levels(
  level_sizes: Sequence[int],
  num_nodes_upper: Sequence[int] | None = None,
  *,
  num_items: int,
  max_bytes_per_item: float = 8.0,
) -> int:
  """Largest d whose dense tables cost <= max_bytes_per_item per item.

  Dense depth l costs 4 * n_l * V_l bytes with n_l <= min(prod V_<l, N)
  (or the given `num_nodes_upper`, e.g. a built trie's num_nodes).
  """
  n, d, total = 1, 0, 0.0
  for lvl, v in enumerate(level_sizes):
    if num_nodes_upper is not None:
      n = num_nodes_upper[lvl]
    total += 4.0 * n * v
    if total / num_items > max_bytes_per_item:
      break
    d += 1
    n = min(n * v, num_items)
  return d


def unique_sids(codes: np.ndarray) -> np.ndarray:
  """np.unique(codes, axis=0) as int32: the sid_index order ([U, S])."""
  return np.unique(np.asarray(codes), axis=0).astype(np.int32)


def trie_unique_codes(trie: TrieIndex) -> np.ndarray:
  """Recovers unique_codes [U, S] int32 (sid_index order) from the trie."""
  s = trie.depth
  leaves = np.arange(trie.num_sids)
  out = np.zeros((trie.num_sids, s), np.int32)
  ids = leaves
  for lvl in range(s - 1, -1, -1):
    out[:, lvl] = np.asarray(trie.child_code[lvl])[ids]
    ptr = np.asarray(trie.indptr[lvl])
    # parent of child j: the last node whose first child is <= j
    ids = np.searchsorted(ptr, ids, side="right") - 1
  return out


def _child_of(trie: TrieIndex, lvl: int, node: jax.Array, code: jax.Array):
  """Child id of `node` (depth lvl) with level code `code`, -1 if none.

  Dense table where present, else binary search in the sorted CSR row
  (ceil(log2 K_l) + 1 fixed iterations).
  """
  if lvl < trie.dense_levels:
    table = jnp.asarray(trie.dense_child[lvl])
    return table[node, jnp.clip(code, 0, trie.level_sizes[lvl] - 1)]
  ptr = jnp.asarray(trie.indptr[lvl])
  cc = jnp.asarray(trie.child_code[lvl]).astype(jnp.int32)
  lo, hi = ptr[node], ptr[node + 1]  # search [lo, hi)
  for _ in range(max(int(np.ceil(np.log2(max(trie.max_fanout[lvl], 1)))), 0) + 1):
    mid = (lo + hi) // 2
    go_right = (mid < hi) & (cc[jnp.clip(mid, 0, cc.shape[0] - 1)] < code)
    lo = jnp.where(go_right, mid + 1, lo)
    hi = jnp.where(go_right, hi, mid)
  found = (lo < ptr[node + 1]) & (cc[jnp.clip(lo, 0, cc.shape[0] - 1)] == code)
  return jnp.where(found, lo, -1)


def lookup_sid_index(trie_or_unique_codes, codes) -> jax.Array | np.ndarray:
  """sid_index of SIDs given as local codes; -1 where not in the catalogue.

  Args:
    trie_or_unique_codes: a TrieIndex (walks the trie with jnp ops: usable
      under jit, returns a jax array) or unique_codes [U, S] (numpy, sorted
      as np.unique; returns numpy).
    codes: [..., S] int local codes (negative codes never match).

  Returns:
    int32 [...] row in unique_codes, or -1.
  """
  if isinstance(trie_or_unique_codes, TrieIndex):
    trie = trie_or_unique_codes
    codes = jnp.asarray(codes).astype(jnp.int32)
    node = jnp.zeros(codes.shape[:-1], jnp.int32)
    ok = jnp.ones(codes.shape[:-1], bool)
    for lvl in range(trie.depth):
      c = codes[..., lvl]
      ok = ok & (c >= 0) & (c < trie.level_sizes[lvl])
      child = _child_of(trie, lvl, jnp.where(ok, node, 0), c)
      ok = ok & (child >= 0)
      node = jnp.where(ok, child, 0)
    return jnp.where(ok, node, -1).astype(jnp.int32)
  unique = np.ascontiguousarray(np.asarray(trie_or_unique_codes, np.int64))
  q = np.asarray(codes, np.int64)
  flat = np.ascontiguousarray(q.reshape(-1, unique.shape[1]))
  # Lexicographic search: sort key = the row as a tuple; np.searchsorted on
  # a structured view compares field by field (signed int64 fields).
  dt = np.dtype([(f"f{i}", np.int64) for i in range(unique.shape[1])])
  keys = unique.view(dt).reshape(-1)
  qk = flat.view(dt).reshape(-1)
  pos = np.searchsorted(keys, qk)
  pos_c = np.clip(pos, 0, max(len(keys) - 1, 0))
  hit = (pos < len(keys)) & np.all(unique[pos_c] == flat, axis=1)
  return np.where(hit, pos, -1).astype(np.int32).reshape(q.shape[:-1])


def catalogue_trie(
  item_codes: np.ndarray, sid_ranges: Sequence[tuple[int, int]]
) -> TrieIndex:
  """The decoding trie of a catalogue for a model's SID token layout.

  Args:
    item_codes: [N, S] level-local codes (the SID artefact's item codes).
    sid_ranges: (S,) [start, end) vocabulary range per SID position
      (``ModelConfig.sid_ranges``): start = the token offset of code 0,
      end - start = the level size.

  Returns:
    ``build_trie`` with dense levels chosen by ``choose_dense_levels``.
  """
  offsets = tuple(int(r[0]) for r in sid_ranges)
  sizes = tuple(int(r[1]) - int(r[0]) for r in sid_ranges)
  codes = np.asarray(item_codes)
  return build_trie(
    codes,
    sizes,
    offsets,
    dense_levels=choose_dense_levels(sizes, num_items=len(codes)),
  )
