"""SIDTable: validation, centroid lookup, and reading a real KHQE artefact."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.data.sid_table import SIDTable, sid_string


def test_sid_string_offsets_second_opq_code():
  assert sid_string([3, 1, 0, 5, 20], 256) == "<a_3><b_1><c_0><d_5><d_276>"
  assert sid_string([3, 1, 0], 256) == "<a_3><b_1><c_0>"


def test_centroid_embeddings_parent_and_global():
  for parent in (True, False):
    t = SIDTable.synthetic(["x", "y", "z"], ["q"], parent_l3=parent, seed=1)
    l1, l2, l3 = t.rq_centroids
    emb = t.centroid_embeddings(t.item_codes)
    assert emb.shape == (3, 3, t.dim)
    for n, (a, b, c, *_) in enumerate(t.item_codes.tolist()):
      np.testing.assert_array_equal(emb[n, 0], l1[a])
      np.testing.assert_array_equal(emb[n, 1], l2[b])
      np.testing.assert_array_equal(emb[n, 2], l3[b, c] if parent else l3[c])
    np.testing.assert_array_equal(t.item_centroids, emb)


def test_lookups_and_ranges():
  t = SIDTable.synthetic(["x", "y"], ["red dress"], levels=(8, 4, 2), opq_codes=16)
  assert t.code_ranges == (8, 4, 2, 16, 16)
  assert t.d_range == 32 and t.n_opq == 2
  assert t.item_sid("y") == sid_string(t.item_codes[1], 16)
  assert t.query_sid("red dress") == sid_string(t.query_codes[0], 16)
  with pytest.raises(KeyError):
    t.item_sid("nope")


def test_validation_errors():
  good = SIDTable.synthetic(["x"], [], levels=(4, 2, 2))
  with pytest.raises(ValueError, match=r"item_codes\[0, 0\] = 9 outside \[0, 4\)"):
    SIDTable(
      item_ids=("x",),
      item_codes=np.array([[9, 0, 0, 0, 0]]),
      query_texts=(),
      query_codes=np.zeros((0, 5)),
      levels=(4, 2, 2),
      opq_codes=16,
      rq_centroids=good.rq_centroids,
    )
  with pytest.raises(ValueError, match="duplicate item ids"):
    SIDTable.synthetic(["x", "x"], [])


def test_from_artefact(tmp_path):
  from onesearch_jax.khqe import artefact, quantizer, rq

  rng = np.random.default_rng(0)
  d, levels = 4, (4, 2, 3)
  books = rq.RQCodebooks(
    l1=rng.normal(size=(4, d)).astype(np.float32),
    l2=rng.normal(size=(2, d)).astype(np.float32),
    l3=rng.normal(size=(2, 3, d)).astype(np.float32),
    l3_mode="parent",
  )
  q = quantizer.Quantizer(
    config=quantizer.QuantizerConfig(levels=levels, opq_subspaces=0),
    rq=books,
    opq=None,
  )
  codes = np.array([[0, 1, 2], [3, 0, 1]], np.int32)
  art = artefact.SIDArtefact(
    quantizer=q,
    item_ids=("i1", "i2"),
    item_codes=codes,
    item_popularity=np.array([2.0, 1.0]),
    query_texts=("red dress",),
    query_codes=np.array([[1, 1, 0]], np.int32),
  )
  content_hash = artefact.save(art, tmp_path)
  t = SIDTable.from_artefact(tmp_path)
  assert t.item_ids == ("i1", "i2") and t.query_texts == ("red dress",)
  assert t.levels == levels and t.content_hash == content_hash
  np.testing.assert_array_equal(t.item_codes, codes)
  np.testing.assert_allclose(
    t.centroid_embeddings(codes), q.rq_centroid_embeddings(codes)
  )
  with pytest.raises(ValueError):
    SIDTable.from_artefact(tmp_path, expected_hash="0" * 64)
