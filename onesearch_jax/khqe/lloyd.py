"""The jitted Lloyd core of khqe's k-means (used by kmeans.py and opq.py).

* ``sweep``: one pass over point tiles against fixed centroids, each tile's
  distances one matmul against precomputed centroid norms, fused with a
  first-minimum argmin (``argmin_first``) while the tile is in cache, and
  optionally the per-shard centroid sums and counts;
* ``update``: the means plus the split-largest empty-cluster repair;
* ``lloyd``: the Lloyd loop as one ``lax.while_loop`` that stops early at an
  exact fixed point (bit-identical to running all iterations);
* ``lloyd_on_device``: a global Lloyd on [N, D] points, traceable inside a
  larger jitted function (the fused OPQ alternation).

The tile layout ([n_steps, S, C, T, D], see kmeans.py) is built by the
callers; S is the shard axis, summed over in ``update`` (under a mesh, the
cross-device sum of per-shard sums and counts: the psum of the update).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_EPS = 1.0 / 1024.0
_HIGHEST = jax.lax.Precision.HIGHEST


def argmin_first(dist: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(index of the first minimum, the minimum) along the last axis.

  Equal to ``jnp.argmin`` (first index on ties) for finite inputs, but built
  from two plain min-reductions, which XLA:CPU vectorises; its variadic
  argmin reduction is not (measured 2-3x slower on [T, 512] blocks).

  Args:
    dist: [..., K] float distances.

  Returns:
    (index [...] int32, minimum [...] float).
  """
  k = dist.shape[-1]
  best = jnp.min(dist, axis=-1)
  iota = jax.lax.broadcasted_iota(jnp.int32, dist.shape, dist.ndim - 1)
  index = jnp.min(jnp.where(dist == best[..., None], iota, k), axis=-1)
  return index, best


def sweep(xs, gs, ms, centroids, *, accumulate: bool):
  """One sweep over all tiles against fixed centroids.

  Args:
    xs: [n_steps, S, C, T, D] points.
    gs: [n_steps, S, C] tile groups.
    ms: [n_steps, S, C, T] validity mask.
    centroids: [G, K, D].
    accumulate: also return per-shard sums [S, G*K, D] and counts [S, G*K].

  Returns:
    (assign [n_steps, S, C, T], sqdist [n_steps, S, C, T], sums, counts).
  """
  n_groups, k, d = centroids.shape
  s = xs.shape[1]
  cnorm = jnp.sum(centroids * centroids, axis=-1)  # [G, K]

  def step(carry, inputs):
    x, g, m = inputs  # [S, C, T, D], [S, C], [S, C, T]
    cg = centroids[g]  # [S, C, K, D]
    dots = jnp.einsum("sctd,sckd->sctk", x, cg, precision=_HIGHEST)
    dist = cnorm[g][:, :, None, :] - 2.0 * dots  # [S, C, T, K]
    a, best = argmin_first(dist)
    xnorm = jnp.sum(x * x, axis=-1)
    sq = jnp.maximum(best + xnorm, 0.0)
    sq = jnp.where(m, sq, 0.0)
    if accumulate:
      sums, counts = carry
      ids = (g[:, :, None] * k + a).reshape(s, -1)  # [S, C*T]
      xm = jnp.where(m[..., None], x, 0.0).reshape(s, -1, d)
      w = m.reshape(s, -1).astype(jnp.float32)
      sums = jax.vmap(lambda acc, i, v: acc.at[i].add(v))(sums, ids, xm)
      counts = jax.vmap(lambda acc, i, v: acc.at[i].add(v))(counts, ids, w)
      carry = (sums, counts)
    return carry, (a, sq)

  if accumulate:
    init = (
      jnp.zeros((s, n_groups * k, d), jnp.float32),
      jnp.zeros((s, n_groups * k), jnp.float32),
    )
  else:
    init = ()
  carry, (a, sq) = jax.lax.scan(step, init, (xs, gs, ms))
  if accumulate:
    return a, sq, carry[0], carry[1]
  return a, sq, None, None


def update(centroids, sums, counts):
  """Means of the assigned points, then split-largest empty repair.

  Args:
    centroids: [G, K, D] previous centroids.
    sums: [S, G*K, D] per-shard sums; counts: [S, G*K].

  Returns:
    [G, K, D] new centroids.
  """
  n_groups, k, d = centroids.shape
  sums = jnp.sum(sums, axis=0).reshape(n_groups, k, d)
  counts = jnp.sum(counts, axis=0).reshape(n_groups, k)
  means = sums / jnp.maximum(counts, 1.0)[..., None]
  empty = counts == 0
  means = jnp.where(empty[..., None], centroids, means)
  # r-th empty cluster <- r-th largest cluster of the same group.
  by_size = jnp.argsort(-counts, axis=1, stable=True)  # [G, K] largest first
  n_nonempty = jnp.maximum(jnp.sum(~empty, axis=1, keepdims=True), 1)
  empty_rank = jnp.cumsum(empty, axis=1) - 1
  donor = jnp.take_along_axis(by_size, empty_rank % n_nonempty, axis=1)  # [G,K]
  sign = jnp.where(jnp.arange(d) % 2 == 0, 1.0, -1.0)
  donor_c = jnp.take_along_axis(means, donor[..., None], axis=1)  # [G, K, D]
  repaired = jnp.where(empty[..., None], donor_c * (1.0 + _EPS * sign), means)
  # Shrink each donor that gave its centroid away.
  is_donor = jnp.zeros((n_groups, k), bool)
  is_donor = jax.vmap(lambda z, i, e: z.at[i].max(e))(is_donor, donor, empty)
  return jnp.where(
    (is_donor & ~empty)[..., None], means * (1.0 - _EPS * sign), repaired
  )


def lloyd(xs, gs, ms, centroids, n_iter):
  """Up to ``n_iter`` Lloyd iterations, stopping at a fixed point.

  If an iteration's assignment equals the previous one, its update
  reproduces the previous centroids bit for bit (same points summed in the
  same order, same counts), so every later iteration would too: stopping
  there returns exactly what ``n_iter`` iterations return, and the
  assignment of that iteration is the final one (no extra pass).

  Returns:
    (centroids [G, K, D], assign, sqdist [n_steps, S, C, T], iterations run).
  """

  def cond(state):
    it, _, _, _, converged = state
    return (it < n_iter) & ~converged

  def body(state):
    it, c, prev, _, _ = state
    a, sq, sums, counts = sweep(xs, gs, ms, c, accumulate=True)
    same = jnp.all((a == prev) | ~ms)
    return it + 1, update(c, sums, counts), a, sq, same

  start = (
    jnp.int32(0),
    centroids,
    jnp.full(ms.shape, -1, jnp.int32),
    jnp.zeros(ms.shape, jnp.float32),
    jnp.bool_(False),
  )
  it, centroids, a, sq, converged = jax.lax.while_loop(cond, body, start)
  a, sq = jax.lax.cond(
    converged,
    lambda: (a, sq),
    lambda: sweep(xs, gs, ms, centroids, accumulate=False)[:2],
  )
  return centroids, a, sq, it


def lloyd_on_device(x: jax.Array, init: jax.Array, n_iter, *, tile: int):
  """Global Lloyd on device, traceable inside a larger jitted function.

  Builds the same single-shard layout as ``fit_kmeans`` (rows in order, cut
  into tiles of ``tile`` rows, the last one zero padded and masked), so with
  ``tile = global_tile(N, K)`` the result is bit-identical to
  ``fit_kmeans(x, K, init_centroids=init, n_iter=n_iter)``.

  Args:
    x: [N, D] points.
    init: [K, D] initial centroids.
    n_iter: Lloyd iterations (may be traced).
    tile: T rows per tile (static).

  Returns:
    (centroids [K, D], assign [N] int32, sqdist [N] float32).
  """
  n, d = x.shape
  n_steps = -(-n // tile)
  pad = n_steps * tile - n
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(n_steps, 1, 1, tile, d)
  ms = (jnp.arange(n_steps * tile) < n).reshape(n_steps, 1, 1, tile)
  gs = jnp.zeros((n_steps, 1, 1), jnp.int32)
  c, a, sq, _ = lloyd(xs, gs, ms, init[None], n_iter)
  return c[0], a.reshape(-1)[:n], sq.reshape(-1)[:n]
