"""The shared vocabulary: SID tokens, round trips, tf ops inside tf.data."""

from __future__ import annotations

import functools

import pytest
import seqio
import tensorflow as tf

from onesearch_jax.data import vocab as vocab_lib

TEXTS = [
  "red dress for women summer",
  "running shoes men light",
  "红色连衣裙女夏季雪纺",
  "华为手机 5G 全网通",
  "give the item id:",
  "recent queries: ; none",
]
LAYOUT = vocab_lib.VocabLayout(levels=(8, 4, 4), d_range=32, user_buckets=3)
SAMPLES = [
  "[BOS] query: 红色连衣裙 [SEP] query id: <a_3><b_1><c_0><d_5><d_20> [EOS]",
  "[BOS][UID]<a_1><b_0>[Q]红色连衣裙[QID]<a_3><b_1>[RQ]a[SEP]b[LT][EMB][PF]x[GEN_IID]",
  "<a_7><b_3><c_3><d_0><d_31>",
  "  two  spaces and tabs\t, full-width ，。！",
  "unseen chars: 龘 ☃ é and emoji 🙂",
  "<a_8> is out of range, <x_1> is not a token, <a_-1> neither",
  "",
  "<u_2>[EMB][EMB]<c_1>text<b_0>",
]


@functools.cache
def _vocab() -> vocab_lib.OneSearchVocabulary:
  model = vocab_lib.train_sentencepiece(
    sorted(TEXTS), vocab_lib.SentencePieceConfig(vocab_size=300)
  )
  return vocab_lib.OneSearchVocabulary(model, LAYOUT)


def test_sentencepiece_training_is_deterministic():
  cfg = vocab_lib.SentencePieceConfig(vocab_size=300)
  a = vocab_lib.train_sentencepiece(sorted(TEXTS), cfg)
  b = vocab_lib.train_sentencepiece(sorted(TEXTS), cfg)
  assert a == b


def test_sid_ranges_are_level_disjoint_and_contiguous():
  v = _vocab()
  ranges = [v.level_range(p) for p in "abcdu"]
  assert [len(r) for r in ranges] == [8, 4, 4, 32, 3]
  assert ranges[0].start == v.sp_size + len(vocab_lib.SPECIALS)
  for r0, r1 in zip(ranges, ranges[1:], strict=False):
    assert r0.stop == r1.start
  assert ranges[-1].stop == v.vocab_size
  assert v.token_id("<a_0>") == ranges[0].start
  assert v.token_id("<d_31>") == ranges[3].stop - 1
  for i, s in enumerate(vocab_lib.SPECIALS):
    assert v.token_id(s) == v.sp_size + i


def test_sid_tokens_encode_to_exactly_their_ids():
  v = _vocab()
  sid = "<a_3><b_1><c_0><d_5><d_20>"
  expected = [
    v.level_range("a")[3],
    v.level_range("b")[1],
    v.level_range("c")[0],
    v.level_range("d")[5],
    v.level_range("d")[20],
  ]
  assert v.encode(sid) == expected
  # Inside text: no "▁" (or any other) piece right before a SID token.
  ids = v.encode("query id <a_3><b_1><c_0><d_5><d_20>")
  assert ids[-5:] == expected
  prefix = v.encode("query id ")
  assert ids[:-5] == prefix
  assert v.decode(expected) == sid


@pytest.mark.parametrize("text", SAMPLES)
def test_python_round_trip(text):
  v = _vocab()
  assert v.decode(v.encode(text)) == text


def test_prompt_specials_encode_to_one_id_each():
  v = _vocab()
  text = "[BOS][Q]red dress[QID]<a_3><b_1><c_0><d_5><d_20>[GEN_IID]"
  ids = v.encode(text)
  assert ids[0] == v.token_id("[BOS]") and ids[1] == v.token_id("[Q]")
  assert ids[-1] == v.token_id("[GEN_IID]")
  assert ids[-7] == v.token_id("[QID]")
  assert v.decode(ids) == text
  # [GEN_Q] and [GEN_QID] are different tokens (no prefix confusion).
  assert v.encode("[GEN_Q][GEN_QID]") == [
    v.token_id("[GEN_Q]"),
    v.token_id("[GEN_QID]"),
  ]


def test_out_of_range_tokens_are_text():
  v = _vocab()
  ids = v.encode("<a_8>")
  assert all(i < v.sp_size for i in ids)
  assert v.decode(ids) == "<a_8>"


@pytest.mark.parametrize("text", SAMPLES)
def test_tf_ops_match_python(text):
  v = _vocab()
  ids = v.encode(text)
  assert v.encode_tf(tf.constant(text)).numpy().tolist() == ids
  if ids:
    assert v.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == text


def test_tf_ops_inside_tf_data_and_batched():
  v = _vocab()
  ds = tf.data.Dataset.from_tensor_slices(SAMPLES[:3])
  ds = ds.map(lambda s: {"s": s, "ids": v.encode_tf(s)})
  ds = ds.map(lambda ex: {**ex, "back": v.decode_tf(ex["ids"])})
  for ex in ds.as_numpy_iterator():
    assert ex["ids"].tolist() == v.encode(ex["s"].decode())
    assert ex["back"] == ex["s"]
  batch = v.encode_tf(tf.constant(SAMPLES[:2]))
  assert [r.tolist() for r in batch.numpy()] == [v.encode(s) for s in SAMPLES[:2]]
  padded = tf.constant([v.encode("<a_1>x") + [1, 0, 0], v.encode("y<b_2>") + [1, 7, 7]])
  assert [s.decode() for s in v.decode_tf(padded).numpy()] == ["<a_1>x", "y<b_2>"]


def test_seqio_decode_stops_at_eos():
  v = _vocab()
  ids = v.encode("<a_1>ok") + [vocab_lib.EOS_ID] + v.encode("<b_2>")
  assert v.decode(ids) == "<a_1>ok"
  assert isinstance(v, seqio.Vocabulary)
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)


def test_save_load(tmp_path):
  v = _vocab()
  v.save(tmp_path)
  w = vocab_lib.OneSearchVocabulary.load(tmp_path)
  assert w == v and w.fingerprint() == v.fingerprint()
  assert w.encode(SAMPLES[0]) == v.encode(SAMPLES[0])
  (tmp_path / "vocab.json").write_text('{"levels": [8, 4, 4]}')
  with pytest.raises(ValueError, match="vocab.json: field 'd_range' is missing"):
    vocab_lib.OneSearchVocabulary.load(tmp_path)
