"""Fused, bucketed encoding of embeddings into RQ-OPQ codes (on device).

``Quantizer.encode`` (and ``fit_encode`` for the OPQ columns) call
``encode_blocks``: one jitted function runs every level of one block of
points on device (level 1 and 2 nearest centroid, level 3 global or inside
the point's parent group, OPQ rotation and the per-subspace nearest
codeword) and returns the codes and the squared residual norm after each
level. Nothing is re-tiled on the host and no N x D temporary is made there.

Compile reuse: the block size B is a fixed bucket (the next power of two of N,
capped so one block's largest temporary stays below ``_BLOCK_FLOATS``), the
last block is zero padded, and the compiled function is cached per (B,
codebook shapes, mesh). Encoding any number of new items therefore reuses at
most a handful of executables instead of compiling per N.

Distances follow ``kmeans._pass`` exactly (``||c||^2 - 2 x.c`` at HIGHEST
precision, first minimum on ties), so encoding the training points gives the
fitted assignment.

Sharding: with a mesh, each block (a multiple of the mesh size) is sharded
over all mesh axes along the points; codebooks are replicated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Largest temporary of one block (floats): B*k distances or, for a parent
# level 3, the B*k3*D gathered centroids.
_BLOCK_FLOATS = 1 << 22
_MIN_BLOCK = 64
_MAX_BLOCK = 8192
_HIGHEST = jax.lax.Precision.HIGHEST


def _nearest(x, centroids, cnorm):
  """(index [B], squared distance [B]) of x [B, D] to centroids [K, D]."""
  dots = jnp.einsum("bd,kd->bk", x, centroids, precision=_HIGHEST)
  dist = cnorm[None, :] - 2.0 * dots
  a = jnp.argmin(dist, axis=-1).astype(jnp.int32)
  return a, centroids[a]


def _block(x, l1, l2, l3, opq_mean, opq_rot, opq_books, *, mode, group_k2):
  """Codes and per-level squared errors of one block.

  Args:
    x: [B, D] points (padding rows are zero; their outputs are discarded).
    l1: [k1, D]; l2: [k2, D]; l3: [k3, D] (global) or [G, k3, D] (parent).
    group_k2: k2 for "parent_ab" groups (a * k2 + b), unused otherwise.
    opq_mean: [D] or None; opq_rot: [D, D]; opq_books: [M, K, D / M].
    mode: "global", "parent", "parent_ab" or "opq_only" (x is the level-3
      residual; only the OPQ columns are computed).

  Returns:
    (codes [B, L] int32, sq [B, E] float32 squared residual norm after every
    level).
  """
  codes, sq = [], []
  r = x
  if mode != "opq_only":
    a, ca = _nearest(r, l1, jnp.sum(l1 * l1, -1))
    r = r - ca
    sq.append(jnp.sum(r * r, -1))
    b, cb = _nearest(r, l2, jnp.sum(l2 * l2, -1))
    r = r - cb
    sq.append(jnp.sum(r * r, -1))
    if mode == "global":
      c, cc = _nearest(r, l3, jnp.sum(l3 * l3, -1))
    else:
      g = b if mode == "parent" else a * group_k2 + b
      cg = l3[g]  # [B, k3, D]
      dots = jnp.einsum("bd,bkd->bk", r, cg, precision=_HIGHEST)
      dist = jnp.sum(cg * cg, -1) - 2.0 * dots
      c = jnp.argmin(dist, axis=-1).astype(jnp.int32)
      cc = jnp.take_along_axis(cg, c[:, None, None], axis=1)[:, 0]
    r = r - cc
    sq.append(jnp.sum(r * r, -1))
    codes += [a, b, c]
  if opq_books is not None:
    m, k, sub = opq_books.shape
    y = jnp.matmul(r - opq_mean, opq_rot, precision=_HIGHEST)
    ys = y.reshape(y.shape[0], m, sub)
    dots = jnp.einsum("bmd,mkd->bmk", ys, opq_books, precision=_HIGHEST)
    dist = jnp.sum(opq_books * opq_books, -1)[None] - 2.0 * dots
    d = jnp.argmin(dist, axis=-1).astype(jnp.int32)  # [B, M]
    y_hat = jnp.take_along_axis(opq_books[None], d[:, :, None, None], axis=2)
    e = ys - y_hat[:, :, 0]
    sq.append(jnp.sum(e * e, axis=(1, 2)))
    codes += [d[:, j] for j in range(m)]
  return jnp.stack(codes, axis=1), jnp.stack(sq, axis=1)


@functools.cache
def _compiled(mode: str, group_k2: int, mesh: jax.sharding.Mesh | None):
  fn = functools.partial(_block, mode=mode, group_k2=group_k2)
  if mesh is None:
    return jax.jit(fn)
  data = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  rep = NamedSharding(mesh, P())
  return jax.jit(fn, in_shardings=(data,) + (rep,) * 6, out_shardings=(data, data))


def block_size(n: int, width: int, n_shards: int = 1) -> int:
  """The bucketed block size B for n points whose widest per-point temporary
  holds ``width`` floats: a power of two in [64, 8192] (per shard), times
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
  n, d = x.shape
  widths = [1]
  if mode != "opq_only":
    widths += [l1.shape[0], l2.shape[0]]
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
  fn = _compiled(mode, group_k2 if mode == "parent_ab" else 0, mesh)
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
  codes = np.concatenate([np.asarray(c) for c, _ in outs])[:n]
  sq = np.concatenate([np.asarray(s) for _, s in outs])[:n]
  return codes, sq
