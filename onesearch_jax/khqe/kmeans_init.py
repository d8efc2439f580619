"""k-means initialisations: k-means++ on a seeded subsample, and faiss's
k distinct random points. Both are drawn on the host from a seed, so an init
is the same with and without a mesh (see khqe/kmeans.py).

k-means++ runs as one jitted program for every (k, subsample, D) up to
``_PP_ROWS`` rows and ``_PP_DIM`` dims: the subsample is zero padded to a
[_PP_ROWS, _PP_DIM] block (more rows or dims round up to the next power of
two), the padded rows get zero sampling weight and k is a
traced loop bound. RQ levels 1 and 2 and the OPQ sub-quantisers then share
one compilation instead of three. The draws are those of an unpadded
[m, D] run bit for bit: zero columns add exact zeros to the squared
distances, the cumulative weights of the real rows do not depend on the
rows after them, ``jax.random.split`` keys do not depend on their count
(partitionable threefry) and the padded rows' cumulative weights are set to
+inf, so no draw lands on them (checked against an unpadded run in
tests/khqe/kmeans_test.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The padded k-means++ block: RQ level 1 of 512 centroids draws from
# 8 * 512 = 4,096 points; the 128-dim embeddings set the width.
_PP_ROWS = 4096
_PP_DIM = 128


@jax.jit
def _kmeanspp(sample: jax.Array, m: jax.Array, k: jax.Array, seed: jax.Array):
  """k-means++ seeding on the first m rows of a zero-padded sample.

  Args:
    sample: [M, D] points; rows >= m are padding (never drawn).
    m: int32 scalar, the real rows (1 <= m <= M).
    k: int32 scalar, the centroids to draw (k <= m).
    seed: uint32 scalar; the key is ``jax.random.key(seed)``, made inside
      the program (an eager key would compile a program of its own).

  Returns:
    [M, D]; rows < k are the centroids, the rest zero.
  """
  rows, d = sample.shape
  valid = jnp.arange(rows) < m
  key0, key = jax.random.split(jax.random.key(seed))
  first = jax.random.randint(key0, (), 0, m)
  c0 = sample[first]

  def sqdist(c):
    return jnp.where(valid, jnp.sum((sample - c) ** 2, axis=-1), 0.0)

  centroids = jnp.zeros((rows, d), sample.dtype).at[0].set(c0)
  keys = jax.random.split(key, rows)
  uniform = valid.astype(sample.dtype)

  def body(i, carry):
    cents, d2 = carry
    total = jnp.sum(d2)
    # All points already chosen (duplicates): fall back to uniform sampling.
    w = jnp.where(total > 0, d2, uniform)
    cdf = jnp.where(valid, jnp.cumsum(w), jnp.inf)
    u = jax.random.uniform(keys[i]) * cdf[m - 1]
    idx = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, m - 1)
    c = sample[idx]
    return cents.at[i].set(c), jnp.minimum(d2, sqdist(c))

  centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, sqdist(c0)))
  return centroids


def _seed32(seed: int) -> np.uint32:
  """The uint32 whose traced ``jax.random.key`` equals the eager
  ``jax.random.key(seed)`` of a Python int seed >= 0 (which keeps its low
  32 bits without x64)."""
  return np.uint32(seed % (1 << 32))


def _bucket(n: int, floor: int) -> int:
  """floor, or the next power of two above it."""
  return max(floor, 1 << (n - 1).bit_length())


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
  n, d = x.shape
  m = min(n, init_oversample * k)
  idx = np.sort(rng.choice(n, size=m, replace=False))
  sample = np.zeros((_bucket(m, _PP_ROWS), _bucket(d, _PP_DIM)), np.float32)
  sample[:m, :d] = x[idx]
  out = _kmeanspp(jnp.asarray(sample), np.int32(m), np.int32(k), _seed32(seed))
  # Sliced on the host: a device slice would compile a program per shape.
  return np.asarray(out, dtype=np.float32)[:k, :d]


def random_init(x: np.ndarray, k: int, *, seed: int) -> np.ndarray:
  """k distinct seeded random points of x [N, D] (faiss's init); [k, D]."""
  rng = np.random.default_rng(seed)
  return np.asarray(x[np.sort(rng.choice(x.shape[0], size=k, replace=False))])
