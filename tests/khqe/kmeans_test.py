"""k-means against a brute-force numpy reference, fixed points, sharding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.khqe import kmeans, kmeans_init
from onesearch_jax.testing import compiled_programs


def _blobs(n, d, n_centers, seed, spread=6.0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(n_centers, d)) * spread
  labels = rng.integers(0, n_centers, size=n)
  return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32)


def _numpy_lloyd(x, init, n_iter):
  """Plain Lloyd in float64 (reference; data chosen so no cluster empties)."""
  c = init.astype(np.float64)
  x64 = x.astype(np.float64)
  for _ in range(n_iter):
    d = ((x64[:, None, :] - c[None]) ** 2).sum(-1)
    a = d.argmin(1)
    for j in range(c.shape[0]):
      assert np.any(a == j), "reference assumes no empty cluster"
      c[j] = x64[a == j].mean(0)
  d = ((x64[:, None, :] - c[None]) ** 2).sum(-1)
  return c, d.argmin(1), d.min(1).sum()


def _mesh8():
  return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def test_matches_numpy_reference_given_same_init():
  x = _blobs(300, 3, 6, seed=1)
  init = kmeans.kmeanspp_init(x, 6, seed=0)
  km = kmeans.fit_kmeans(x, 6, seed=0, n_iter=8, init_centroids=init)
  ref_c, ref_a, ref_inertia = _numpy_lloyd(x, init, 8)
  np.testing.assert_array_equal(km.assign, ref_a)
  np.testing.assert_allclose(km.centroids, ref_c, rtol=1e-4, atol=1e-4)
  assert km.inertia == pytest.approx(ref_inertia, rel=1e-4)


def test_lloyd_fixed_point():
  x = _blobs(400, 4, 5, seed=2)
  km = kmeans.fit_kmeans(x, 5, seed=3, n_iter=40)
  d = ((x[:, None, :] - km.centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(km.assign, d.argmin(1))
  for j in range(5):
    np.testing.assert_allclose(km.centroids[j], x[km.assign == j].mean(0), atol=1e-4)
  assert km.inertia == pytest.approx(d.min(1).sum(), rel=1e-4)


def test_chunked_assignment_equals_brute_force(monkeypatch):
  # A tiny distance-block budget forces many small chunks.
  monkeypatch.setattr(kmeans, "_STEP_FLOATS", 512)
  rng = np.random.default_rng(4)
  x = rng.normal(size=(1001, 5)).astype(np.float32)
  c = rng.normal(size=(64, 5)).astype(np.float32)
  a, sq = kmeans.assign_points(x, c)
  d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(a, d.argmin(1))
  np.testing.assert_allclose(sq, d.min(1), rtol=1e-4, atol=1e-4)


def test_sharded_equals_single_device():
  x = _blobs(1003, 6, 12, seed=5)  # N not divisible by 8: exercises padding
  single = kmeans.fit_kmeans(x, 12, seed=0, n_iter=10)
  sharded = kmeans.fit_kmeans(x, 12, seed=0, n_iter=10, mesh=_mesh8())
  np.testing.assert_array_equal(single.assign, sharded.assign)
  np.testing.assert_allclose(single.centroids, sharded.centroids, atol=1e-5)
  assert single.inertia == pytest.approx(sharded.inertia, rel=1e-6)


def test_grouped_sharded_equals_single_device():
  x = _blobs(900, 4, 9, seed=6)
  group = np.random.default_rng(0).integers(0, 5, size=900)
  single = kmeans.fit_grouped_kmeans(x, group, 5, 7, seed=1, n_iter=6)
  sharded = kmeans.fit_grouped_kmeans(x, group, 5, 7, seed=1, n_iter=6, mesh=_mesh8())
  np.testing.assert_array_equal(single.assign, sharded.assign)
  np.testing.assert_allclose(single.centroids, sharded.centroids, atol=1e-5)


def test_determinism_by_seed():
  x = _blobs(500, 4, 8, seed=7)
  a = kmeans.fit_kmeans(x, 8, seed=11, n_iter=5)
  b = kmeans.fit_kmeans(x, 8, seed=11, n_iter=5)
  np.testing.assert_array_equal(a.centroids, b.centroids)
  np.testing.assert_array_equal(a.assign, b.assign)
  i1 = kmeans.kmeanspp_init(x, 8, seed=11)
  i2 = kmeans.kmeanspp_init(x, 8, seed=12)
  assert not np.array_equal(i1, i2)


def test_kmeanspp_init_picks_distinct_data_points():
  x = _blobs(200, 3, 4, seed=8)
  init = kmeans.kmeanspp_init(x, 10, seed=0)
  # Every centroid is one of the points and no point is picked twice.
  matches = [np.nonzero((x == c).all(1))[0] for c in init]
  assert all(m.size >= 1 for m in matches)
  assert len({int(m[0]) for m in matches}) == 10


def test_empty_cluster_is_repaired_by_splitting_largest():
  rng = np.random.default_rng(9)
  x = np.concatenate(
    [rng.normal(size=(150, 2)) + [0, 0], rng.normal(size=(50, 2)) + [20, 0]]
  ).astype(np.float32)
  # Centroid 2 is far from everything: empty after the first assignment.
  init = np.array([[0, 0], [20, 0], [1000, 1000]], np.float32)
  one = kmeans.fit_kmeans(x, 3, seed=0, n_iter=1, init_centroids=init)
  big_mean = x[:150].mean(0)
  # After one update the empty centroid becomes a split of the largest one.
  sign = np.array([1.0, -1.0])
  np.testing.assert_allclose(
    one.centroids[2], big_mean * (1 + sign / 1024), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    one.centroids[0], big_mean * (1 - sign / 1024), rtol=1e-5, atol=1e-6
  )
  many = kmeans.fit_kmeans(x, 3, seed=0, n_iter=30, init_centroids=init)
  assert np.all(np.bincount(many.assign, minlength=3) > 0)


def test_max_points_per_centroid_subsamples_then_assigns_all():
  x = _blobs(2000, 3, 4, seed=10)
  km = kmeans.fit_kmeans(x, 4, seed=0, n_iter=10, max_points_per_centroid=50)
  d = ((x[:, None, :] - km.centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(km.assign, d.argmin(1))


def test_sample_holding_every_point_equals_the_full_fit():
  x = _blobs(800, 3, 5, seed=13)
  full = kmeans.fit_kmeans(x, 5, seed=2, n_iter=8)
  for cap in (160, 1000):  # 160 * 5 = 800 = N: the sample is every point
    same = kmeans.fit_kmeans(x, 5, seed=2, n_iter=8, max_points_per_centroid=cap)
    np.testing.assert_array_equal(same.centroids, full.centroids)
    np.testing.assert_array_equal(same.assign, full.assign)
  group = np.arange(800) % 4
  gfull = kmeans.fit_grouped_kmeans(x, group, 4, 5, seed=2, n_iter=8)
  gsame = kmeans.fit_grouped_kmeans(
    x, group, 4, 5, seed=2, n_iter=8, max_points_per_centroid=40
  )  # 40 * 5 = 200 = every group's size
  np.testing.assert_array_equal(gsame.centroids, gfull.centroids)
  np.testing.assert_array_equal(gsame.assign, gfull.assign)


def test_sampled_fit_is_lloyd_on_the_sample_then_assigns_all():
  x = _blobs(3000, 4, 6, seed=14)
  km = kmeans.fit_kmeans(x, 6, seed=5, n_iter=12, max_points_per_centroid=100)
  # The documented sample: 100 * 6 seeded rows (seed + 1), k-means++ init of x.
  rows = np.sort(np.random.default_rng(6).choice(3000, size=600, replace=False))
  init = kmeans.kmeanspp_init(x, 6, seed=5)
  ref_c, _, _ = _numpy_lloyd(x[rows], init, 12)
  np.testing.assert_allclose(km.centroids, ref_c, rtol=1e-4, atol=1e-4)
  d = ((x[:, None, :].astype(np.float64) - km.centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(km.assign, d.argmin(1))
  assert km.inertia == pytest.approx(d.min(1).sum(), rel=1e-4)


def test_grouped_sampling_caps_only_the_big_groups():
  x = _blobs(1400, 3, 8, seed=15)
  group = np.repeat([0, 1, 2], [1000, 200, 200])  # cap 40 * 5 = 200
  full = kmeans.fit_grouped_kmeans(x, group, 3, 5, seed=3, n_iter=30)
  capped = kmeans.fit_grouped_kmeans(
    x, group, 3, 5, seed=3, n_iter=30, max_points_per_centroid=40
  )
  # Groups under the cap train on all their points: the same fit.
  for g in (1, 2):
    np.testing.assert_array_equal(capped.assign[group == g], full.assign[group == g])
    np.testing.assert_allclose(capped.centroids[g], full.centroids[g], atol=1e-5)
  # The big group's 1000 points are all assigned to their nearest centroid.
  for g in range(3):
    xg = x[group == g].astype(np.float64)
    d = ((xg[:, None, :] - capped.centroids[g][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(capped.assign[group == g], d.argmin(1))
    np.testing.assert_allclose(
      capped.sqdist[group == g], d.min(1), rtol=1e-4, atol=1e-4
    )
  # ... and its centroids are means of at most 200 of them: converged Lloyd on
  # a 200-point subset is not the full fixed point.
  assert not np.allclose(capped.centroids[0], full.centroids[0], atol=1e-3)


def test_grouped_fixed_point_per_group():
  x = _blobs(600, 3, 6, seed=12)
  group = np.arange(600) % 3
  gk = kmeans.fit_grouped_kmeans(x, group, 3, 4, seed=0, n_iter=40)
  for g in range(3):
    xg, ag = x[group == g], gk.assign[group == g]
    d = ((xg[:, None, :] - gk.centroids[g][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ag, d.argmin(1))
    for j in np.unique(ag):
      np.testing.assert_allclose(gk.centroids[g, j], xg[ag == j].mean(0), atol=1e-4)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="at least k=5"):
    kmeans.fit_kmeans(np.zeros((3, 2), np.float32), 5, seed=0)
  x = np.ones((10, 2), np.float32)
  x[7, 1] = np.nan
  with pytest.raises(ValueError, match="point 7"):
    kmeans.fit_kmeans(x, 2, seed=0)
  with pytest.raises(ValueError, match="group 1 has 2 points"):
    kmeans.fit_grouped_kmeans(
      np.zeros((12, 2), np.float32), np.array([0] * 10 + [1] * 2), 2, 3, seed=0
    )


def test_random_init_picks_distinct_input_points_by_seed():
  x = _blobs(500, 3, 5, seed=8)
  init = kmeans.random_init(x, 7, seed=4)
  rows = {tuple(r) for r in x.tolist()}
  assert init.shape == (7, 3) and all(tuple(r) in rows for r in init.tolist())
  assert len({tuple(r) for r in init.tolist()}) == 7
  np.testing.assert_array_equal(init, kmeans.random_init(x, 7, seed=4))
  assert not np.array_equal(init, kmeans.random_init(x, 7, seed=5))
  # fit_kmeans(init="random") is Lloyd from exactly that start.
  km = kmeans.fit_kmeans(x, 7, seed=4, n_iter=6, init="random")
  ref = kmeans.fit_kmeans(x, 7, seed=4, n_iter=6, init_centroids=init)
  np.testing.assert_array_equal(km.assign, ref.assign)
  np.testing.assert_allclose(km.centroids, ref.centroids, atol=1e-6)
  with pytest.raises(ValueError, match="init must be one of"):
    kmeans.fit_kmeans(x, 7, seed=0, init="forgy")


@functools.partial(jax.jit, static_argnames=("k",))
def _unpadded_kmeanspp(sample, key, *, k):
  """The k-means++ draws on an unpadded [m, D] sample with a static k (the
  program every init compiled for itself before the padded one)."""
  m, d = sample.shape
  key0, key = jax.random.split(key)
  c0 = sample[jax.random.randint(key0, (), 0, m)]
  d2 = jnp.sum((sample - c0) ** 2, axis=-1)
  keys = jax.random.split(key, k)

  def body(i, carry):
    cents, d2 = carry
    w = jnp.where(jnp.sum(d2) > 0, d2, jnp.ones_like(d2))
    cdf = jnp.cumsum(w)
    u = jax.random.uniform(keys[i]) * cdf[-1]
    c = sample[jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, m - 1)]
    return cents.at[i].set(c), jnp.minimum(d2, jnp.sum((sample - c) ** 2, axis=-1))

  start = (jnp.zeros((k, d), sample.dtype).at[0].set(c0), d2)
  return jax.lax.fori_loop(1, k, body, start)[0]


@pytest.mark.parametrize(
  "n, d, k, oversample",
  [
    (3000, 12, 40, 8),  # m = 320 rows, 12 of 16 dims padded
    (90, 5, 20, 8),  # m = n = 90 < 8k
    (700, 16, 90, 8),  # m = 700 > the patched 512-row block: a bigger bucket
    (60, 20, 30, 2),  # d = 20 > the patched 16-dim block
  ],
)
def test_padded_kmeanspp_draws_equal_an_unpadded_run(monkeypatch, n, d, k, oversample):
  # A small block so the test's shapes pad in rows and dims.
  monkeypatch.setattr(kmeans_init, "_PP_ROWS", 512)
  monkeypatch.setattr(kmeans_init, "_PP_DIM", 16)
  x = _blobs(n, d, 7, seed=n + d)
  # Seeds past int32 and uint32: the key made inside the program is the
  # eager jax.random.key(seed) the unpadded run gets.
  for seed in (0, 1, 2, 2**31 + 3, 2**32 + 5):
    got = kmeans.kmeanspp_init(x, k, seed=seed, init_oversample=oversample)
    # The same host subsample as kmeanspp_init, then the unpadded program.
    rng = np.random.default_rng(seed)
    m = min(n, oversample * k)
    idx = np.sort(rng.choice(n, size=m, replace=False))
    want = _unpadded_kmeanspp(jnp.asarray(x[idx]), jax.random.key(seed), k=k)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_padded_kmeanspp_with_duplicates_falls_back_to_uniform_on_real_rows(
  monkeypatch,
):
  monkeypatch.setattr(kmeans_init, "_PP_ROWS", 512)
  monkeypatch.setattr(kmeans_init, "_PP_DIM", 16)
  # 6 distinct points, k = 15: after 6 draws every weight is 0, so the rest
  # are drawn uniformly, and only among the real (non-padding) rows.
  x = np.repeat(_blobs(6, 4, 3, seed=3), 5, axis=0)
  for seed in range(3):
    got = kmeans.kmeanspp_init(x, 15, seed=seed)
    assert len({tuple(c) for c in got}) == 6
    assert all((x == c).all(1).any() for c in got)  # never a zero padding row
    want = _unpadded_kmeanspp(jnp.asarray(x), jax.random.key(seed), k=15)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_kmeanspp_inits_of_other_k_m_and_d_share_one_program(monkeypatch):
  monkeypatch.setattr(kmeans_init, "_PP_ROWS", 256)
  monkeypatch.setattr(kmeans_init, "_PP_DIM", 8)
  x = _blobs(400, 8, 5, seed=5)
  with compiled_programs() as first:
    kmeans.kmeanspp_init(x, 30, seed=0)  # m = 240 rows, 8 dims
  # A [256, 8] block no other test uses: compiled here, once.
  assert first["jit(_kmeanspp)"] == 1, first
  with compiled_programs() as counts:
    kmeans.kmeanspp_init(x, 9, seed=1)  # m = 72
    kmeans.kmeanspp_init(x[:, :5], 16, seed=2)  # D = 5
    kmeans.kmeanspp_init(x[:100], 20, seed=3)  # m = n = 100
  assert counts["jit(_kmeanspp)"] == 0, counts


@pytest.mark.parametrize("parts", [2, 3, 7, 10])  # 10: one group per part
@pytest.mark.parametrize("n_iter", [3, 60])  # stops mid-way / at fixed points
def test_grouped_parts_equal_one_execution_bit_for_bit(monkeypatch, parts, n_iter):
  # Uneven groups (8 to 700 points, tiles of 64 rows), some groups with an
  # empty cluster to repair: each part must give its groups the same tiles
  # in the same order as the single execution, and stop at its own fixed
  # point without changing anything.
  rng = np.random.default_rng(21)
  sizes = np.array([700, 8, 9, 300, 64, 65, 260, 8, 129, 400])
  group = rng.permutation(np.repeat(np.arange(sizes.size), sizes))
  x = _blobs(group.size, 5, 12, seed=22)
  x[group == 1] = x[group == 1][:1]  # identical points: clusters empty out
  monkeypatch.setattr(kmeans, "_GROUP_PARTS", 1)
  one = kmeans.fit_grouped_kmeans(x, group, sizes.size, 8, seed=4, n_iter=n_iter)
  monkeypatch.setattr(kmeans, "_GROUP_PARTS", parts)
  split = kmeans.fit_grouped_kmeans(x, group, sizes.size, 8, seed=4, n_iter=n_iter)
  np.testing.assert_array_equal(split.centroids, one.centroids)
  np.testing.assert_array_equal(split.assign, one.assign)
  np.testing.assert_array_equal(split.sqdist, one.sqdist)
  # Not a vacuous comparison: the fit moved the random init and reached the
  # per-group nearest-centroid assignment.
  for g in range(sizes.size):
    d = ((x[group == g][:, None] - one.centroids[g][None]) ** 2).sum(-1)
    np.testing.assert_allclose(one.sqdist[group == g], d.min(1), rtol=1e-4, atol=1e-4)


def test_grouped_parts_use_one_compilation(monkeypatch):
  monkeypatch.setattr(kmeans, "_GROUP_PARTS", 2)
  kmeans._compiled.cache_clear()
  rng = np.random.default_rng(3)
  group = np.repeat([0, 1, 2], [300, 40, 90])  # unequal parts, padded alike
  x = rng.normal(size=(group.size, 4)).astype(np.float32)
  with compiled_programs() as programs:
    kmeans.fit_grouped_kmeans(x, group, 3, 6, seed=0, n_iter=4)
  assert programs["jit(lloyd)"] == 1, programs


def test_split_groups_balances_tiles_in_contiguous_ranges():
  tiles = np.array([10, 1, 1, 1, 1, 1, 1, 1, 1, 2])
  assert kmeans.split_groups(tiles, 2) == [(0, 1), (1, 10)]
  assert kmeans.split_groups(np.ones(6, int), 3) == [(0, 2), (2, 4), (4, 6)]
  assert kmeans.split_groups(np.ones(2, int), 5) == [(0, 1), (1, 2)]
  assert kmeans.split_groups(np.ones(4, int), 1) == [(0, 4)]
  assert kmeans.split_groups(np.array([1, 5]), 2) == [(0, 1), (1, 2)]
  assert kmeans.split_groups(np.array([1, 1, 9]), 2) == [(0, 2), (2, 3)]
  for seed in range(20):
    t = np.random.default_rng(seed).integers(1, 50, size=17)
    ranges = kmeans.split_groups(t, 2)
    assert ranges[0][0] == 0 and ranges[-1][1] == 17
    assert all(lo < hi for lo, hi in ranges)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    # the larger part is no larger than half plus the largest group
    assert max(t[lo:hi].sum() for lo, hi in ranges) <= t.sum() / 2 + t.max()


@pytest.mark.parametrize(
  "n,k,shards", [(1000, 4, 1), (1003, 5, 3), (77, 3, 8), (5, 64, 8)]
)
def test_global_layout_copies_points_in_order(n, k, shards):
  # The one-group layout copies runs of points instead of gathering them:
  # every valid slot holds the point its index names, padding is zero.
  x = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
  lay = kmeans._make_layout(x, np.zeros(n, np.int64), 1, k, shards)
  assert sorted(lay.index[lay.mask].tolist()) == list(range(n))
  np.testing.assert_array_equal(lay.x[lay.mask], x[lay.index[lay.mask]])
  assert not lay.x[~lay.mask].any()


def test_layout_of_chosen_rows_and_padded_steps():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(50, 3)).astype(np.float32)
  rows = np.array([1, 4, 5, 9, 20, 33, 49])
  group = np.array([1, 0, 1, 0, 0, 1, 1])
  lay = kmeans._make_layout(x, group, 2, 2, 1, rows=rows, tile=16, min_steps=5)
  assert lay.x.shape[0] == 5  # padded with masked steps
  np.testing.assert_array_equal(lay.x[lay.mask], x[rows[lay.index[lay.mask]]])
  # points of one group in one tile, in row order
  for t in range(lay.group.shape[2]):
    idx = lay.index[0, 0, t][lay.mask[0, 0, t]]
    assert np.all(group[idx] == lay.group[0, 0, t]) and np.all(np.diff(idx) > 0)
