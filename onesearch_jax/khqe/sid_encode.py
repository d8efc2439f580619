"""Fused, bucketed encoding of embeddings into RQ-OPQ codes (on device).

``Quantizer.encode`` (and ``fit_encode`` for the OPQ columns) call
``encode_blocks``: one jitted function runs every level of one block of
points on device (level 1 and 2 nearest centroid, level 3 global or inside
the point's parent group, OPQ rotation and the per-subspace nearest
codeword) and returns the codes and the squared residual norm after each
level. Nothing is re-tiled on the host and no N x D temporary is made there.

A parent level 3 ("parent": one codebook per level-2 code) is encoded in the
same call by single-group tiles built on device
(``_nearest_in_group_tiles``): the block's points are sorted by parent
(stable), dealt into tiles of T rows (``group_tile``: B / G as a power of
two in [8, 64]), and each tile is one ``[T, D] x [k3, D]`` matmul against
its group's codebook, the grouped k-means' own sweep; tiles gather their
points and points gather their codes back, so there is no scatter and no
host round trip. "parent_ab" (one codebook per (level-1, level-2) pair, up
to k1 x k2 groups, more than a block's tiles could hold) keeps the host
path (``_encode_parent_ab``): levels 1 and 2 in blocks, the level-2
residuals sorted into single-parent tiles on the host (an N x D copy) and
searched with ``kmeans.assign_grouped``, then OPQ on the level-3 residual.
The per-point path (``_block`` with mode "parent" / "parent_ab", which
gathers every point's ``k3 x D`` group codebook) gives the same codes and is
what the tests compare with.

Compile reuse: the block size B is a fixed bucket (the next power of two of N,
capped so one block's largest temporary stays below ``_BLOCK_FLOATS``), the
last block is zero padded, and the compiled function is cached per (B,
codebook shapes, mesh). Encoding any number of new items therefore reuses at
most a handful of executables instead of compiling per N.

Distances follow ``lloyd.sweep`` exactly (``||c||^2 - 2 x.c`` at HIGHEST
precision, first minimum on ties), so encoding the training points gives the
fitted assignment.

Sharding: with a mesh, each block (a multiple of the mesh size) is sharded
over all mesh axes along the points; codebooks are replicated.
"""

from __future__ import annotations

import functools
import math

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
_MAX_BLOCK = 16384
_HIGHEST = jax.lax.Precision.HIGHEST


def _tile_rows(width: int, rows: int) -> int:
  """Rows per tile: rows itself, or a power of two dividing rows, with
  tile * width <= 2^19 (a mesh of n devices makes rows = n * 2^j, which a
  power of two need not divide when n is not one)."""
  t = max(1, _TILE_FLOATS // max(width, 1))
  t = min(rows, 1 << (t.bit_length() - 1))
  return t if rows % t == 0 else math.gcd(rows, t)


def _tiled(fn, width, *arrays):
  """Applies ``fn`` to row tiles of ``arrays`` ([B, ...] each) in sequence,
  so one tile's [t, width] temporaries stay in cache; outputs [B, ...]."""
  b = arrays[0].shape[0]
  t = _tile_rows(width, b)
  split = [a.reshape((b // t, t) + a.shape[1:]) for a in arrays]
  outs = jax.lax.map(lambda args: fn(*args), split)
  return jax.tree.map(lambda o: o.reshape((b,) + o.shape[2:]), outs)


def _nearest(x, centroids):
  """(index [B], nearest centroid [B, D]) of x [B, D] among centroids [K, D]."""
  cnorm = jnp.sum(centroids * centroids, -1)

  def tile(xt):
    dots = jnp.einsum("bd,kd->bk", xt, centroids, precision=_HIGHEST)
    a, _ = argmin_first(cnorm[None, :] - 2.0 * dots)
    return a, centroids[a]

  return _tiled(tile, centroids.shape[0], x)


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
  [8, 64], so the padding (below one tile per group) stays near B / 2."""
  t = max(1, bsz // max(n_groups, 1))
  return max(8, min(64, 1 << (t.bit_length() - 1)))


def _nearest_in_group_tiles(r, g, l3, tile):
  """(index [B], centroid [B, D]) of r [B, D] among l3[g] ([G, k3, D]), by
  single-group tiles built on device: the block's points are sorted by group
  (stable) and dealt into tiles of ``tile`` rows, each tile one
  ``[tile, D] x [k3, D]`` matmul against its group's codebook (the grouped
  k-means' own sweep, ``lloyd.sweep``: the same distances, first minimum on
  ties). At most B / tile + G tiles are needed (each group leaves less than
  one tile unfilled); padding rows are zero and discarded."""
  bsz, d = r.shape
  n_groups, k, _ = l3.shape
  width = k * d  # floats of one tile's gathered codebook
  chunk = max(1, _TILE_FLOATS // width)
  chunk = 1 << (chunk.bit_length() - 1)
  n_tiles = -(-(bsz // tile + n_groups) // chunk) * chunk
  order = jnp.argsort(g, stable=True)  # sorted position -> point
  counts = jnp.zeros((n_groups,), jnp.int32).at[g].add(1)
  tiles_per = (counts + tile - 1) // tile
  tile_end = jnp.cumsum(tiles_per)
  tile_begin = tile_end - tiles_per  # each group's first tile
  point_begin = jnp.cumsum(counts) - counts  # each group's first sorted point
  tg = jnp.searchsorted(tile_end, jnp.arange(n_tiles, dtype=jnp.int32), side="right")
  tg = jnp.minimum(tg, n_groups - 1).astype(jnp.int32)  # each tile's group
  # Every slot gathers its point (no scatter): slot s of tile n holds the
  # group's point number (n - first tile of the group) * tile + s.
  rank = (jnp.arange(n_tiles, dtype=jnp.int32) - tile_begin[tg])[
    :, None
  ] * tile + jnp.arange(tile, dtype=jnp.int32)[None, :]  # [n_tiles, tile]
  valid = rank < counts[tg][:, None]
  # A padding slot holds a copy of the group's first point: its distances
  # are computed and never read.
  src = order[point_begin[tg][:, None] + jnp.where(valid, rank, 0)]
  xt = r[src]  # [n_tiles, tile, D]
  # ... and every point gathers its slot back.
  g_sorted = g[order]
  slot_sorted = tile_begin[g_sorted] * tile + (
    jnp.arange(bsz, dtype=jnp.int32) - point_begin[g_sorted]
  )
  slot = slot_sorted[jnp.argsort(order)]
  cnorm = jnp.sum(l3 * l3, axis=-1)  # [G, k3]

  def tiles(xc, gc):  # [chunk, tile, D], [chunk]
    cg = l3[gc]  # [chunk, k3, D]
    dots = jnp.einsum("ntd,nkd->ntk", xc, cg, precision=_HIGHEST)
    c, _ = argmin_first(cnorm[gc][:, None, :] - 2.0 * dots)
    return c

  ct = _tiled(tiles, width, xt, tg)  # chunks of `chunk` tiles: n_tiles is a multiple
  c = ct.reshape(-1)[slot]
  return c, l3[g, c]


def _pq_codes(y, books):
  """(codes [B, M], squared error [B]) of rotated y [B, D], books [M, K, d]."""
  m, k, sub = books.shape
  bnorm = jnp.sum(books * books, -1)  # [M, K]

  def tile(yt):
    codes, errs = [], []
    for j in range(m):  # one plain 2-D matmul per subspace
      part = yt[:, j * sub : (j + 1) * sub]
      dots = jnp.einsum("bd,kd->bk", part, books[j], precision=_HIGHEST)
      d, _ = argmin_first(bnorm[j][None, :] - 2.0 * dots)
      codes.append(d)
      errs.append(part - books[j][d])
    e = jnp.stack(errs, axis=1)  # [t, M, d]
    return jnp.stack(codes, axis=1), jnp.sum(e * e, axis=(1, 2))

  return _tiled(tile, k, y)


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
    y = jnp.matmul(r - opq_mean, opq_rot, precision=_HIGHEST)
    d, err = _pq_codes(y, opq_books)
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


def block_size(n: int, width: int, n_shards: int = 1) -> int:
  """The bucketed block size B for n points whose widest per-point temporary
  holds ``width`` floats: a power of two in [64, 16384] (per shard), times
  the number of shards."""
  cap = max(_MIN_BLOCK, min(_MAX_BLOCK, _BLOCK_FLOATS // max(width, 1)))
  cap = 1 << (cap.bit_length() - 1)  # a power of two
  per_shard = -(-n // n_shards)
  want = max(_MIN_BLOCK, 1 << max(per_shard - 1, 1).bit_length())
  return min(want, cap) * n_shards


def encode_blocks(
  x: np.ndarray,
  *,
  mode: str,
  l1: np.ndarray | None = None,
  l2: np.ndarray | None = None,
  l3: np.ndarray | None = None,
  opq=None,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Encodes [N, D] points block by block with fixed codebooks.

  Args:
    x: [N, D] float32 points (the level-3 residual when mode="opq_only").
    mode: "global", "parent", "parent_ab" (level-3 mode) or "opq_only".
    l1, l2, l3: RQ codebooks (see ``rq.RQCodebooks``); unused for opq_only.
    opq: optional ``opq.OPQ``; its columns follow the RQ codes.
    mesh: optional mesh to shard each block over.

  Returns:
    (codes [N, L] int32, sq [N, E] float32 squared residual norm after each
    level: l1, l2, l3 (not for opq_only) and opq if given).
  """
  x = np.asarray(x, np.float32)
  if mode == "parent":
    mode = "parent_tiles"  # every level on device, one call a block
  elif mode == "parent_ab" and x.shape[0]:
    return _encode_parent_ab(x, l1, l2, l3, opq, mesh)
  return _encode_fused(x, mode=mode, l1=l1, l2=l2, l3=l3, opq=opq, mesh=mesh)


def _encode_parent_ab(x, l1, l2, l3, opq, mesh):
  """Level 3 of "parent_ab" by parent tiles on the host: levels 1 and 2 block
  by block, then the points sorted by their (level-1, level-2) group and cut
  into single-group tiles, each searched against its group's [k3, D]
  codebook (one matmul a tile; the grouped k-means fit's own assignment
  sweep, ``kmeans.assign_grouped``), then OPQ on the level-3 residual as
  ``fit_encode`` does. Returns what ``_encode_fused`` does for the same
  mode, code for code."""
  ab, sq12, r = _encode_fused(x, mode="l1l2", l1=l1, l2=l2, mesh=mesh)
  a, b = ab[:, 0], ab[:, 1]
  g = a.astype(np.int64) * l2.shape[0] + b
  c, _ = kmeans.assign_grouped(r, g, l3, mesh=mesh)
  r -= l3[g, c]  # in place: the level-3 residual
  sq = [sq12, np.sum(r * r, axis=1)[:, None]]
  codes = [ab, c[:, None]]
  if opq is not None:
    d, sq_opq = _encode_fused(r, mode="opq_only", opq=opq, mesh=mesh)
    codes.append(d)
    sq.append(sq_opq)
  return np.concatenate(codes, axis=1), np.concatenate(sq, axis=1)


def _encode_fused(x, *, mode, l1=None, l2=None, l3=None, opq=None, mesh=None):
  """Every level of a block in one jitted call (see ``encode_blocks``); for
  mode "l1l2" also returns the level-2 residual [N, D]."""
  n, d = x.shape
  widths = [1]
  if mode != "opq_only":
    widths += [l1.shape[0], l2.shape[0]]
  if mode == "parent_tiles":
    widths += [l3.shape[1], 2 * d]  # a slot's distances; the tiled copy
  elif l3 is not None:
    widths.append(l3.shape[-2] * (d if l3.ndim == 3 else 1))
  if opq is not None:
    widths.append(opq.codebooks.shape[0] * opq.codebooks.shape[1])
  n_shards = 1 if mesh is None else mesh.size
  bsz = block_size(n, max(widths), n_shards)
  f32 = lambda v: None if v is None else jnp.asarray(v, jnp.float32)  # noqa: E731
  consts = (
    f32(l1),
    f32(l2),
    f32(l3),
    None if opq is None else f32(opq.mean),
    None if opq is None else f32(opq.rotation),
    None if opq is None else f32(opq.codebooks),
  )
  group_k2 = 0 if l2 is None else int(l2.shape[0])
  tile = group_tile(bsz, l3.shape[0]) if mode == "parent_tiles" else 0
  fn = _compiled(mode, group_k2 if mode == "parent_ab" else 0, mesh, tile)
  if mesh is not None:
    rep = NamedSharding(mesh, P())
    consts = tuple(None if c is None else jax.device_put(c, rep) for c in consts)
  outs = []
  for start in range(0, n, bsz):
    blk = x[start : start + bsz]
    if blk.shape[0] < bsz:
      blk = np.concatenate([blk, np.zeros((bsz - blk.shape[0], d), np.float32)])
    outs.append(fn(blk, *consts))
  if not outs:
    n_codes = (0 if mode == "opq_only" else 3) + (
      0 if opq is None else opq.codebooks.shape[0]
    )
    n_sq = (0 if mode == "opq_only" else 3) + (0 if opq is None else 1)
    return np.zeros((0, n_codes), np.int32), np.zeros((0, n_sq), np.float32)
  return tuple(
    np.concatenate([np.asarray(o[i]) for o in outs])[:n] for i in range(len(outs[0]))
  )
