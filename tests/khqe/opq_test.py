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
