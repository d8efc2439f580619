"""RQ-OPQ quantiser: codes, SID strings, scaling rule, determinism, sharding."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from onesearch_jax import testing
from onesearch_jax.khqe import quantizer, sid_encode


def _emb(n=1200, d=8, seed=0):
  return testing.clustered_points(n, d, 40, seed)


_CFG = quantizer.QuantizerConfig(
  levels=(16, 8, 4), opq_subspaces=2, opq_codes=16, n_iter=5, opq_iter=3, seed=0
)


@pytest.fixture(scope="module")
def fitted():
  x = _emb()
  return x, quantizer.fit(x, _CFG)


def test_encode_shape_and_ranges(fitted):
  x, q = fitted
  codes = q.encode(x)
  assert codes.shape == (1200, 5) and codes.dtype == np.int32
  for col, k in enumerate((16, 8, 4, 16, 16)):
    assert 0 <= codes[:, col].min() and codes[:, col].max() < k


def test_rq_centroid_embeddings_plus_residual_is_input(fitted):
  x, q = fitted
  codes = q.encode(x)
  cents = q.rq_centroid_embeddings(codes)
  assert cents.shape == (1200, 3, 8)
  errs = q.reconstruction_errors(x)
  r3 = x - cents.sum(1)
  assert errs["l3"] == pytest.approx(float(np.mean(np.sum(r3**2, 1))), rel=1e-4)
  # Each level removes error.
  assert errs["input"] > errs["l1"] > errs["l2"] > errs["l3"] > errs["opq"]


def test_incremental_assignment_keeps_codebooks(fitted):
  x, q = fitted
  before = (q.rq.l1.copy(), q.rq.l3.copy(), q.opq.rotation.copy())
  new = _emb(n=30, seed=7)
  codes = q.encode(new)
  assert codes.shape == (30, 5)
  np.testing.assert_array_equal(q.rq.l1, before[0])
  np.testing.assert_array_equal(q.rq.l3, before[1])
  np.testing.assert_array_equal(q.opq.rotation, before[2])
  # Encoding is per point: new points in a batch with old ones get the same codes.
  both = q.encode(np.concatenate([x[:20], new]))
  np.testing.assert_array_equal(both[20:], codes)


def test_determinism_by_seed(fitted):
  x, q = fitted
  again = quantizer.fit(x, _CFG)
  np.testing.assert_array_equal(again.encode(x), q.encode(x))
  np.testing.assert_array_equal(again.rq.l3, q.rq.l3)


def test_sharded_fit_equals_single_device(fitted):
  x, q = fitted
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  cfg = quantizer.QuantizerConfig(levels=(16, 8, 4), opq_subspaces=0, n_iter=5, seed=0)
  single = quantizer.fit(x, cfg)
  sharded = quantizer.fit(x, cfg, mesh=mesh)
  np.testing.assert_array_equal(single.encode(x), sharded.encode(x, mesh=mesh))
  np.testing.assert_allclose(single.rq.l3, sharded.rq.l3, atol=1e-5)


def test_sid_token_strings_format_and_offset():
  codes = np.array([[3558, 477, 161, 191, 68], [0, 0, 0, 0, 0]])
  assert quantizer.sid_token_strings(codes) == [
    "<a_3558><b_477><c_161><d_191><d_324>",
    "<a_0><b_0><c_0><d_0><d_256>",
  ]
  # s subspaces: offset j * opq_codes.
  assert quantizer.sid_token_strings(np.array([[1, 2, 3, 4, 5, 6]]), opq_codes=10) == [
    "<a_1><b_2><c_3><d_4><d_15><d_26>"
  ]
  assert quantizer.sid_token_strings(np.array([[1, 2, 3]])) == ["<a_1><b_2><c_3>"]


def test_scaled_rule():
  assert quantizer.QuantizerConfig.scaled(20_000_000).levels == (4096, 1024, 512)
  assert quantizer.QuantizerConfig.scaled(10_000_000).levels == (4096, 1024, 512)
  small = quantizer.QuantizerConfig.scaled(200_000)
  assert small.levels == (512, 128, 64) and small.opq_codes == 256
  tiny = quantizer.QuantizerConfig.scaled(100, l3_mode="global")
  assert tiny.levels == (8, 2, 2) and tiny.opq_codes == 16 and tiny.l3_mode == "global"


def test_config_validation():
  with pytest.raises(ValueError, match="l3_mode"):
    quantizer.QuantizerConfig(l3_mode="both")
  with pytest.raises(ValueError, match="levels"):
    quantizer.QuantizerConfig(levels=(4, 4))
  with pytest.raises(ValueError, match="max_points_per_centroid"):
    quantizer.QuantizerConfig(max_points_per_centroid=0)
  with pytest.raises(ValueError, match="opq_rotation_init"):
    quantizer.QuantizerConfig(opq_rotation_init="eye")
  with pytest.raises(ValueError, match="opq_iter_pq0"):
    quantizer.QuantizerConfig(opq_iter_pq0=0)
  with pytest.raises(ValueError, match="opq_pq_init"):
    quantizer.QuantizerConfig(opq_pq_init="zeros")


def _greedy_codes(x, q):
  """Brute-force float64 reference of Quantizer.encode."""
  r = x.astype(np.float64)
  a = ((r[:, None] - q.rq.l1[None]) ** 2).sum(-1).argmin(1)
  r = r - q.rq.l1[a]
  b = ((r[:, None] - q.rq.l2[None]) ** 2).sum(-1).argmin(1)
  r = r - q.rq.l2[b]
  g = q.rq.l3_groups(a, b) if q.rq.l3.ndim == 3 else None
  l3 = q.rq.l3[g] if g is not None else q.rq.l3[None]
  c = ((r[:, None] - l3) ** 2).sum(-1).argmin(1)
  r = r - q.rq.level3_vectors(b, c, a)
  y = (r - q.opq.mean) @ q.opq.rotation
  d = [
    ((part[:, None] - q.opq.codebooks[j][None]) ** 2).sum(-1).argmin(1)
    for j, part in enumerate(np.split(y, q.opq.n_subspaces, axis=1))
  ]
  return np.stack([a, b, c, *d], axis=1)


@pytest.mark.parametrize("mode", ["global", "parent", "parent_ab"])
def test_fit_encode_codes_equal_encode_and_errors(mode):
  x = _emb(n=900, seed=3)
  cfg = quantizer.QuantizerConfig(
    levels=(16, 8, 4),
    l3_mode=mode,
    opq_subspaces=2,
    opq_codes=16,
    n_iter=5,
    opq_iter=3,
  )
  q, codes, sq = quantizer.fit_encode(x, cfg)
  np.testing.assert_array_equal(codes, q.encode(x))
  # The fitted quantiser equals plain fit (same seed) ...
  np.testing.assert_array_equal(quantizer.fit(x, cfg).rq.l3, q.rq.l3)
  # ... and the per-level errors are those of re-encoding.
  errs = q.reconstruction_errors(x)
  got = quantizer.mean_errors(x, sq)
  for name in ("input", "l1", "l2", "l3", "opq"):
    assert got[name] == pytest.approx(errs[name], rel=1e-4), name
  # Against the brute-force greedy encoder (nothing fitted is re-fitted).
  new = _emb(n=200, seed=11)
  np.testing.assert_array_equal(q.encode(new), _greedy_codes(new, q))


@pytest.mark.parametrize("mode", ["global", "parent"])
def test_sampled_rq_fit(mode):
  x = _emb(n=900, seed=4)
  cfg = dataclasses.replace(_CFG, l3_mode=mode)
  q, codes, _ = quantizer.fit_encode(x, cfg)
  # A sample that holds every point (900 <= 225 * k3) is the full fit.
  whole = dataclasses.replace(cfg, max_points_per_centroid=225)
  q_all, codes_all, _ = quantizer.fit_encode(x, whole)
  np.testing.assert_array_equal(codes_all, codes)
  np.testing.assert_array_equal(q_all.rq.l3, q.rq.l3)
  # A real sample (levels 1 and 2 train on 4 * k points): the fitted codes
  # are still every point's nearest codes under the fitted codebooks.
  sampled = dataclasses.replace(cfg, max_points_per_centroid=4)
  qs, codes_s, _ = quantizer.fit_encode(x, sampled)
  assert not np.array_equal(qs.rq.l1, q.rq.l1)
  np.testing.assert_array_equal(codes_s, _greedy_codes(x, qs))


def test_fast_opq_switches_reach_the_opq_fit():
  x = _emb(n=900, seed=6)
  q, codes, _ = quantizer.fit_encode(x, _CFG)
  fast = dataclasses.replace(
    _CFG, opq_fused=True, opq_rotation_init="pca", opq_iter_pq0=10
  )
  qf, codes_f, sq_f = quantizer.fit_encode(x, fast)
  # Same RQ; an OPQ from another start: other codebooks, and the fitted
  # codes are still every point's nearest codes (brute force).
  np.testing.assert_array_equal(qf.rq.l3, q.rq.l3)
  np.testing.assert_array_equal(codes_f[:, :3], codes[:, :3])
  assert not np.allclose(qf.opq.rotation, q.opq.rotation)
  np.testing.assert_array_equal(codes_f, _greedy_codes(x, qf))
  # The PCA start is the fitted rotation's start: the OPQ error is no
  # worse than the default recipe's (measured: lower).
  _, _, sq = quantizer.fit_encode(x, _CFG)
  assert np.mean(sq_f[:, 3]) < 1.05 * np.mean(sq[:, 3])
  # A smaller OPQ training sample changes the fit.
  small = dataclasses.replace(fast, opq_train_points=300)
  assert not np.allclose(quantizer.fit(x, small).opq.codebooks, qf.opq.codebooks)
  # faiss's random PQ init: the PQ starts from distinct training points.
  rand = quantizer.fit(x, dataclasses.replace(fast, opq_pq_init="random"))
  assert not np.allclose(rand.opq.codebooks, qf.opq.codebooks)
  np.testing.assert_array_equal(rand.rq.l3, q.rq.l3)


def test_fit_encode_is_deterministic_by_seed():
  x = _emb(n=700, seed=5)
  a = quantizer.fit_encode(x, _CFG)
  b = quantizer.fit_encode(x, _CFG)
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[0].opq.codebooks, b[0].opq.codebooks)
  other = quantizer.fit_encode(x, dataclasses.replace(_CFG, seed=1))
  assert not np.array_equal(other[0].rq.l1, a[0].rq.l1)


def test_encode_in_many_padded_blocks_equals_brute_force(fitted, monkeypatch):
  x, q = fitted
  # A tiny block budget forces 64-point blocks: 1200 points = 19 blocks, the
  # last one padded.
  monkeypatch.setattr(sid_encode, "_BLOCK_FLOATS", 64 * 16)
  assert sid_encode.block_size(1200, 16) == 64
  np.testing.assert_array_equal(q.encode(x), _greedy_codes(x, q))


def test_encode_in_cache_sized_tiles_equals_brute_force(fitted, monkeypatch):
  x, q = fitted
  # A tiny tile budget cuts every block into many tiles per level (8-row
  # tiles for the parent level 3), each one matmul fused with its argmin.
  monkeypatch.setattr(sid_encode, "_TILE_FLOATS", 256)
  assert sid_encode._tile_rows(32, 2048) == 8
  np.testing.assert_array_equal(q.encode(x), _greedy_codes(x, q))


def test_encode_on_a_six_device_mesh_equals_brute_force(fitted, monkeypatch):
  x, q = fitted
  # 6 devices: 1200 points in one block of 6 * 256 rows; a tile budget of
  # 1,024 rows for the 8-wide level 2 does not divide 1,536 rows, so its
  # tiles are 512 rows (the largest power of two dividing the block).
  monkeypatch.setattr(sid_encode, "_TILE_FLOATS", 8 * 1024)
  assert sid_encode._tile_rows(8, 6 * 256) == 512
  mesh = jax.make_mesh(
    (6,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:6]
  )
  np.testing.assert_array_equal(q.encode(x, mesh=mesh), _greedy_codes(x, q))


def test_block_sizes_are_bucketed():
  # Nearby N share one block size (one compiled executable) ...
  assert sid_encode.block_size(100, 16) == sid_encode.block_size(128, 16) == 128
  assert sid_encode.block_size(1, 16) == sid_encode.block_size(64, 16) == 64
  # ... large N are cut into capped power-of-two blocks ...
  assert sid_encode.block_size(10**6, 512) == 8192
  assert sid_encode.block_size(10**6, 64 * 128) == 1024
  # ... and a mesh gets a multiple of its size.
  assert sid_encode.block_size(10**6, 512, n_shards=8) == 8 * 8192
  assert sid_encode.block_size(30, 512, n_shards=8) == 8 * 64


def test_encode_rejects_bad_input(fitted):
  _, q = fitted
  with pytest.raises(ValueError, match=r"expected embeddings \[N, 8\]"):
    q.encode(np.zeros((3, 5), np.float32))
  bad = np.zeros((3, 8), np.float32)
  bad[2, 1] = np.nan
  with pytest.raises(ValueError, match="embedding 2 has a non-finite"):
    q.encode(bad)
  assert q.encode(np.zeros((0, 8), np.float32)).shape == (0, 5)
