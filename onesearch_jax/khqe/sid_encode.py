"""Fused, bucketed encoding of embeddings into RQ-OPQ codes (on device).

``Quantizer.encode`` (and ``fit_encode`` for the OPQ columns) call
``encode_blocks``: one jitted function runs every level of one block of
points on device (level 1 and 2 nearest centroid, level 3 global or inside
the point's parent group, OPQ rotation and the per-subspace nearest
codeword) and returns the codes and the squared residual norm after each
level. Nothing is re-tiled on the host and no N x D temporary is made there.
Every level works on row tiles that stay in cache: levels 1 and 2 on tiles
of 64 points with the distances laid out [K, 64] and reduced over K (a
vector min per centroid row), the OPQ rotation and sub-codebook search on
tiles of the level-3 residual (the rotated block is never materialised).

A parent level 3 ("parent": one codebook per level-2 code) is encoded in the
same call by single-group tiles built on device
(``_nearest_in_group_tiles``): the block's points are sorted by parent (one
int32 key ``parent * B + index``, a stable order), dealt into tiles of T
rows (``group_tile``: B / G as a power of two in [8, 32]), and each tile is
one ``[T, D] x [k3, D]`` matmul against its group's codebook, the grouped
k-means' own sweep; tiles gather their points, the sorted slots are
scattered back to the points' order (one scatter of a permutation) and
points gather their codes, with no host round trip. "parent_ab" (one codebook per (level-1, level-2) pair, up
to k1 x k2 groups, more than a block's tiles could hold) keeps the host
path (``_encode_parent_ab``): levels 1 and 2 in blocks, the level-2
residuals sorted into single-parent tiles on the host (an N x D copy) and
searched with ``kmeans.assign_grouped``, then OPQ on the level-3 residual.
The per-point path (``_block`` with mode "parent" / "parent_ab", which
gathers every point's ``k3 x D`` group codebook) gives the same codes and is
what the tests compare with.

Compile reuse: the block size B is a fixed bucket (the next power of two of N,
capped at ``_MAX_BLOCK`` and so one block's largest temporary stays below
``_BLOCK_FLOATS``), the last block is zero padded, and the block program is
compiled ahead of time (``jax.jit(...).lower(shapes).compile()``) once per
(mode, B, codebook shapes, tile sizes, mesh) and kept in ``_EXECUTABLES``.
Encoding any number of new items therefore reuses at most a handful of
executables instead of compiling per N. ``warm_up`` compiles the programs an
encode of N points will call before it runs (``quantizer.fit_encode(...,
warm_encode=True)`` does so in a background thread while the fit runs), so
the first encode compiles nothing.

Dispatch: without a mesh the blocks are dispatched from ``dispatch_threads``
Python threads (default ``os.cpu_count()``), each running one block at a
time and copying its codes into the output, so one block's host work (the
slice, the padding, the copy back) overlaps the others' device work and the
blocks run side by side on the cores. Codes do not depend on the thread
count or the block size (every code is a per-point nearest-centroid search).

Distances follow ``lloyd.sweep`` exactly (``||c||^2 - 2 x.c`` at HIGHEST
precision, first minimum on ties), so encoding the training points gives the
fitted assignment.

Sharding: with a mesh, each block (a multiple of the mesh size) is sharded
over all mesh axes along the points; codebooks are replicated.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from onesearch_jax.khqe import kmeans
from onesearch_jax.khqe.lloyd import argmin_first

# Largest temporary of one tile (floats): t*k distances or, for a parent
# level 3, the t*k3*D gathered centroids. 2^19 floats (2 MiB) keeps a tile's
# distances in cache between the matmul and the argmin (see kmeans.py).
_TILE_FLOATS = 1 << 19
# Host blocks: one jitted call encodes B points, tile by tile; B * (widest
# per-point temporary) stays below _BLOCK_FLOATS.
_BLOCK_FLOATS = 1 << 23
_MIN_BLOCK = 64
_MAX_BLOCK = 8192
# Points per tile of the level-1 and level-2 search (``_nearest``): a
# [K, 64] distance tile (128 KiB at K = 512) stays in the core's nearest
# caches between the matmul and the argmin (docs/BENCHMARKS.md).
_NEAREST_TILE_ROWS = 64
# Rows of a single-group tile of the parent level 3 (``group_tile``).
_MAX_GROUP_TILE = 32
_HIGHEST = jax.lax.Precision.HIGHEST


def _tile_rows(width: int, rows: int, max_rows: int | None = None) -> int:
  """Rows per tile: rows itself, or a power of two dividing rows, with
  tile * width <= 2^19 and tile <= max_rows (a mesh of n devices makes rows
  = n * 2^j, which a power of two need not divide when n is not one)."""
  t = max(1, _TILE_FLOATS // max(width, 1))
  if max_rows:
    t = min(t, max_rows)
  t = min(rows, 1 << (t.bit_length() - 1))
  return t if rows % t == 0 else math.gcd(rows, t)


def _tiled(fn, width, *arrays, max_rows=None):
  """Applies ``fn`` to row tiles of ``arrays`` ([B, ...] each) in sequence,
  so one tile's [t, width] temporaries stay in cache; outputs [B, ...]."""
  b = arrays[0].shape[0]
  t = _tile_rows(width, b, max_rows)
  split = [a.reshape((b // t, t) + a.shape[1:]) for a in arrays]
  outs = jax.lax.map(lambda args: fn(*args), split)
  return jax.tree.map(lambda o: o.reshape((b,) + o.shape[2:]), outs)


def _argmin_first_major(dist):
  """``argmin_first`` along the first axis of dist [K, t]: the index [t] of
  the first minimum of every column. The reductions run across rows, one
  vector min per row over t points at a time (a reduction along the last
  axis does not vectorise as well on XLA:CPU: measured ~1.5x slower for the
  whole level-1 search)."""
  best = jnp.min(dist, axis=0)
  iota = jax.lax.broadcasted_iota(jnp.int32, dist.shape, 0)
  return jnp.min(jnp.where(dist == best[None, :], iota, dist.shape[0]), axis=0)


def _nearest(x, centroids):
  """(index [B], nearest centroid [B, D]) of x [B, D] among centroids [K, D].

  Each tile's distances are laid out [K, t] (``||c||^2 - 2 c.x`` with the
  same products and sums as ``lloyd.sweep``'s [t, K], so the same floats)
  and reduced over K (``_argmin_first_major``)."""
  cnorm = jnp.sum(centroids * centroids, -1)

  def tile(xt):
    dots = jnp.einsum("kd,bd->kb", centroids, xt, precision=_HIGHEST)
    a = _argmin_first_major(cnorm[:, None] - 2.0 * dots)
    return a, centroids[a]

  return _tiled(tile, centroids.shape[0], x, max_rows=_NEAREST_TILE_ROWS)


def _nearest_in_group(r, g, l3):
  """(index [B], centroid [B, D]) of r [B, D] among l3[g] ([G, k3, D])."""

  def tile(rt, gt):
    cg = l3[gt]  # [t, k3, D]
    dots = jnp.einsum("bd,bkd->bk", rt, cg, precision=_HIGHEST)
    c, _ = argmin_first(jnp.sum(cg * cg, -1) - 2.0 * dots)
    return c, jnp.take_along_axis(cg, c[:, None, None], axis=1)[:, 0]

  return _tiled(tile, l3.shape[1] * l3.shape[2], r, g)


def group_tile(bsz: int, n_groups: int) -> int:
  """Rows T of one single-group tile inside a block of ``bsz`` points over
  ``n_groups`` parent groups: B / G rounded down to a power of two, in
  [8, _MAX_GROUP_TILE], so the padding (below one tile per group) stays
  near B / 2 or less."""
  t = max(1, bsz // max(n_groups, 1))
  return max(8, min(_MAX_GROUP_TILE, 1 << (t.bit_length() - 1)))


def _group_order(g, n_groups):
  """(order [B]: sorted position -> point, the points sorted by group and
  then by index (a stable sort), g_sorted [B]: their groups). One int32
  key ``g * B + i`` sorted alone when it fits in int32 (a single-operand
  sort), else the stable argsort of g."""
  bsz = g.shape[0]
  iota = jnp.arange(bsz, dtype=jnp.int32)
  if n_groups * bsz < 2**31:
    key = jnp.sort(g.astype(jnp.int32) * bsz + iota)
    g_sorted = key // bsz
    return key - g_sorted * bsz, g_sorted
  order = jnp.argsort(g, stable=True)
  return order.astype(jnp.int32), g[order]


def _nearest_in_group_tiles(r, g, l3, tile):
  """(index [B], centroid [B, D]) of r [B, D] among l3[g] ([G, k3, D]), by
  single-group tiles built on device: the block's points are sorted by group
  (stable, ``_group_order``) and dealt into tiles of ``tile`` rows, each
  tile one ``[tile, D] x [k3, D]`` matmul against its group's codebook (the
  grouped k-means' own sweep, ``lloyd.sweep``: the same distances, first
  minimum on ties). At most B / tile + G tiles are needed (each group leaves
  less than one tile unfilled); padding rows are copies of a real point and
  discarded. Every slot gathers its point (no scatter into the tiles); the
  codes go back to the points' order by one scatter of the sorted
  positions."""
  bsz, d = r.shape
  n_groups, k, _ = l3.shape
  width = k * d  # floats of one tile's gathered codebook
  chunk = max(1, _TILE_FLOATS // width)
  chunk = 1 << (chunk.bit_length() - 1)
  n_tiles = -(-(bsz // tile + n_groups) // chunk) * chunk
  order, g_sorted = _group_order(g, n_groups)
  counts = jnp.zeros((n_groups,), jnp.int32).at[g].add(1)
  tiles_per = (counts + tile - 1) // tile
  tile_end = jnp.cumsum(tiles_per)
  tile_begin = tile_end - tiles_per  # each group's first tile
  point_begin = jnp.cumsum(counts) - counts  # each group's first sorted point
  tg = jnp.searchsorted(tile_end, jnp.arange(n_tiles, dtype=jnp.int32), side="right")
  tg = jnp.minimum(tg, n_groups - 1).astype(jnp.int32)  # each tile's group
  # Slot s of tile n holds the group's point number (n - first tile of the
  # group) * tile + s.
  rank = (jnp.arange(n_tiles, dtype=jnp.int32) - tile_begin[tg])[
    :, None
  ] * tile + jnp.arange(tile, dtype=jnp.int32)[None, :]  # [n_tiles, tile]
  valid = rank < counts[tg][:, None]
  # A padding slot holds a copy of the group's first point: its distances
  # are computed and never read.
  src = order[point_begin[tg][:, None] + jnp.where(valid, rank, 0)]
  xt = r[src]  # [n_tiles, tile, D]
  # The slot of every sorted point, scattered back to the points' order.
  slot_sorted = tile_begin[g_sorted] * tile + (
    jnp.arange(bsz, dtype=jnp.int32) - point_begin[g_sorted]
  )
  slot = (
    jnp.zeros((bsz,), jnp.int32)
    .at[order]
    .set(slot_sorted, unique_indices=True, mode="promise_in_bounds")
  )
  cnorm = jnp.sum(l3 * l3, axis=-1)  # [G, k3]

  def tiles(xc, gc):  # [chunk, tile, D], [chunk]
    cg = l3[gc]  # [chunk, k3, D]
    dots = jnp.einsum("ntd,nkd->ntk", xc, cg, precision=_HIGHEST)
    c, _ = argmin_first(cnorm[gc][:, None, :] - 2.0 * dots)
    return c

  ct = _tiled(tiles, width, xt, tg)  # chunks of `chunk` tiles: n_tiles is a multiple
  c = ct.reshape(-1)[slot]
  return c, l3[g, c]


def _pq_codes(r, books, mean, rot):
  """(codes [B, M], squared error [B]) of the level-3 residual r [B, D]:
  each row tile is rotated, y = (r - mean) @ rot, and searched per subspace
  while it is in cache; books [M, K, D / M]."""
  m, k, sub = books.shape
  bnorm = jnp.sum(books * books, -1)  # [M, K]

  def tile(rt):
    yt = jnp.matmul(rt - mean, rot, precision=_HIGHEST)
    codes, errs = [], []
    for j in range(m):  # one plain 2-D matmul per subspace
      part = yt[:, j * sub : (j + 1) * sub]
      dots = jnp.einsum("bd,kd->bk", part, books[j], precision=_HIGHEST)
      d, _ = argmin_first(bnorm[j][None, :] - 2.0 * dots)
      codes.append(d)
      errs.append(part - books[j][d])
    e = jnp.stack(errs, axis=1)  # [t, M, d]
    return jnp.stack(codes, axis=1), jnp.sum(e * e, axis=(1, 2))

  return _tiled(tile, k, r)


def _block(x, l1, l2, l3, opq_mean, opq_rot, opq_books, *, mode, group_k2, tile=0):
  """Codes and per-level squared errors of one block.

  Args:
    x: [B, D] points (padding rows are zero; their outputs are discarded).
    l1: [k1, D]; l2: [k2, D]; l3: [k3, D] (global) or [G, k3, D] (parent).
    group_k2: k2 for "parent_ab" groups (a * k2 + b), unused otherwise.
    opq_mean: [D] or None; opq_rot: [D, D]; opq_books: [M, K, D / M].
    mode: "global", "parent", "parent_ab" (level 3 per point, gathering
      each point's group codebook), "parent_tiles" (level 3 by single-group
      tiles of ``tile`` rows, ``_nearest_in_group_tiles``), "opq_only" (x is
      the level-3 residual; only the OPQ columns are computed) or "l1l2"
      (levels 1 and 2 only, also returning the level-2 residual).
    tile: rows of one single-group tile ("parent_tiles" only).

  Returns:
    (codes [B, L] int32, sq [B, E] float32 squared residual norm after every
    level), plus the residual [B, D] for "l1l2".
  """
  codes, sq = [], []
  r = x
  if mode != "opq_only":
    a, ca = _nearest(r, l1)
    r = r - ca
    sq.append(jnp.sum(r * r, -1))
    b, cb = _nearest(r, l2)
    r = r - cb
    sq.append(jnp.sum(r * r, -1))
    codes += [a, b]
    if mode == "l1l2":
      return jnp.stack(codes, axis=1), jnp.stack(sq, axis=1), r
    if mode == "global":
      c, cc = _nearest(r, l3)
    elif mode == "parent_tiles":
      c, cc = _nearest_in_group_tiles(r, b, l3, tile)
    else:
      g = b if mode == "parent" else a * group_k2 + b
      c, cc = _nearest_in_group(r, g, l3)
    r = r - cc
    sq.append(jnp.sum(r * r, -1))
    codes.append(c)
  if opq_books is not None:
    d, err = _pq_codes(r, opq_books, opq_mean, opq_rot)
    sq.append(err)
    codes += [d[:, j] for j in range(d.shape[1])]
  return jnp.stack(codes, axis=1), jnp.stack(sq, axis=1)


@functools.cache
def _compiled(mode: str, group_k2: int, mesh: jax.sharding.Mesh | None, tile: int = 0):
  fn = functools.partial(_block, mode=mode, group_k2=group_k2, tile=tile)
  if mesh is None:
    return jax.jit(fn)
  data = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  rep = NamedSharding(mesh, P())
  n_out = 3 if mode == "l1l2" else 2
  return jax.jit(fn, in_shardings=(data,) + (rep,) * 6, out_shardings=(data,) * n_out)


# Compiled block programs: key -> Future of a ``jax.stages.Compiled``. A
# Future, so that an encode that needs a program ``warm_up`` is compiling in
# another thread waits for it instead of compiling it again.
_EXECUTABLES: dict[tuple, concurrent.futures.Future] = {}
_EXECUTABLES_LOCK = threading.Lock()


def _executable(mode, group_k2, mesh, tile, bsz, d, shapes):
  """The compiled block program for blocks of ``bsz`` x ``d`` points and
  codebooks of ``shapes`` (l1, l2, l3, opq mean, rotation, codebooks; None
  where unused), compiled ahead of time on first use (or loaded from JAX's
  persistent compilation cache where one is set) and kept in
  ``_EXECUTABLES``. Thread-safe; compiles each key once."""
  # The tile budgets are read at trace time: a program traced under other
  # budgets (tests shrink them) is another program.
  key = (mode, group_k2, mesh, tile, bsz, d, shapes, _TILE_FLOATS, _NEAREST_TILE_ROWS)
  with _EXECUTABLES_LOCK:
    fut = _EXECUTABLES.get(key)
    owner = fut is None
    if owner:
      fut = _EXECUTABLES[key] = concurrent.futures.Future()
  if not owner:
    return fut.result()
  try:
    spec = lambda shape: (  # noqa: E731
      None if shape is None else jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    args = [spec((bsz, d))] + [spec(v) for v in shapes]
    exe = _compiled(mode, group_k2, mesh, tile).lower(*args).compile()
  except BaseException as err:
    with _EXECUTABLES_LOCK:
      del _EXECUTABLES[key]
    fut.set_exception(err)
    raise
  fut.set_result(exe)
  return exe


def block_size(n: int, width: int, n_shards: int = 1) -> int:
  """The bucketed block size B for n points whose widest per-point temporary
  holds ``width`` floats: a power of two in [64, _MAX_BLOCK] (per shard),
  times the number of shards."""
  cap = max(_MIN_BLOCK, min(_MAX_BLOCK, _BLOCK_FLOATS // max(width, 1)))
  cap = 1 << (cap.bit_length() - 1)  # a power of two
  per_shard = -(-n // n_shards)
  want = max(_MIN_BLOCK, 1 << max(per_shard - 1, 1).bit_length())
  return min(want, cap) * n_shards


def _shape(v):
  """The shape of an array, a ``jax.ShapeDtypeStruct`` or a shape tuple."""
  if v is None:
    return None
  return tuple(int(s) for s in (v.shape if hasattr(v, "shape") else v))


def _shapes(l1, l2, l3, opq):
  """(l1, l2, l3, opq mean, rotation, codebooks) shapes; None where unused.
  ``opq``: an ``opq.OPQ`` or its (mean, rotation, codebooks) shapes."""
  if opq is None:
    opq_shapes = (None, None, None)
  elif hasattr(opq, "codebooks"):
    opq_shapes = tuple(_shape(v) for v in (opq.mean, opq.rotation, opq.codebooks))
  else:
    opq_shapes = tuple(_shape(v) for v in opq)
  return (_shape(l1), _shape(l2), _shape(l3)) + opq_shapes


def _plan(n, d, mode, shapes, mesh):
  """(block size B, group tile rows or 0, group_k2) of ``_encode_fused``."""
  l1, l2, l3, _, _, books = shapes
  widths = [1]
  if mode != "opq_only":
    widths += [l1[0], l2[0]]
  if mode == "parent_tiles":
    widths += [l3[1], 2 * d]  # a slot's distances; the tiled copy
  elif l3 is not None:
    widths.append(l3[-2] * (d if len(l3) == 3 else 1))
  if books is not None:
    widths.append(books[0] * books[1])
  n_shards = 1 if mesh is None else mesh.size
  bsz = block_size(n, max(widths), n_shards)
  tile = group_tile(bsz, l3[0]) if mode == "parent_tiles" else 0
  group_k2 = l2[0] if mode == "parent_ab" else 0
  return bsz, tile, group_k2


def _fused_calls(n, d, mode, l1, l2, l3, opq):
  """The (fused mode, shapes) of every ``_encode_fused`` call that
  ``encode_blocks`` makes for n points in ``mode``."""
  if mode == "parent":
    return [("parent_tiles", _shapes(l1, l2, l3, opq))]
  if mode == "parent_ab" and n:
    calls = [("l1l2", _shapes(l1, l2, None, None))]
    if opq is not None:
      calls.append(("opq_only", _shapes(None, None, None, opq)))
    return calls
  if mode == "opq_only":
    return [("opq_only", _shapes(None, None, None, opq))]
  return [(mode, _shapes(l1, l2, l3, opq))]


def warm_up(
  n: int,
  d: int,
  *,
  mode: str,
  l1=None,
  l2=None,
  l3=None,
  opq=None,
  mesh: jax.sharding.Mesh | None = None,
) -> int:
  """Compiles the block programs that ``encode_blocks`` of n points of
  dimension d will call, ahead of the call (or loads them from JAX's
  persistent compilation cache where one is set); the encode then reuses the
  compiled executables. Safe to call from a background thread while other
  work (the fit) runs: an encode that needs a program still being compiled
  waits for it.

  Args:
    n: the number of points the encode will get (it fixes the block size;
      every N of the same bucket, e.g. any N >= 8,192 without a mesh, uses
      the same program).
    d: their dimension.
    mode, mesh: as for ``encode_blocks``.
    l1, l2, l3: the codebooks, or only their shapes (tuples or
      ``jax.ShapeDtypeStruct``); unused ones None.
    opq: an ``opq.OPQ``, or the shapes of its (mean, rotation, codebooks),
      or None.

  Returns:
    The number of programs compiled or found compiled.
  """
  calls = _fused_calls(n, d, mode, l1, l2, l3, opq)
  for fused_mode, shapes in calls:
    bsz, tile, group_k2 = _plan(max(n, 1), d, fused_mode, shapes, mesh)
    _executable(fused_mode, group_k2, mesh, tile, bsz, d, shapes)
  return len(calls)


def encode_blocks(
  x: np.ndarray,
  *,
  mode: str,
  l1: np.ndarray | None = None,
  l2: np.ndarray | None = None,
  l3: np.ndarray | None = None,
  opq=None,
  mesh: jax.sharding.Mesh | None = None,
  dispatch_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Encodes [N, D] points block by block with fixed codebooks.

  Args:
    x: [N, D] float32 points (the level-3 residual when mode="opq_only").
    mode: "global", "parent", "parent_ab" (level-3 mode) or "opq_only".
    l1, l2, l3: RQ codebooks (see ``rq.RQCodebooks``); unused for opq_only.
    opq: optional ``opq.OPQ``; its columns follow the RQ codes.
    mesh: optional mesh to shard each block over.
    dispatch_threads: Python threads that dispatch the blocks (default
      ``os.cpu_count()``; 1 = one thread, blocks dispatched ahead
      asynchronously); a mesh always dispatches from one. Same codes for
      any value.

  Returns:
    (codes [N, L] int32, sq [N, E] float32 squared residual norm after each
    level: l1, l2, l3 (not for opq_only) and opq if given).
  """
  x = np.asarray(x, np.float32)
  kw = dict(mesh=mesh, dispatch_threads=dispatch_threads)
  if mode == "parent":
    mode = "parent_tiles"  # every level on device, one call a block
  elif mode == "parent_ab" and x.shape[0]:
    return _encode_parent_ab(x, l1, l2, l3, opq, **kw)
  return _encode_fused(x, mode=mode, l1=l1, l2=l2, l3=l3, opq=opq, **kw)


def _encode_parent_ab(x, l1, l2, l3, opq, *, mesh, dispatch_threads):
  """Level 3 of "parent_ab" by parent tiles on the host: levels 1 and 2 block
  by block, then the points sorted by their (level-1, level-2) group and cut
  into single-group tiles, each searched against its group's [k3, D]
  codebook (one matmul a tile; the grouped k-means fit's own assignment
  sweep, ``kmeans.assign_grouped``), then OPQ on the level-3 residual as
  ``fit_encode`` does. Returns what ``_encode_fused`` does for the same
  mode, code for code."""
  kw = dict(mesh=mesh, dispatch_threads=dispatch_threads)
  ab, sq12, r = _encode_fused(x, mode="l1l2", l1=l1, l2=l2, **kw)
  a, b = ab[:, 0], ab[:, 1]
  g = a.astype(np.int64) * l2.shape[0] + b
  c, _ = kmeans.assign_grouped(r, g, l3, mesh=mesh)
  r -= l3[g, c]  # in place: the level-3 residual
  sq = [sq12, np.sum(r * r, axis=1)[:, None]]
  codes = [ab, c[:, None]]
  if opq is not None:
    d, sq_opq = _encode_fused(r, mode="opq_only", opq=opq, **kw)
    codes.append(d)
    sq.append(sq_opq)
  return np.concatenate(codes, axis=1), np.concatenate(sq, axis=1)


def _encode_fused(
  x, *, mode, l1=None, l2=None, l3=None, opq=None, mesh=None, dispatch_threads=None
):
  """Every level of a block in one compiled call (see ``encode_blocks``); for
  mode "l1l2" also returns the level-2 residual [N, D]."""
  n, d = x.shape
  if not n:
    n_codes = (0 if mode == "opq_only" else 3) + (
      0 if opq is None else opq.codebooks.shape[0]
    )
    n_sq = (0 if mode == "opq_only" else 3) + (0 if opq is None else 1)
    return np.zeros((0, n_codes), np.int32), np.zeros((0, n_sq), np.float32)
  shapes = _shapes(l1, l2, l3, opq)
  bsz, tile, group_k2 = _plan(n, d, mode, shapes, mesh)
  exe = _executable(mode, group_k2, mesh, tile, bsz, d, shapes)
  f32 = lambda v: None if v is None else jnp.asarray(v, jnp.float32)  # noqa: E731
  consts = (
    f32(l1),
    f32(l2),
    f32(l3),
    None if opq is None else f32(opq.mean),
    None if opq is None else f32(opq.rotation),
    None if opq is None else f32(opq.codebooks),
  )
  if mesh is not None:
    rep = NamedSharding(mesh, P())
    consts = tuple(None if c is None else jax.device_put(c, rep) for c in consts)
  outs = tuple(
    np.empty((n,) + o.shape[1:], o.dtype) for o in jax.tree.leaves(exe.out_info)
  )

  def dispatch(start):
    blk = x[start : start + bsz]
    if blk.shape[0] < bsz:
      blk = np.concatenate([blk, np.zeros((bsz - blk.shape[0], d), np.float32)])
    return start, exe(blk, *consts)

  def copy_back(pending):
    start, res = pending
    stop = min(n, start + bsz)
    for out, o in zip(outs, res, strict=True):
      out[start:stop] = np.asarray(o)[: stop - start]

  starts = range(0, n, bsz)
  threads = 1 if mesh is not None else dispatch_threads or os.cpu_count() or 1
  threads = max(1, min(int(threads), len(starts)))
  if threads == 1:
    # One thread: the next block is dispatched (asynchronously) before the
    # previous one is copied back.
    pending = None
    for start in starts:
      nxt = dispatch(start)
      if pending is not None:
        copy_back(pending)
      pending = nxt
    copy_back(pending)
  else:
    # Each thread runs one block at a time: dispatch, wait, copy back.
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      for _ in pool.map(lambda start: copy_back(dispatch(start)), starts):
        pass
  return outs
