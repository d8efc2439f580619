"""Parent level 3 encoded by parent tiles equals the per-point fused encoder."""

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
  assert sid_encode.group_tile(16384, 128) == 64  # B / G = 128, capped at 64
  assert sid_encode.group_tile(16384, 1024) == 16
  assert sid_encode.group_tile(128, 128) == 8  # floor of 8 rows
  assert sid_encode.group_tile(1000, 10) == 64
  assert sid_encode.group_tile(1000, 40) == 16  # 25 rounded down to 16
