"""OPQ: orthogonal rotation, Procrustes, better than plain PQ on correlated data."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.khqe import opq


def _correlated(n=2000, seed=0):
  """8-d data whose second half is a linear mix of the first half.

  Plain PQ quantises the halves independently and cannot use the
  cross-half correlation; a rotation can pack it into one subspace.
  """
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
  mix = rng.normal(size=(4, 4))
  x = np.concatenate([z, z @ mix + 0.05 * rng.normal(size=(n, 4))], axis=1)
  return x.astype(np.float32)


def _mse(x, q):
  x_hat = opq.decode_opq(opq.encode_opq(x, q), q)
  return float(np.mean(np.sum((x - x_hat) ** 2, axis=1)))


def test_rotation_is_orthogonal():
  q = opq.fit_opq(_correlated(), 2, 16, seed=0, n_iter=5)
  r = q.rotation
  np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-5)
  np.testing.assert_allclose(r.T @ r, np.eye(8), atol=1e-5)
  assert q.codebooks.shape == (2, 16, 4)


def test_procrustes_recovers_a_known_rotation():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(500, 6)).astype(np.float32)
  rot, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  got = np.asarray(opq._procrustes(jnp.asarray(x), jnp.asarray(x @ rot)))
  np.testing.assert_allclose(got, rot, atol=1e-4)


def test_opq_reduces_error_versus_plain_pq():
  x = _correlated()
  pq = opq.fit_opq(x, 2, 16, seed=0, learn_rotation=False)
  np.testing.assert_array_equal(pq.rotation, np.eye(8, dtype=np.float32))
  rotated = opq.fit_opq(x, 2, 16, seed=0, n_iter=20)
  err_pq, err_opq = _mse(x, pq), _mse(x, rotated)
  assert err_opq < 0.8 * err_pq, (err_opq, err_pq)


def test_encode_is_nearest_codeword_per_subspace():
  x = _correlated(n=600, seed=2)
  q = opq.fit_opq(x, 2, 8, seed=0, n_iter=3)
  codes = opq.encode_opq(x[:40], q)
  y = (x[:40].astype(np.float64) - q.mean) @ q.rotation
  for j in range(2):
    part = y[:, j * 4 : (j + 1) * 4]
    d = ((part[:, None] - q.codebooks[j][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes[:, j], d.argmin(1))


def test_bad_dimensions():
  with pytest.raises(ValueError, match="not divisible"):
    opq.fit_opq(np.zeros((100, 5), np.float32), 2, 4)
  with pytest.raises(ValueError, match="n_codes=256"):
    opq.fit_opq(np.zeros((100, 4), np.float32), 2, 256)


@pytest.mark.parametrize(
  "kw",
  [
    dict(pq_init="random", final_retrain=False),
    dict(final_retrain=False),
    dict(final_retrain=True),
    dict(pq_init="random", final_retrain=True),
  ],
)
def test_init_and_final_retrain_options(kw):
  x = _correlated(n=3000, seed=3)
  q = opq.fit_opq(x, 2, 16, seed=0, n_iter=5, max_train_points=1000, **kw)
  np.testing.assert_allclose(q.rotation @ q.rotation.T, np.eye(8), atol=1e-5)
  again = opq.fit_opq(x, 2, 16, seed=0, n_iter=5, max_train_points=1000, **kw)
  np.testing.assert_array_equal(q.codebooks, again.codebooks)
  # Still a real OPQ: better than plain PQ on the correlated data.
  pq = opq.fit_opq(x, 2, 16, seed=0, learn_rotation=False)
  assert _mse(x, q) < 0.8 * _mse(x, pq)
  if kw["final_retrain"]:
    # The final PQ is a fresh fit, not the warm-started one; same rotation.
    warm = opq.fit_opq(
      x,
      2,
      16,
      seed=0,
      n_iter=5,
      max_train_points=1000,
      **{**kw, "final_retrain": False},
    )
    np.testing.assert_array_equal(warm.rotation, q.rotation)
    assert not np.array_equal(warm.codebooks, q.codebooks)


def test_fused_alternation_is_bit_identical_to_the_host_path(monkeypatch):
  # The host path of a warm-started alternation: one fit_kmeans per subspace,
  # the numpy decode, then Procrustes (what fit_opq did before the fusion).
  def host(xc, y, books, n_iter, *, tile):
    del tile
    books, codes = opq._pq_train(
      np.asarray(y),
      np.asarray(books),
      books.shape[1],
      books.shape[0],
      seed=0,
      n_iter=int(n_iter),
      mesh=None,
    )
    y_hat = opq._pq_decode(books, codes)
    return opq._procrustes(xc, jnp.asarray(y_hat)), books

  x = _correlated(n=3000, seed=5)
  fused = opq.fit_opq(x, 2, 16, seed=0, n_iter=4, max_train_points=2000)
  monkeypatch.setattr(opq, "_alternation", host)
  ref = opq.fit_opq(x, 2, 16, seed=0, n_iter=4, max_train_points=2000)
  np.testing.assert_array_equal(fused.rotation, ref.rotation)
  np.testing.assert_array_equal(fused.codebooks, ref.codebooks)


def test_fused_fit_equals_the_same_schedule_step_by_step():
  # fused=True runs the default schedule with y = x R computed by XLA; the
  # reference below takes the same steps one jitted alternation at a time.
  x = _correlated(n=3000, seed=6)
  got = opq.fit_opq(x, 2, 16, seed=0, n_iter=4, max_train_points=2000, fused=True)

  rng = np.random.default_rng(0)
  sample = x[np.sort(rng.choice(3000, size=2000, replace=False))]
  mean = sample.mean(axis=0)
  xc = sample - mean
  rot = np.linalg.qr(rng.normal(size=(8, 8)))[0].astype(np.float32)
  xc_dev = jnp.asarray(xc)
  y_of = lambda r: jnp.matmul(xc_dev, r, precision="highest")  # noqa: E731
  books = opq._init_books(xc @ rot, 16, 2, seed=7, init="kmeans++")
  tile = opq.kmeans.global_tile(2000, 16)
  for it in range(4):
    n_iter = np.int32(40 if it == 0 else 4)
    rot, books = opq._alternation(xc_dev, y_of(rot), books, n_iter, tile=tile)
  rot = np.asarray(rot)
  final = x[np.sort(rng.choice(3000, size=2000, replace=False))] - mean
  books = opq._init_books(final @ rot, 16, 2, seed=7, init="kmeans++")
  _, books = opq._alternation(
    jnp.asarray(final),
    jnp.matmul(jnp.asarray(final), rot, precision="highest"),
    books,
    np.int32(25),
    tile=tile,
  )
  np.testing.assert_allclose(got.rotation, rot, atol=1e-6)
  np.testing.assert_allclose(got.codebooks, np.asarray(books), atol=1e-5)
  np.testing.assert_allclose(got.mean, mean, atol=1e-6)


@pytest.mark.parametrize("rotation_init", ["random", "pca"])
def test_fused_fit_is_a_real_opq_close_to_the_default_path(rotation_init):
  x = _correlated(n=3000, seed=7)
  kw = dict(seed=0, n_iter=8, max_train_points=2000)
  ref = opq.fit_opq(x, 2, 16, **kw)
  got = opq.fit_opq(x, 2, 16, fused=True, rotation_init=rotation_init, **kw)
  np.testing.assert_allclose(got.rotation @ got.rotation.T, np.eye(8), atol=1e-5)
  pq = opq.fit_opq(x, 2, 16, seed=0, learn_rotation=False)
  assert _mse(x, got) < 0.8 * _mse(x, pq)
  # Same recipe, other arithmetic order (or a better start): no more than
  # 5% above the default path's error.
  assert _mse(x, got) < 1.05 * _mse(x, ref)


def test_pca_start_needs_fewer_alternations():
  # Measured on this data: random start, 20 alternations 3.21; PCA start,
  # 2 alternations 3.24 (random start, 2 alternations: 9.89).
  x = _correlated(n=3000, seed=7)
  kw = dict(seed=0, max_train_points=2000, fused=True)
  long_random = _mse(x, opq.fit_opq(x, 2, 16, n_iter=20, **kw))
  short_random = _mse(x, opq.fit_opq(x, 2, 16, n_iter=2, **kw))
  short_pca = _mse(x, opq.fit_opq(x, 2, 16, n_iter=2, rotation_init="pca", **kw))
  assert short_pca < 1.05 * long_random
  assert short_random > 2.0 * long_random


@pytest.mark.parametrize("final_retrain", [True, False])
def test_fused_fit_without_rotation_is_plain_pq(final_retrain):
  x = _correlated(n=1500, seed=8)
  kw = dict(seed=0, learn_rotation=False, final_retrain=final_retrain)
  got = opq.fit_opq(x, 2, 16, fused=True, **kw)
  ref = opq.fit_opq(x, 2, 16, **kw)
  np.testing.assert_array_equal(got.rotation, np.eye(8, dtype=np.float32))
  # y = x I: the fused Lloyd sees the same points as the host path.
  np.testing.assert_allclose(got.codebooks, ref.codebooks, atol=1e-5)


def test_pca_rotation_balances_the_variance_products():
  # Independent axes with known variances: the principal axes are the
  # coordinate axes, dealt largest first to the subspace with the smaller
  # variance product among those not yet full.
  variances = np.array([64.0, 16.0, 8.0, 4.0, 2.0, 1.0])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200_000, 6)) * np.sqrt(variances)
  rot = opq.pca_rotation((x - x.mean(0)).astype(np.float32), 2)
  np.testing.assert_allclose(rot.T @ rot, np.eye(6), atol=1e-5)
  axis_of_column = np.argmax(np.abs(rot), axis=0)
  # Greedy by hand (log products): A={64}, B={16}; 8 -> B (16 < 64):
  # B=128; 4 -> A (64 < 128): A=256; 2 -> B (128 < 256): B full (3 axes);
  # 1 -> A.
  assert sorted(axis_of_column[:3]) == [0, 3, 5]
  assert sorted(axis_of_column[3:]) == [1, 2, 4]


def test_bad_rotation_init():
  with pytest.raises(ValueError, match="rotation_init"):
    opq.fit_opq(_correlated(n=300), 2, 4, rotation_init="eye")
