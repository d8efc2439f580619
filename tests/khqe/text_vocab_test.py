"""Tests for khqe/text_vocab.py: sentencepiece round trips, English + Chinese."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from onesearch_jax.khqe import text_vocab

ENGLISH = [
  "red cotton t-shirt for men",
  "blue denim jeans slim fit",
  "running shoes breathable mesh",
  "wireless bluetooth headphones noise cancelling",
]
CHINESE = [
  "红色连衣裙女夏季雪纺碎花裙",
  "李宁男子跑步鞋轻便透气",
  "华为手机 5G 雅丹黑",
  "三只松鼠每日坚果零食大礼包",
]
CONFIG = text_vocab.VocabConfig(vocab_size=400)


@pytest.fixture(scope="module")
def vocab() -> text_vocab.TextVocab:
  return text_vocab.train_vocab((ENGLISH + CHINESE) * 5, CONFIG)


def test_round_trip_english_and_chinese(vocab):
  for text in ENGLISH + CHINESE:
    assert vocab.decode(vocab.encode(text)) == text.lower()  # "5G" -> "5g"
  # Case folding: upper case decodes to the lower-cased text.
  assert vocab.decode(vocab.encode("Red COTTON")) == "red cotton"


def test_unseen_cjk_characters_fall_back_to_bytes(vocab):
  text = "鳄鱼皮"  # none of these characters is in the training text
  ids = vocab.encode(text)
  assert text_vocab.UNK_ID not in ids
  assert all(p.startswith("<0x") for p in vocab.pieces(text) if p != "▁")
  assert vocab.decode(ids) == text


def test_encode_batch_pads_and_truncates(vocab):
  ids, lengths = vocab.encode_batch(["red", CHINESE[0], ""], max_len=5)
  assert ids.shape == (3, 5) and ids.dtype == np.int32
  full = vocab.encode(CHINESE[0])
  assert len(full) > 5
  np.testing.assert_array_equal(ids[1], full[:5])
  assert lengths.tolist() == [len(vocab.encode("red")), 5, 0]
  assert (ids[0, lengths[0] :] == text_vocab.PAD_ID).all()
  assert (ids[2] == text_vocab.PAD_ID).all()
  assert text_vocab.PAD_ID not in full  # padding is never a real piece


def test_training_is_deterministic_and_save_load(vocab, tmp_path):
  again = text_vocab.train_vocab((ENGLISH + CHINESE) * 5, CONFIG)
  assert again.model_proto == vocab.model_proto
  path = tmp_path / "spm.model"
  vocab.save(path)
  loaded = text_vocab.TextVocab.load(path)
  assert loaded.encode(CHINESE[1]) == vocab.encode(CHINESE[1])


def test_zh_fixture_round_trip(zh_world_dir):
  titles = [json.loads(x)["item_title"] for x in open(zh_world_dir / "items.jsonl")]
  queries = [json.loads(x)["query"] for x in open(zh_world_dir / "recall.jsonl")]
  vocab = text_vocab.train_vocab(titles + queries, CONFIG)
  for text in titles + queries:
    # NFKC folds full-width forms and upper case; compare in that form.
    assert vocab.decode(vocab.encode(text)) == " ".join(
      text_vocab.normalise_for_vocab(text).split()
    )


def test_empty_input_is_an_error():
  with pytest.raises(ValueError, match="no non-empty text"):
    text_vocab.train_vocab(["", "   ", "\n"])


_SAMPLED = """
import hashlib, sys
from onesearch_jax.khqe import text_vocab
texts = [f"item {i} colour {i % 7} size {i % 13} brand b{i % 101} 红色 {i % 3}"
         for i in range(3000)]
cfg = text_vocab.VocabConfig(vocab_size=300, input_sentence_size=1000)
print(hashlib.sha256(text_vocab.train_vocab(texts, cfg).model_proto).hexdigest())
"""


def test_sampled_input_gives_the_same_model_in_every_process():
  """3,000 sentences over ``input_sentence_size`` = 1,000: sentencepiece's
  own sample changed from one process to the next; the seeded one does not."""
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ, PYTHONPATH=str(root))
  digests = {
    subprocess.run(
      [sys.executable, "-c", _SAMPLED],
      env=env,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
    for _ in range(3)
  }
  assert len(digests) == 1 and len(next(iter(digests))) == 64
