"""k-means initialisations: k-means++ on a seeded subsample, and faiss's
k distinct random points. Both are drawn on the host from a seed, so an init
is the same with and without a mesh (see khqe/kmeans.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeanspp(sample: jax.Array, key: jax.Array, *, k: int) -> jax.Array:
  """k-means++ seeding on [M, D] points; returns [k, D]."""
  m, d = sample.shape
  key0, key = jax.random.split(key)
  first = jax.random.randint(key0, (), 0, m)
  c0 = sample[first]
  d2 = jnp.sum((sample - c0) ** 2, axis=-1)
  centroids = jnp.zeros((k, d), sample.dtype).at[0].set(c0)
  keys = jax.random.split(key, k)

  def body(i, carry):
    cents, d2 = carry
    total = jnp.sum(d2)
    # All points already chosen (duplicates): fall back to uniform sampling.
    w = jnp.where(total > 0, d2, jnp.ones_like(d2))
    cdf = jnp.cumsum(w)
    u = jax.random.uniform(keys[i]) * cdf[-1]
    idx = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, m - 1)
    c = sample[idx]
    cents = cents.at[i].set(c)
    return cents, jnp.minimum(d2, jnp.sum((sample - c) ** 2, axis=-1))

  centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, d2))
  return centroids


def kmeanspp_init(
  x: np.ndarray, k: int, *, seed: int, init_oversample: int = 8
) -> np.ndarray:
  """k-means++ on a random subsample of ``init_oversample * k`` points.

  Args:
    x: [N, D] float32 points.
    k: number of centroids.
    seed: random seed.
    init_oversample: subsample size as a multiple of k (all points if N is
      smaller).

  Returns:
    [k, D] float32 initial centroids.
  """
  rng = np.random.default_rng(seed)
  m = min(x.shape[0], init_oversample * k)
  idx = np.sort(rng.choice(x.shape[0], size=m, replace=False))
  key = jax.random.key(seed)
  return np.asarray(_kmeanspp(jnp.asarray(x[idx]), key, k=k), dtype=np.float32)


def random_init(x: np.ndarray, k: int, *, seed: int) -> np.ndarray:
  """k distinct seeded random points of x [N, D] (faiss's init); [k, D]."""
  rng = np.random.default_rng(seed)
  return np.asarray(x[np.sort(rng.choice(x.shape[0], size=k, replace=False))])
