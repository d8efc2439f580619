"""Streamed SID build: block-wise embedding files, the bounded fit sample and
the block-by-block encode against the in-memory quantiser."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onesearch_jax import testing
from onesearch_jax.khqe import embeddings_io, quantizer, stream_sids


def _emb(n=1000, d=8, seed=0):
  return testing.clustered_points(n, d, 30, seed)


_CFG = quantizer.QuantizerConfig(
  levels=(16, 8, 4), opq_subspaces=2, opq_codes=16, n_iter=5, opq_iter=2, seed=0
)


def _write_blocks(path, x, block):
  with embeddings_io.BlockWriter(path, x.shape[0], x.shape[1]) as w:
    for start in range(0, x.shape[0], block):
      w.write(x[start : start + block])


def test_block_writer_round_trip_and_row_count_checks(tmp_path):
  x = _emb(n=250)
  _write_blocks(tmp_path / "e.npy", x, block=64)  # 250 = 3 x 64 + 58
  back = embeddings_io.open_embeddings(tmp_path / "e.npy")
  assert isinstance(back, np.memmap)
  np.testing.assert_array_equal(np.asarray(back), x)
  w = embeddings_io.BlockWriter(tmp_path / "f.npy", 10, 8)
  w.write(x[:6])
  with pytest.raises(
    embeddings_io.EmbeddingsError, match="11 rows written, file holds 10"
  ):
    w.write(x[:5])
  with pytest.raises(embeddings_io.EmbeddingsError, match="6 of 10 rows written"):
    w.close()
  with pytest.raises(embeddings_io.EmbeddingsError, match=r"expected \[B, 8\]"):
    embeddings_io.BlockWriter(tmp_path / "g.npy", 10, 8).write(x[:2, :4])


def test_open_embeddings_refuses_bad_arrays(tmp_path):
  np.save(tmp_path / "flat.npy", np.zeros(5, np.float32))
  np.save(tmp_path / "ints.npy", np.zeros((5, 2), np.int32))
  with pytest.raises(embeddings_io.EmbeddingsError, match=r"flat.npy: expected a 2-D"):
    embeddings_io.open_embeddings(tmp_path / "flat.npy")
  with pytest.raises(embeddings_io.EmbeddingsError, match="ints.npy: expected floats"):
    embeddings_io.open_embeddings(tmp_path / "ints.npy")
  with pytest.raises(embeddings_io.EmbeddingsError, match="cannot read"):
    embeddings_io.open_embeddings(tmp_path / "none.npy")


def test_fit_rows_all_or_a_seeded_sorted_sample():
  np.testing.assert_array_equal(stream_sids.fit_rows(50, 50, 0), np.arange(50))
  a = stream_sids.fit_rows(1000, 300, 7)
  assert len(a) == len(set(a.tolist())) == 300
  assert np.all(np.diff(a) > 0) and 0 <= a[0] and a[-1] < 1000
  np.testing.assert_array_equal(a, stream_sids.fit_rows(1000, 300, 7))
  assert not np.array_equal(a, stream_sids.fit_rows(1000, 300, 8))


@pytest.mark.parametrize(
  "block_rows,l3_mode", [(96, "parent"), (1000, "global"), (4096, "parent_ab")]
)
def test_streamed_encode_equals_in_memory_encode(tmp_path, block_rows, l3_mode):
  # 1000 rows: blocks of 96 leave a last block of 40; 4096 > N is one block.
  x = _emb()
  _write_blocks(tmp_path / "e.npy", x, block=128)
  cfg = dataclasses.replace(_CFG, l3_mode=l3_mode)
  quant, errors = stream_sids.build_streamed(
    tmp_path / "e.npy",
    tmp_path / "codes.npy",
    cfg,
    stream_sids.StreamConfig(points_per_centroid=1000, block_rows=block_rows),
  )
  # The sample holds every row, so the fit is the in-memory fit.
  ref = quantizer.fit(x, cfg)
  np.testing.assert_array_equal(quant.rq.l1, ref.rq.l1)
  np.testing.assert_array_equal(quant.opq.codebooks, ref.opq.codebooks)
  codes = np.load(tmp_path / "codes.npy")
  assert codes.dtype == np.int32 and codes.shape == (1000, 5)
  np.testing.assert_array_equal(codes, ref.encode(x))
  want = quantizer.mean_errors(x, ref.encode_with_errors(x)[1])
  assert errors.keys() == want.keys()
  for k in want:
    assert errors[k] == pytest.approx(want[k], rel=1e-5), k


def test_bounded_sample_fits_on_the_sampled_rows(tmp_path):
  x = _emb(n=1000)
  np.save(tmp_path / "e.npy", x)
  stream = stream_sids.StreamConfig(
    points_per_centroid=20, block_rows=300, sample_seed=4
  )
  emb = embeddings_io.open_embeddings(tmp_path / "e.npy")
  quant = stream_sids.fit_sample(emb, _CFG, stream)
  rows = stream_sids.fit_rows(1000, 20 * 16, 4)
  assert len(rows) == 320
  ref = quantizer.fit(x[rows], _CFG)
  np.testing.assert_array_equal(quant.rq.l2, ref.rq.l2)
  stream_sids.encode_file(quant, emb, tmp_path / "c.npy", block_rows=300)
  np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), ref.encode(x))


def test_non_finite_row_is_named(tmp_path):
  x = _emb(n=300)
  quant = quantizer.fit(x, _CFG)
  x[217, 3] = np.nan
  np.save(tmp_path / "e.npy", x)
  emb = embeddings_io.open_embeddings(tmp_path / "e.npy")
  with pytest.raises(ValueError, match="embedding row 217 is not finite"):
    stream_sids.encode_file(quant, emb, tmp_path / "c.npy", block_rows=100)
  with pytest.raises(ValueError, match="embedding row 217 is not finite"):
    stream_sids.fit_sample(emb, _CFG)


def test_stream_config_checks():
  with pytest.raises(ValueError, match="block_rows must be >= 1"):
    stream_sids.StreamConfig(block_rows=0)
