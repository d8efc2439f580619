"""The fused encoder: parent tiles equal the per-point encoder and brute
force; block dispatch threads and ahead-of-time warm-up change no code."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from onesearch_jax import testing
from onesearch_jax.khqe import kmeans, quantizer, sid_encode


def _fitted(mode, seed=0):
  x = testing.clustered_points(1500, 8, 40, seed)
  cfg = quantizer.QuantizerConfig(
    levels=(16, 8, 8), l3_mode=mode, opq_subspaces=2, opq_codes=16, n_iter=5, opq_iter=3
  )
  return quantizer.fit(x, cfg)


def _books(q):
  return dict(l1=q.rq.l1, l2=q.rq.l2, l3=q.rq.l3, opq=q.opq)


@pytest.mark.parametrize("mode", ["parent", "parent_ab"])
def test_parent_tiles_equal_the_fused_encoder_bit_for_bit(mode, monkeypatch):
  q = _fitted(mode)
  # New points, with many exact duplicates: ties break the same way.
  new = testing.clustered_points(1100, 8, 40, seed=7)
  new[500:700] = new[:200]
  fused = sid_encode._encode_fused(new, mode=mode, **_books(q))
  tiled = sid_encode.encode_blocks(new, mode=mode, **_books(q))
  np.testing.assert_array_equal(tiled[0], fused[0])
  np.testing.assert_allclose(tiled[1], fused[1], rtol=1e-5, atol=1e-5)
  # Many padded assignment calls (48 slots each) give the same codes.
  monkeypatch.setattr(kmeans, "_ASSIGN_CHUNK_POINTS", 48)
  many = sid_encode.encode_blocks(new, mode=mode, **_books(q))
  np.testing.assert_array_equal(many[0], fused[0])


def test_parent_tiles_sharded_equal_single_device():
  q = _fitted("parent", seed=1)
  new = testing.clustered_points(1001, 8, 40, seed=8)  # not a multiple of 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  single = sid_encode.encode_blocks(new, mode="parent", **_books(q))
  sharded = sid_encode.encode_blocks(new, mode="parent", mesh=mesh, **_books(q))
  np.testing.assert_array_equal(sharded[0], single[0])
  np.testing.assert_allclose(sharded[1], single[1], rtol=1e-5, atol=1e-5)


def test_parent_tiles_residual_errors_are_exact():
  q = _fitted("parent", seed=2)
  new = testing.clustered_points(300, 8, 40, seed=9)
  codes, sq = sid_encode.encode_blocks(new, mode="parent", **_books(q))
  a, b, c = codes[:, 0], codes[:, 1], codes[:, 2]
  r = new.astype(np.float64) - q.rq.l1[a] - q.rq.l2[b] - q.rq.l3[b, c]
  np.testing.assert_allclose(sq[:, 2], (r * r).sum(1), rtol=1e-4, atol=1e-5)
  # The level-3 code is the nearest centroid of the point's parent group.
  r2 = new.astype(np.float64) - q.rq.l1[a] - q.rq.l2[b]
  d = ((r2[:, None, :] - q.rq.l3[b]) ** 2).sum(-1)
  np.testing.assert_array_equal(c, d.argmin(1))


@pytest.mark.parametrize(
  "n,groups,tile,skew",
  [
    (64, 5, 8, "uniform"),  # every group has points
    (64, 40, 8, "uniform"),  # more groups than tiles of points, some empty
    (128, 6, 16, "one"),  # all points in one group: many tiles of one group
    (96, 7, 64, "two"),  # two groups, tiles larger than some groups
  ],
)
def test_in_block_group_tiles_equal_brute_force(n, groups, tile, skew):
  rng = np.random.default_rng(n + groups)
  r = rng.standard_normal((n, 6)).astype(np.float32)
  l3 = rng.standard_normal((groups, 5, 6)).astype(np.float32)
  g = {
    "uniform": rng.integers(0, groups, n),
    "one": np.full(n, groups - 1),
    "two": rng.choice([0, groups - 1], n),
  }[skew].astype(np.int32)
  c, cc = jax.jit(sid_encode._nearest_in_group_tiles, static_argnums=3)(r, g, l3, tile)
  d = ((r[:, None, :].astype(np.float64) - l3[g]) ** 2).sum(-1)
  np.testing.assert_array_equal(np.asarray(c), d.argmin(1))
  np.testing.assert_array_equal(np.asarray(cc), l3[g, d.argmin(1)])


def test_group_tile_rows():
  assert sid_encode.group_tile(8192, 128) == 32  # B / G = 64, capped at 32
  assert sid_encode.group_tile(8192, 512) == 16
  assert sid_encode.group_tile(128, 128) == 8  # floor of 8 rows
  assert sid_encode.group_tile(1000, 10) == 32
  assert sid_encode.group_tile(1000, 40) == 16  # 25 rounded down to 16


@pytest.mark.parametrize("n_groups", [7, 2**31])  # the int32 key; the fallback
def test_group_order_is_the_stable_sort_by_group(n_groups):
  g = np.random.default_rng(0).integers(0, 7, 300).astype(np.int32)
  order, g_sorted = jax.jit(sid_encode._group_order, static_argnums=1)(g, n_groups)
  np.testing.assert_array_equal(np.asarray(order), np.argsort(g, kind="stable"))
  np.testing.assert_array_equal(np.asarray(g_sorted), np.sort(g))


def _brute_force_codes(x, q):
  """Nearest-centroid codes level by level in float64 numpy (no tiles, no
  blocks, no grouping): what the encoder must reproduce."""
  r = x.astype(np.float64)

  def nearest(v, books):  # v [N, D], books [N, K, D] or [K, D]
    books = books if books.ndim == 3 else books[None]
    return ((v[:, None, :] - books) ** 2).sum(-1).argmin(1)

  a = nearest(r, q.rq.l1)
  r = r - q.rq.l1[a]
  b = nearest(r, q.rq.l2)
  r = r - q.rq.l2[b]
  l3 = q.rq.l3[q.rq.l3_groups(a, b)] if q.rq.l3.ndim == 3 else q.rq.l3
  c = nearest(r, l3)
  r = r - q.rq.level3_vectors(b, c, a)
  y = (r - q.opq.mean) @ q.opq.rotation
  d = [
    nearest(part, q.opq.codebooks[j])
    for j, part in enumerate(np.split(y, q.opq.n_subspaces, axis=1))
  ]
  return np.stack([a, b, c, *d], axis=1)


@pytest.mark.parametrize("mode", ["global", "parent", "parent_ab"])
def test_encode_equals_brute_force_nearest_centroids(mode, monkeypatch):
  q = _fitted(mode, seed=3)
  new = testing.clustered_points(700, 8, 40, seed=12)
  want = _brute_force_codes(new, q)
  np.testing.assert_array_equal(
    sid_encode.encode_blocks(new, mode=mode, **_books(q))[0], want
  )
  # Many 64-point blocks (the last one padded) and 8-row tiles.
  monkeypatch.setattr(sid_encode, "_MAX_BLOCK", 64)
  monkeypatch.setattr(sid_encode, "_NEAREST_TILE_ROWS", 8)
  got = sid_encode.encode_blocks(new, mode=mode, **_books(q))[0]
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["parent", "parent_ab"])
def test_dispatch_threads_give_the_same_codes(mode, monkeypatch):
  q = _fitted(mode, seed=4)
  new = testing.clustered_points(1000, 8, 40, seed=13)
  monkeypatch.setattr(sid_encode, "_MAX_BLOCK", 128)  # 8 blocks, the last padded
  one = sid_encode.encode_blocks(new, mode=mode, dispatch_threads=1, **_books(q))
  for threads in (2, 3, 16):
    many = sid_encode.encode_blocks(
      new, mode=mode, dispatch_threads=threads, **_books(q)
    )
    np.testing.assert_array_equal(many[0], one[0])
    np.testing.assert_array_equal(many[1], one[1])
  np.testing.assert_array_equal(one[0], _brute_force_codes(new, q))


@pytest.mark.parametrize("mode", ["global", "parent", "parent_ab"])
def test_warm_up_then_encode_compiles_nothing_and_equals_encode(mode):
  # D = 10: shapes no other test compiles.
  x = testing.clustered_points(900, 10, 30, seed=5)
  cfg = quantizer.QuantizerConfig(
    levels=(16, 4, 4), l3_mode=mode, opq_subspaces=2, opq_codes=16, n_iter=4, opq_iter=2
  )
  q = quantizer.fit(x, cfg)
  new = testing.clustered_points(333, 10, 30, seed=6)
  shapes = quantizer.codebook_shapes(cfg, 10)
  assert shapes["l3"] == q.rq.l3.shape and shapes["opq"][2] == q.opq.codebooks.shape
  with testing.compiled_programs() as warm:
    n_programs = sid_encode.warm_up(len(new), 10, mode=mode, **shapes)
  assert n_programs == (2 if mode == "parent_ab" else 1)
  assert sum(warm.values()) >= n_programs
  with testing.compiled_programs() as during:
    codes, sq = q.encode_with_errors(new)
  # parent_ab's host grouping step compiles its own assignment sweep.
  assert not any("_block" in str(name) for name in during), during
  np.testing.assert_array_equal(codes, _brute_force_codes(new, q))
  # The warmed-up executables give what a fresh compilation gives.
  sid_encode._EXECUTABLES.clear()
  again = q.encode_with_errors(new)
  np.testing.assert_array_equal(again[0], codes)
  np.testing.assert_array_equal(again[1], sq)


def test_fit_encode_warm_encode_changes_nothing_but_compiles_ahead():
  # D = 12: shapes no other test compiles.
  x = testing.clustered_points(1100, 12, 30, seed=7)
  cfg = quantizer.QuantizerConfig(
    levels=(16, 8, 4), opq_subspaces=2, opq_codes=16, n_iter=4, opq_iter=2
  )
  q, codes, sq = quantizer.fit_encode(x, cfg, warm_encode=True)
  with testing.compiled_programs() as first:
    again = q.encode(x)
  assert not any("_block" in str(name) for name in first), first
  q0, codes0, sq0 = quantizer.fit_encode(x, cfg)
  np.testing.assert_array_equal(codes, codes0)
  np.testing.assert_array_equal(sq, sq0)
  np.testing.assert_array_equal(q.rq.l3, q0.rq.l3)
  np.testing.assert_array_equal(q.opq.codebooks, q0.opq.codebooks)
  np.testing.assert_array_equal(again, codes)
