"""Tests for khqe/embeddings_io.py: the precomputed-embedding loader."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.khqe import embeddings_io as eio


def _write(tmp_path, arr, ids_text):
  npy, ids = tmp_path / "e.npy", tmp_path / "e.txt"
  np.save(npy, arr)
  ids.write_text(ids_text, encoding="utf-8")
  return npy, ids


def test_round_trip_with_chinese_and_spaces(tmp_path):
  emb = np.arange(6, dtype=np.float64).reshape(3, 2)
  ids = ["i1", "红色 连衣裙", "blue  jeans "]
  eio.save_embeddings(tmp_path / "e.npy", tmp_path / "e.txt", ids, emb)
  got_ids, got = eio.load_embeddings(tmp_path / "e.npy", tmp_path / "e.txt")
  assert got_ids == ids  # inner and trailing spaces kept verbatim
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, emb)


def test_count_mismatch_names_both_files(tmp_path):
  npy, ids = _write(tmp_path, np.zeros((3, 2), np.float32), "a\nb\n")
  with pytest.raises(eio.EmbeddingsError) as e:
    eio.load_embeddings(npy, ids)
  assert f"{npy} has 3 rows but {ids} has 2 ids" in str(e.value)


@pytest.mark.parametrize(
  "arr, text, message",
  [
    (
      np.zeros((2, 2), np.float32),
      "a\na\n",
      "e.txt:2: duplicate id 'a' (first on line 1)",
    ),
    (np.zeros((2, 2), np.float32), "a\n\nb\n", "e.txt:2: empty id"),
    (np.zeros((4,), np.float32), "a\n", "expected a 2-D [N, D] array, got shape (4,)"),
    (np.zeros((1, 2), np.int32), "a\n", "expected floats, got dtype int32"),
    (np.array([[0.0, 1.0], [np.nan, 0.0]]), "a\nb\n", "row 1 holds NaN or infinity"),
  ],
)
def test_malformed_inputs(tmp_path, arr, text, message):
  npy, ids = _write(tmp_path, arr, text)
  with pytest.raises(eio.EmbeddingsError, match=None) as e:
    eio.load_embeddings(npy, ids)
  assert message in str(e.value)


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(eio.EmbeddingsError, match="cannot read a .npy"):
    eio.load_embeddings(tmp_path / "none.npy", tmp_path / "none.txt")
  np.save(tmp_path / "e.npy", np.zeros((1, 2), np.float32))
  (tmp_path / "e.txt").write_bytes(b"\xff\xfe\n")
  with pytest.raises(eio.EmbeddingsError, match="e.txt: cannot read the id file"):
    eio.load_embeddings(tmp_path / "e.npy", tmp_path / "e.txt")


def test_align_reorders_and_reports_missing():
  emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], np.float32)
  out = eio.align(["c", "a"], ["a", "b", "c"], emb, source="x.txt")
  np.testing.assert_array_equal(out, emb[[2, 0]])
  with pytest.raises(
    eio.EmbeddingsError, match=r"x.txt: 1 ids have no embedding, e.g. \['z'\]"
  ):
    eio.align(["a", "z"], ["a", "b", "c"], emb, source="x.txt")


def test_save_rejects_newlines(tmp_path):
  with pytest.raises(eio.EmbeddingsError, match="holds a newline"):
    eio.save_embeddings(
      tmp_path / "e.npy", tmp_path / "e.txt", ["a\nb"], np.zeros((1, 2))
    )
