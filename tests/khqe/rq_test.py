"""RQ-Kmeans: residual identity, parent-conditional level 3, batching."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax import testing
from onesearch_jax.khqe import kmeans, rq


def _data(n=1500, d=8, seed=0):
  return testing.clustered_points(n, d, 30, seed)


@pytest.mark.parametrize("mode", ["parent", "global", "parent_ab"])
def test_residual_reconstruction_identity(mode):
  x = _data()
  books, codes, r3 = rq.fit_rq(x, (16, 8, 4), l3_mode=mode, seed=0, n_iter=5)
  a, b, c = codes.T
  total = books.l1[a] + books.l2[b] + books.level3_vectors(b, c, a) + r3
  np.testing.assert_allclose(total, x, atol=1e-4)
  assert codes.dtype == np.int32
  assert a.max() < 16 and b.max() < 8 and c.max() < 4 and codes.min() >= 0
  expected_l3 = {"parent": (8, 4, 8), "parent_ab": (16 * 8, 4, 8), "global": (4, 8)}
  assert books.l3.shape == expected_l3[mode]


def test_parent_small_groups_get_own_codes_and_group_mean_padding():
  x = _data(n=300, seed=1)
  k3 = 32  # 300 points / k2=16 groups: most groups have <= 32 points
  books, codes, r3 = rq.fit_rq(x, (8, 16, k3), l3_mode="parent", seed=0, n_iter=5)
  b, c = codes[:, 1], codes[:, 2]
  r2 = x - books.l1[codes[:, 0]] - books.l2[b]
  counts = np.bincount(b, minlength=16)
  n_small = 0
  for g in range(16):
    members = np.nonzero(b == g)[0]
    if 0 < members.size <= k3:
      n_small += 1
      # Codes 0..n-1 in input order, zero residual, padding = group mean.
      np.testing.assert_array_equal(c[members], np.arange(members.size))
      np.testing.assert_allclose(r3[members], 0.0, atol=1e-6)
      np.testing.assert_allclose(
        books.l3[g, members.size :],
        np.broadcast_to(r2[members].mean(0), (k3 - members.size, 8)),
        atol=1e-5,
      )
    elif members.size == 0:
      np.testing.assert_array_equal(books.l3[g], 0.0)
  assert n_small > 0 and counts.sum() == 300


def test_parent_big_groups_fitted_in_one_batched_call(monkeypatch):
  calls = []
  real = kmeans.fit_grouped_kmeans

  def spy(*args, **kwargs):
    calls.append(args[2])
    return real(*args, **kwargs)

  monkeypatch.setattr(kmeans, "fit_grouped_kmeans", spy)
  x = _data(n=2000, seed=2)
  books, codes, _ = rq.fit_rq(x, (8, 4, 16), l3_mode="parent", seed=0, n_iter=5)
  counts = np.bincount(codes[:, 1], minlength=4)
  assert len(calls) == 1
  assert calls[0] == int(np.sum(counts > 16))
  # Each big-group point sits at its nearest centroid of its own group.
  r2 = x - books.l1[codes[:, 0]] - books.l2[codes[:, 1]]
  for g in np.nonzero(counts > 16)[0]:
    m = codes[:, 1] == g
    d = ((r2[m][:, None, :] - books.l3[g][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes[m, 2], d.argmin(1))


@pytest.mark.parametrize("mode", ["parent", "global"])
def test_encode_training_points_reproduces_fit_codes(mode):
  x = _data(n=1200, seed=3)
  books, codes, r3 = rq.fit_rq(x, (16, 8, 8), l3_mode=mode, seed=0, n_iter=6)
  enc, mse, r3_enc = rq.encode_rq(x, books)
  np.testing.assert_array_equal(enc, codes)
  np.testing.assert_allclose(r3_enc, r3, atol=1e-5)
  assert mse[2] == pytest.approx(float(np.mean(np.sum(r3**2, 1))), rel=1e-4)
  assert mse[0] > mse[1] > mse[2]


def test_encode_new_points_uses_codebooks_unchanged():
  x = _data(n=1200, seed=4)
  books, _, _ = rq.fit_rq(x, (16, 8, 8), l3_mode="parent", seed=0, n_iter=5)
  before = [books.l1.copy(), books.l2.copy(), books.l3.copy()]
  new = _data(n=50, seed=99)
  codes, _, _ = rq.encode_rq(new, books)
  for arr, old in zip([books.l1, books.l2, books.l3], before, strict=True):
    np.testing.assert_array_equal(arr, old)
  # Brute force: greedy nearest at every level, level 3 within the b group.
  r = new.astype(np.float64)
  a = ((r[:, None] - books.l1[None]) ** 2).sum(-1).argmin(1)
  r = r - books.l1[a]
  b = ((r[:, None] - books.l2[None]) ** 2).sum(-1).argmin(1)
  r = r - books.l2[b]
  c = ((r[:, None] - books.l3[b]) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(codes, np.stack([a, b, c], 1))


def test_bad_l3_mode():
  with pytest.raises(ValueError, match="l3_mode"):
    rq.fit_rq(_data(n=100), (4, 2, 2), l3_mode="balanced")


def test_parent_ab_groups_by_level1_and_level2_pair():
  """--balanced 1: level-3 codes are fitted per (a, b) pair, and encoding the
  training points with the fixed codebooks picks each point's nearest
  centroid inside its own (a, b) group (brute force)."""
  x = _data(n=800)
  books, codes, _ = rq.fit_rq(x, (8, 4, 4), l3_mode="parent_ab", seed=0, n_iter=5)
  enc, _, _ = rq.encode_rq(x, books)
  a, b = enc[:, 0], enc[:, 1]
  r2 = x - books.l1[a] - books.l2[b]
  group = a.astype(np.int64) * 4 + b
  d = ((r2[:, None, :] - books.l3[group]) ** 2).sum(-1)
  np.testing.assert_array_equal(enc[:, 2], d.argmin(1))
  np.testing.assert_array_equal(enc[:, :2], codes[:, :2])
