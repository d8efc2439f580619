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
