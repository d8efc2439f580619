"""Seeded, jitted, chunked and shardable k-means (the RQ-Kmeans building block).

One Lloyd core serves two uses:

* ``fit_kmeans``: one k-means of size k over all points (RQ levels 1 and 2,
  OPQ sub-quantisers, the global level 3);
* ``fit_grouped_kmeans``: G independent k-means of size k at once, one per
  group of points (the parent-conditional level 3, SPEC §2.3 ``--balanced 2``),
  compiled once for all groups instead of once per group.

Layout. Points are sorted by group and cut into *tiles* of T points that each
belong to one group (the last tile of a group is padded and masked). Tiles are
stacked as ``[n_steps, S, C, T, D]``: S shards (the mesh size, 1 without a
mesh), C tiles per shard per step. A ``lax.scan`` walks the steps, so a step
only ever holds a ``[S, C, T, K]`` distance block: memory stays bounded for any
N (1M x 128 never allocates N x K). For a single global k-means G = 1, C = 1
and T is the chunk size.

The jitted core is ``lloyd.py``: per tile one matmul against precomputed
centroid norms fused with a first-minimum argmin, tiles sized so the
distances stay in cache (``_STEP_FLOATS``), and the Lloyd loop as one
``lax.while_loop`` that stops at an exact fixed point (an assignment equal to
the previous one), which returns bit for bit what ``n_iter`` iterations do.

Sharding. With a mesh, the S axis is sharded over all mesh axes (a pure data
axis); per-shard centroid sums and counts are reduced across devices by XLA
(jit with in/out shardings, no shard_map). Centroids are replicated.

Initialisation.
* ``fit_kmeans``: k-means++ (D^2 sampling, one candidate per step) run on a
  seeded random subsample of at most ``init_oversample * k`` points. The
  subsample keeps the k sequential seeding steps cheap (each step touches
  ``init_oversample * k`` points, not N); it is drawn on the host, so the init
  is identical with and without a mesh.
  ``init="random"`` instead takes k distinct seeded random points (faiss's
  init; measured on the OPQ step: balances codes better but lowers ICR, so
  k-means++ stays the default).
* ``fit_grouped_kmeans``: k distinct random points per group (what faiss,
  and hence the official per-parent k-means, does).

Empty clusters are repaired after every update by *splitting the largest
clusters*: the r-th empty cluster of a group takes the centroid c of the
r-th largest cluster of that group and the pair becomes c(1 + eps s),
c(1 - eps s) with s = (+1, -1, +1, ...) and eps = 1/1024 (the faiss rule). It
is deterministic, needs no pass over the points and is mesh independent.

Optional subsampling (``max_points_per_centroid``, faiss semantics: faiss's
default is 256, the official code passes 10000): train on a random subsample
of ``max_points_per_centroid * k`` points (per group for the grouped fit),
then assign all points.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from onesearch_jax.khqe.kmeans_init import kmeanspp_init, random_init
from onesearch_jax.khqe.lloyd import lloyd, sweep

# Distance block budget per step (floats): S*C*T*K stays below this. 2^19
# floats (2 MiB) keeps a tile's distances in cache between the matmul and
# the argmin: measured 2.5-4x faster than 2^22 on 200k x 512 x 128.
_STEP_FLOATS = 1 << 19
# Assignment alone (no update) runs the sweep in calls of a fixed number of
# steps holding about this many point slots, the last call padded with masked
# tiles: a new N reuses the compiled call (the step count is bucketed).
_ASSIGN_CHUNK_POINTS = 1 << 16
# A grouped Lloyd without a mesh runs as this many parts side by side
# (``_run_group_parts``; 1 = one execution). Two: the machines this was
# measured on have two cores (docs/BENCHMARKS.md).
_GROUP_PARTS = 2
INITS = ("kmeans++", "random")


@dataclasses.dataclass(frozen=True)
class KMeans:
  """A fitted k-means.

  Attributes:
    centroids: [k, D] float32.
    assign: [N] int32, the nearest centroid of every input point.
    inertia: sum over points of the squared distance to the assigned centroid.
  """

  centroids: np.ndarray
  assign: np.ndarray
  inertia: float


@dataclasses.dataclass(frozen=True)
class GroupedKMeans:
  """G independent k-means fitted together.

  Attributes:
    centroids: [G, k, D] float32; group g's centroids are ``centroids[g]``.
    assign: [N] int32 local code in [0, k) within the point's group.
    sqdist: [N] float32 squared distance to the assigned centroid.
    inertia: sum of ``sqdist``.
  """

  centroids: np.ndarray
  assign: np.ndarray
  sqdist: np.ndarray
  inertia: float


# ----------------------------------------------------------------------------
# Layout: points -> tiles.


@dataclasses.dataclass(frozen=True)
class _Layout:
  x: np.ndarray  # [n_steps, S, C, T, D] float32 (padding rows are zero)
  group: np.ndarray  # [n_steps, S, C] int32
  mask: np.ndarray  # [n_steps, S, C, T] bool
  index: np.ndarray  # [n_steps, S, C, T] int64 point index, -1 for padding


def global_tile(n: int, k: int, n_shards: int = 1) -> int:
  """Tile rows T of a global k-means of n points into k clusters."""
  per_shard = math.ceil(n / n_shards)
  return max(8, min(per_shard, max(8, _STEP_FLOATS // (k * n_shards))))


def group_tile_rows(counts: np.ndarray) -> int:
  """Rows T of the single-group tiles of a grouped k-means with these
  per-group point counts."""
  return 64 if counts.max() >= 256 else 16


def group_tiles_per_step(tile: int, k: int, n_shards: int) -> int:
  """Tiles C per shard per scan step of a grouped layout."""
  return max(1, min(64, _STEP_FLOATS // (tile * k * n_shards)))


def _make_layout(
  x: np.ndarray,
  group: np.ndarray,
  n_groups: int,
  k: int,
  n_shards: int,
  *,
  rows: np.ndarray | None = None,
  tile: int | None = None,
  min_steps: int = 0,
) -> _Layout:
  """Sorts points by group and cuts them into single-group tiles.

  Args:
    x: [N, D] points.
    group: group of every laid-out point ([N], or [R] with ``rows``).
    rows: optional [R] ascending rows of x to lay out (the layout's
      ``index`` then counts in rows, 0..R-1); all of x without it.
    tile: tile rows of a grouped layout (default ``group_tile_rows``); given,
      the layout is a grouped one even for one group.
    min_steps: pad with masked steps up to at least this many.
  """
  d = x.shape[1]
  n = x.shape[0] if rows is None else rows.shape[0]
  counts = np.bincount(group, minlength=n_groups)
  one_run = n_groups == 1 and tile is None
  if one_run:
    # One global k-means: big tiles, one tile per shard per step.
    tile = global_tile(n, k, n_shards)
    tiles_per_step = 1
  else:
    tile = group_tile_rows(counts) if tile is None else tile
    tiles_per_step = group_tiles_per_step(tile, k, n_shards)
  tiles_per_group = -(-counts // tile)  # ceil
  n_tiles = int(tiles_per_group.sum())
  block = n_shards * tiles_per_step
  n_tiles_padded = max(-(-n_tiles // block), min_steps) * block
  index = np.full((n_tiles_padded, tile), -1, dtype=np.int64)
  tile_group = np.zeros((n_tiles_padded,), dtype=np.int32)
  order = np.argsort(group, kind="stable")
  tile_start = np.concatenate([[0], np.cumsum(tiles_per_group)[:-1]])
  point_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
  # Position of every sorted point inside its group.
  sorted_group = group[order]
  rank = np.arange(n) - point_start[sorted_group]
  flat_slot = (tile_start[sorted_group] + rank // tile) * tile + rank % tile
  index.reshape(-1)[flat_slot] = order
  tile_group[:n_tiles] = np.repeat(np.arange(n_groups), tiles_per_group)
  n_steps = n_tiles_padded // block
  # Tiles are dealt to shards in contiguous runs: shard s gets a contiguous
  # slice of the sorted points, step by step.
  index = index.reshape(n_shards, n_steps, tiles_per_step, tile).swapaxes(0, 1)
  tile_group = tile_group.reshape(n_shards, n_steps, tiles_per_step).swapaxes(0, 1)
  mask = index >= 0
  xt = np.zeros(index.shape + (d,), dtype=np.float32)
  if one_run:
    # Points in order: shard s holds a contiguous run, copied step-block by
    # step-block (no gather).
    per_step = tiles_per_step * tile
    flat = xt.reshape(n_steps, n_shards, per_step, d)
    for sh in range(n_shards):
      lo = sh * n_steps * per_step
      m = max(0, min(n, lo + n_steps * per_step) - lo)
      src = x[lo : lo + m] if rows is None else x[rows[lo : lo + m]]
      full, rem = divmod(m, per_step)
      flat[:full, sh] = src[: full * per_step].reshape(full, per_step, d)
      if rem:
        flat[full, sh, :rem] = src[full * per_step :]
    return _Layout(x=xt, group=np.ascontiguousarray(tile_group), mask=mask, index=index)
  # Gather in slices so the copy never needs a second N x D temporary.
  flat_x, flat_idx = xt.reshape(-1, d), index.reshape(-1)
  valid = np.flatnonzero(flat_idx >= 0)
  for start in range(0, valid.size, 1 << 16):
    v = valid[start : start + (1 << 16)]
    flat_x[v] = x[flat_idx[v] if rows is None else rows[flat_idx[v]]]
  return _Layout(x=xt, group=np.ascontiguousarray(tile_group), mask=mask, index=index)


# ----------------------------------------------------------------------------
# The jitted core.


def _jit_on_mesh(fn, mesh: jax.sharding.Mesh | None, ins: str, outs: str):
  """``jax.jit(fn)``; with a mesh, the arguments and outputs marked "s" in
  ``ins`` / ``outs`` are sharded along the tile-shard axis S, "r" replicated."""
  if mesh is None:
    return jax.jit(fn)
  spec = {
    "s": NamedSharding(mesh, P(None, tuple(mesh.axis_names))),
    "r": NamedSharding(mesh, P()),
  }
  return jax.jit(
    fn,
    in_shardings=tuple(spec[c] for c in ins),
    out_shardings=tuple(spec[c] for c in outs),
  )


@functools.cache
def _compiled(mesh: jax.sharding.Mesh | None):
  """Returns the jitted Lloyd function for a mesh.

  ``n_iter`` is a traced argument, so a new iteration count does not
  recompile (OPQ calls the same shapes with 40, 4 and 25 iterations).
  Assignment alone (``n_iter = 0``) runs ``_compiled_sweep`` instead.
  """
  return _jit_on_mesh(lloyd, mesh, "sssrr", "rssr")


def _assign_tiles(xs, gs, ms, centroids):
  return sweep(xs, gs, ms, centroids, accumulate=False)[:2]


@functools.cache
def _compiled_sweep(mesh: jax.sharding.Mesh | None):
  """The jitted assignment sweep (``lloyd.sweep`` without the update): the
  same per-step arithmetic as the Lloyd loop, so the same assignment."""
  return _jit_on_mesh(_assign_tiles, mesh, "sssr", "ss")


def _assign_layout(lay: _Layout, centroids: np.ndarray, mesh):
  """(assign, sqdist) [n_steps, S, C, T] of a layout, in fixed-size calls."""
  n_steps, s, c, t = lay.mask.shape
  per_call = max(1, _ASSIGN_CHUNK_POINTS // (s * c * t))
  per_call = min(per_call, 1 << max(n_steps - 1, 0).bit_length())  # small N
  fn = _compiled_sweep(mesh)
  cents = centroids.astype(np.float32)
  if mesh is not None:
    cents = jax.device_put(cents, NamedSharding(mesh, P()))
  outs = []
  for start in range(0, n_steps, per_call):
    parts = [lay.x, lay.group, lay.mask]
    parts = [p[start : start + per_call] for p in parts]
    short = per_call - parts[0].shape[0]
    if short:
      parts = [
        np.concatenate([p, np.zeros((short,) + p.shape[1:], p.dtype)]) for p in parts
      ]
    outs.append(fn(*parts, cents))
  a = np.concatenate([np.asarray(o[0]) for o in outs])[:n_steps]
  sq = np.concatenate([np.asarray(o[1]) for o in outs])[:n_steps]
  return a, sq


def _run(
  x: np.ndarray,
  group: np.ndarray,
  init: np.ndarray,
  *,
  n_iter: int,
  mesh: jax.sharding.Mesh | None,
):
  """Runs Lloyd (n_iter = 0: assignment only); maps results back to points.
  A grouped Lloyd without a mesh runs as ``_GROUP_PARTS`` executions side by
  side (``_run_group_parts``)."""
  n_groups, k, _ = init.shape
  if mesh is None and n_iter > 0 and n_groups >= 2 and _GROUP_PARTS > 1:
    return _run_group_parts(x, group, init, n_iter=n_iter, parts=_GROUP_PARTS)
  n_shards = 1 if mesh is None else mesh.size
  lay = _make_layout(x, group, n_groups, k, n_shards)
  if n_iter == 0:
    centroids = init
    a, sq = _assign_layout(lay, init, mesh)
  else:
    fn = _compiled(mesh)
    args = (lay.x, lay.group, lay.mask, init.astype(np.float32))
    if mesh is not None:
      data = NamedSharding(mesh, P(None, tuple(mesh.axis_names)))
      rep = NamedSharding(mesh, P())
      args = tuple(jax.device_put(a, data) for a in args[:3]) + (
        jax.device_put(args[3], rep),
      )
    centroids, a, sq, _ = fn(*args, np.int32(n_iter))
    a, sq = np.asarray(a), np.asarray(sq)
  assign = np.zeros((x.shape[0],), np.int32)
  sqdist = np.zeros((x.shape[0],), np.float32)
  assign[lay.index[lay.mask]] = a[lay.mask]
  sqdist[lay.index[lay.mask]] = sq[lay.mask]
  return np.asarray(centroids, dtype=np.float32), assign, sqdist


def split_groups(tiles_per_group: np.ndarray, parts: int) -> list[tuple[int, int]]:
  """Contiguous group ranges [lo, hi) with about equal tile counts, at most
  ``parts`` of them, none empty."""
  n_groups = tiles_per_group.shape[0]
  parts = max(1, min(parts, n_groups))
  ends = np.cumsum(tiles_per_group)[:-1]  # tiles before cut 1, 2, ..., G - 1
  targets = np.sum(tiles_per_group) * np.arange(1, parts) / parts
  cuts = np.argmin(np.abs(ends[None, :] - targets[:, None]), axis=1) + 1
  bounds = sorted({0, n_groups, *(int(c) for c in cuts)})
  return list(zip(bounds[:-1], bounds[1:], strict=True))


def _run_group_parts(x, group, init, *, n_iter: int, parts: int):
  """``_run`` of a grouped Lloyd split into ``parts`` contiguous ranges of
  groups, each run by the same compiled program in its own thread.

  The groups are independent k-means, so a part gives each of its groups the
  same tiles in the same order as the whole layout (same sums, same
  centroids, same assignment: bit for bit, tests/khqe/kmeans_test.py). Two
  things make it faster on CPU (docs/BENCHMARKS.md): the parts' executions
  run side by side on the cores, where one execution of the many small
  per-tile matmuls runs slower on two threads than on one, and a part stops
  at its own fixed point (``lloyd``: stopping there equals running on), not
  at the last group's. The parts are padded to one shape (masked steps,
  zero centroids for missing groups, which no point reads), so they share
  one compilation. Needs G >= 2 and parts >= 2 (then there are >= 2 ranges)."""
  n_groups, k, d = init.shape
  counts = np.bincount(group, minlength=n_groups)
  tile = group_tile_rows(counts)
  tiles = -(-counts // tile)  # tiles of each group
  ranges = split_groups(tiles, parts)
  width = max(hi - lo for lo, hi in ranges)
  tiles_per_step = group_tiles_per_step(tile, k, 1)
  steps = max(-(-int(tiles[lo:hi].sum()) // tiles_per_step) for lo, hi in ranges)
  f32 = np.dtype(np.float32)
  spec = jax.ShapeDtypeStruct
  program = _compiled(None).lower(
    spec((steps, 1, tiles_per_step, tile, d), f32),
    spec((steps, 1, tiles_per_step), np.dtype(np.int32)),
    spec((steps, 1, tiles_per_step, tile), np.dtype(np.bool_)),
    spec((width, k, d), f32),
    spec((), np.dtype(np.int32)),
  )
  compiled = concurrent.futures.Future()

  def run(lo_hi):  # one part, layout included (numpy releases the GIL)
    lo, hi = lo_hi
    rows = np.flatnonzero((group >= lo) & (group < hi))
    lay = _make_layout(
      x, group[rows] - lo, width, k, 1, rows=rows, tile=tile, min_steps=steps
    )
    start = np.zeros((width, k, d), np.float32)
    start[: hi - lo] = init[lo:hi]
    fn = compiled.result()
    c, a, sq, _ = fn(lay.x, lay.group, lay.mask, start, np.int32(n_iter))
    point = rows[lay.index[lay.mask]]
    return (
      np.asarray(c)[: hi - lo],
      point,
      np.asarray(a)[lay.mask],
      np.asarray(sq)[lay.mask],
    )

  # The parts' layouts are built in the workers while this thread compiles.
  with concurrent.futures.ThreadPoolExecutor(len(ranges)) as pool:
    futures = [pool.submit(run, r) for r in ranges]
    try:
      compiled.set_result(program.compile())
    except BaseException as err:
      compiled.set_exception(err)
      raise
    outs = [f.result() for f in futures]
  centroids = np.zeros((n_groups, k, d), np.float32)
  assign = np.zeros((x.shape[0],), np.int32)
  sqdist = np.zeros((x.shape[0],), np.float32)
  for (lo, hi), (c, point, a, sq) in zip(ranges, outs, strict=True):
    centroids[lo:hi] = c
    assign[point] = a
    sqdist[point] = sq
  return centroids, assign, sqdist


def _check_points(x: np.ndarray, k: int, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{what}: expected points [N, D], got shape {x.shape}")
  if k < 1:
    raise ValueError(f"{what}: k must be >= 1, got {k}")
  if not np.all(np.isfinite(x)):
    bad = int(np.argwhere(~np.isfinite(x))[0, 0])
    raise ValueError(f"{what}: point {bad} has a non-finite value")
  return np.ascontiguousarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------
# Public API.


def fit_kmeans(
  x: np.ndarray,
  k: int,
  *,
  seed: int,
  n_iter: int = 25,
  mesh: jax.sharding.Mesh | None = None,
  init_centroids: np.ndarray | None = None,
  init_oversample: int = 8,
  max_points_per_centroid: int | None = None,
  init: str = "kmeans++",
) -> KMeans:
  """Fits k-means with a seeded init and ``n_iter`` Lloyd iterations.

  Args:
    x: [N, D] float32 points, N >= k.
    k: number of clusters.
    seed: random seed (init and subsampling).
    n_iter: Lloyd iterations (fixed count, as faiss ``niter``).
    mesh: optional mesh; points are sharded over all its axes.
    init_centroids: optional [k, D] warm start (skips k-means++).
    init_oversample: k-means++ runs on ``init_oversample * k`` sampled points.
    max_points_per_centroid: if set and N exceeds it times k, train on a
      random subsample of that size, then assign all points (faiss semantics).
    init: "kmeans++" (k-means++ on a subsample, see ``kmeanspp_init``) or
      "random" (k distinct seeded random points, what faiss does); ignored
      with ``init_centroids``.

  Returns:
    A ``KMeans`` with centroids [k, D], assign [N] and inertia.
  """
  x = _check_points(x, k, "fit_kmeans")
  n = x.shape[0]
  if n < k:
    raise ValueError(f"fit_kmeans: need at least k={k} points, got {n}")
  if init not in INITS:
    raise ValueError(f"fit_kmeans: init must be one of {INITS}, got {init!r}")
  if init_centroids is not None:
    start = np.asarray(init_centroids, np.float32)
    if start.shape != (k, x.shape[1]):
      raise ValueError(
        f"fit_kmeans: init_centroids shape {start.shape} != {(k, x.shape[1])}"
      )
  elif init == "random":
    start = random_init(x, k, seed=seed)
  else:
    start = kmeanspp_init(x, k, seed=seed, init_oversample=init_oversample)
  train = x
  if max_points_per_centroid is not None and n > max_points_per_centroid * k:
    rng = np.random.default_rng(seed + 1)
    idx = np.sort(rng.choice(n, size=max_points_per_centroid * k, replace=False))
    train = x[idx]
  zeros = np.zeros((train.shape[0],), np.int32)
  centroids, assign, sqdist = _run(train, zeros, start[None], n_iter=n_iter, mesh=mesh)
  if train is not x:
    assign, sqdist = assign_points(x, centroids[0], mesh=mesh)
  return KMeans(
    centroids=centroids[0],
    assign=assign,
    inertia=float(np.sum(sqdist, dtype=np.float64)),
  )


def assign_points(
  x: np.ndarray, centroids: np.ndarray, *, mesh: jax.sharding.Mesh | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid of every point, in bounded-memory chunks.

  Args:
    x: [N, D] points.
    centroids: [K, D] centroids (left unchanged).
    mesh: optional mesh to shard the points over.

  Returns:
    (assign [N] int32, sqdist [N] float32).
  """
  centroids = np.asarray(centroids, np.float32)
  x = _check_points(x, centroids.shape[0], "assign")
  if x.shape[1] != centroids.shape[1]:
    raise ValueError(f"assign: dim {x.shape[1]} != centroid dim {centroids.shape[1]}")
  zeros = np.zeros((x.shape[0],), np.int32)
  _, a, sq = _run(x, zeros, centroids[None], n_iter=0, mesh=mesh)
  return a, sq


# The contract name (``kmeans.assign``).
assign = assign_points


def fit_grouped_kmeans(
  x: np.ndarray,
  group: np.ndarray,
  n_groups: int,
  k: int,
  *,
  seed: int,
  n_iter: int = 25,
  mesh: jax.sharding.Mesh | None = None,
  max_points_per_centroid: int | None = None,
) -> GroupedKMeans:
  """Fits one independent k-means of size k inside every group, all at once.

  Args:
    x: [N, D] points.
    group: [N] int group id in [0, n_groups); every group needs >= k points.
    n_groups: G.
    k: clusters per group.
    seed: random seed of the per-group random init (and subsample).
    n_iter: Lloyd iterations.
    mesh: optional mesh to shard the points over.
    max_points_per_centroid: if set, a group with more than that times k
      points trains on a seeded random subset of that size (which holds its
      init points), then all points are assigned (faiss semantics per group).

  Returns:
    A ``GroupedKMeans`` (centroids [G, k, D], local assign [N], sqdist [N]).
  """
  x = _check_points(x, k, "fit_grouped_kmeans")
  group = np.asarray(group, np.int64)
  if group.shape != (x.shape[0],):
    raise ValueError(
      f"fit_grouped_kmeans: group shape {group.shape} != {(x.shape[0],)}"
    )
  if group.size and (group.min() < 0 or group.max() >= n_groups):
    raise ValueError(f"fit_grouped_kmeans: group ids must lie in [0, {n_groups})")
  counts = np.bincount(group, minlength=n_groups)
  if np.any(counts < k):
    g = int(np.argmin(counts))
    raise ValueError(
      f"fit_grouped_kmeans: group {g} has {counts[g]} points < k={k}; "
      "handle small groups before calling"
    )
  # Random init: the first k points of each group under a seeded shuffle.
  rng = np.random.default_rng(seed)
  perm = rng.permutation(x.shape[0])
  order = perm[np.argsort(group[perm], kind="stable")]
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  pick = order[(starts[:, None] + np.arange(k)[None, :]).reshape(-1)]
  init = x[pick].reshape(n_groups, k, x.shape[1])
  group = group.astype(np.int32)
  cap = None if max_points_per_centroid is None else max_points_per_centroid * k
  if cap is None or counts.max() <= cap:
    centroids, a, sq = _run(x, group, init, n_iter=n_iter, mesh=mesh)
  else:
    # The first `cap` points of each group under the same shuffle.
    rank = np.arange(x.shape[0]) - starts[group[order]]
    train = np.sort(order[rank < cap])
    centroids, _, _ = _run(x[train], group[train], init, n_iter=n_iter, mesh=mesh)
    _, a, sq = _run(x, group, centroids, n_iter=0, mesh=mesh)
  return GroupedKMeans(
    centroids=centroids,
    assign=a,
    sqdist=sq,
    inertia=float(np.sum(sq, dtype=np.float64)),
  )


def assign_grouped(
  x: np.ndarray,
  group: np.ndarray,
  centroids: np.ndarray,
  *,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid within each point's group.

  Args:
    x: [N, D] points.
    group: [N] group ids in [0, G).
    centroids: [G, K, D].
    mesh: optional mesh.

  Returns:
    (local assign [N] int32, sqdist [N] float32).
  """
  centroids = np.asarray(centroids, np.float32)
  x = _check_points(x, centroids.shape[1], "assign_grouped")
  group = np.asarray(group, np.int32)
  _, a, sq = _run(x, group, centroids, n_iter=0, mesh=mesh)
  return a, sq
