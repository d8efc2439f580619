"""The fused Lloyd core: argmin against numpy, the early stop against a
fixed-count loop (bit for bit), the on-device Lloyd against fit_kmeans, and
sharded (8 fake devices, several tiles per shard) against one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.khqe import kmeans, lloyd


def _blobs(n, d, n_centers, seed, spread=6.0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(n_centers, d)) * spread
  labels = rng.integers(0, n_centers, size=n)
  return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32)


def _layout(x, tile):
  """The single-group, single-shard layout of kmeans.fit_kmeans."""
  n, d = x.shape
  steps = -(-n // tile)
  xs = np.zeros((steps * tile, d), np.float32)
  xs[:n] = x
  ms = (np.arange(steps * tile) < n).reshape(steps, 1, 1, tile)
  return xs.reshape(steps, 1, 1, tile, d), np.zeros((steps, 1, 1), np.int32), ms


def test_argmin_first_equals_numpy_argmin_with_ties():
  rng = np.random.default_rng(0)
  dist = rng.integers(0, 5, size=(300, 37)).astype(np.float32)  # many ties
  dist[7] = 2.0  # a row of equal values
  index, best = jax.jit(lloyd.argmin_first)(jnp.asarray(dist))
  np.testing.assert_array_equal(np.asarray(index), dist.argmin(-1))
  np.testing.assert_array_equal(np.asarray(best), dist.min(-1))
  assert np.asarray(index).dtype == np.int32


def test_fused_sweep_equals_brute_force_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1000, 16)).astype(np.float32)
  c = rng.normal(size=(40, 16)).astype(np.float32)
  xs, gs, ms = _layout(x, 96)  # 11 tiles, the last one padded
  a, sq, sums, counts = jax.jit(lambda *args: lloyd.sweep(*args, accumulate=True))(
    xs, gs, ms, c[None]
  )
  a, sq = np.asarray(a).reshape(-1)[:1000], np.asarray(sq).reshape(-1)[:1000]
  d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(a, d.argmin(1))
  np.testing.assert_allclose(sq, d.min(1), rtol=1e-4, atol=1e-4)
  want = np.zeros((40, 16))
  np.add.at(want, a, x)
  np.testing.assert_allclose(np.asarray(sums)[0], want, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(counts)[0], np.bincount(a, minlength=40))


@pytest.mark.parametrize("n_iter", [0, 1, 3, 60])
def test_early_stop_is_bit_identical_to_fixed_iterations(n_iter):
  x = _blobs(700, 3, 5, seed=2)
  init = x[:5].copy()
  xs, gs, ms = _layout(x, 128)

  @jax.jit
  def fixed(c):
    # n_iter plain iterations, no convergence test, then a final sweep.
    for _ in range(n_iter):
      _, _, sums, counts = lloyd.sweep(xs, gs, ms, c, accumulate=True)
      c = lloyd.update(c, sums, counts)
    a, sq, _, _ = lloyd.sweep(xs, gs, ms, c, accumulate=False)
    return c, a, sq

  got_c, got_a, got_sq, iters = jax.jit(lloyd.lloyd)(
    xs, gs, ms, init[None], np.int32(n_iter)
  )
  ref_c, ref_a, ref_sq = fixed(init[None])
  np.testing.assert_array_equal(np.asarray(got_c), np.asarray(ref_c))
  np.testing.assert_array_equal(np.asarray(got_a), np.asarray(ref_a))
  np.testing.assert_array_equal(np.asarray(got_sq), np.asarray(ref_sq))
  if n_iter == 60:  # these blobs converge long before 60 iterations
    assert int(iters) < 60
  else:
    assert int(iters) == n_iter


def test_lloyd_on_device_is_bit_identical_to_fit_kmeans():
  x = _blobs(2500, 8, 10, seed=3)
  init = kmeans.kmeanspp_init(x, 10, seed=0)
  km = kmeans.fit_kmeans(x, 10, seed=0, n_iter=7, init_centroids=init)
  tile = kmeans.global_tile(len(x), 10)
  c, a, sq = jax.jit(lambda x, c: lloyd.lloyd_on_device(x, c, 7, tile=tile))(x, init)
  np.testing.assert_array_equal(np.asarray(c), km.centroids)
  np.testing.assert_array_equal(np.asarray(a), km.assign)
  assert float(np.sum(np.asarray(sq), dtype=np.float64)) == km.inertia


def test_sharded_many_tiles_equals_single_device(monkeypatch):
  # Small tiles: every shard walks several steps, and sums and counts are
  # reduced across the 8 devices (the psum of the update).
  monkeypatch.setattr(kmeans, "_STEP_FLOATS", 8 * 16 * 40)
  x = _blobs(3001, 6, 16, seed=4)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  assert kmeans.global_tile(len(x), 16, 8) < len(x) // 8
  single = kmeans.fit_kmeans(x, 16, seed=0, n_iter=12)
  sharded = kmeans.fit_kmeans(x, 16, seed=0, n_iter=12, mesh=mesh)
  np.testing.assert_array_equal(single.assign, sharded.assign)
  np.testing.assert_allclose(single.centroids, sharded.centroids, atol=1e-5)
  assert single.inertia == pytest.approx(sharded.inertia, rel=1e-6)
  a, _ = kmeans.assign_points(x, single.centroids, mesh=mesh)
  np.testing.assert_array_equal(a, single.assign)
