"""Sentencepiece text vocabulary for the KHQE text encoder.

The aligned encoder (encoder.py) reads queries and item texts as sentencepiece
ids. The model is trained on the world's own titles and queries, so it works
for any language the logs are written in; ``byte_fallback`` guarantees that
rare CJK characters outside the learnt pieces still map to byte pieces
instead of <unk>.

Training is deterministic: one thread, a fixed random seed and a fixed input
order. An input larger than ``input_sentence_size`` is sampled here (seeded,
input order kept) rather than by sentencepiece, whose sample changes from one
process to the next.
"""

from __future__ import annotations

import dataclasses
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID = 0  # also the padding value of `TextVocab.encode_batch`
UNK_ID = 1


@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """How the text vocabulary is trained."""

  vocab_size: int = 4000  # soft target; raised to chars + 256 bytes if needed
  model_type: str = "unigram"  # "unigram" | "bpe"
  character_coverage: float = 0.9995  # < 1.0 leaves rare CJK chars to bytes
  byte_fallback: bool = True  # unknown characters -> UTF-8 byte pieces
  seed: int = 0  # sentencepiece random generator seed
  input_sentence_size: int = 200_000  # sentences sampled when input is larger
  max_sentence_length: int = 4192  # bytes; longer sentences are skipped


class TextVocab:
  """A trained sentencepiece model (lower-cased via NFKC case folding).

  Attributes:
    model_proto: the serialized model (bytes); `save` writes it to a file.
  """

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Ids of one text (no BOS/EOS)."""
    return self._sp.encode(text, out_type=int)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of a list of ids (padding ids are ignored)."""
    return self._sp.decode([int(i) for i in ids if int(i) != PAD_ID])

  def pieces(self, text: str) -> list[str]:
    return self._sp.encode(text, out_type=str)

  def encode_batch(
    self, texts: Sequence[str], max_len: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes texts into a padded id matrix.

    Args:
      texts: N strings.
      max_len: L, the number of ids kept per text (longer texts are cut).

    Returns:
      ids: [N, L] int32, right-padded with PAD_ID.
      lengths: [N] int32, the number of real ids (0 for an empty text).
    """
    ids = np.full((len(texts), max_len), PAD_ID, np.int32)
    lengths = np.zeros((len(texts),), np.int32)
    for row, seq in enumerate(self._sp.encode(list(texts), out_type=int)):
      seq = seq[:max_len]
      ids[row, : len(seq)] = seq
      lengths[row] = len(seq)
    return ids, lengths

  def save(self, path: str | os.PathLike) -> None:
    with open(path, "wb") as f:
      f.write(self.model_proto)

  @classmethod
  def load(cls, path: str | os.PathLike) -> TextVocab:
    with open(path, "rb") as f:
      return cls(f.read())


def normalise_for_vocab(text: str) -> str:
  """What the model's `nmt_nfkc_cf` normaliser does to plain text: NFKC + lower."""
  return unicodedata.normalize("NFKC", text).lower()


def _clean(texts: Iterable[str]) -> list[str]:
  # Sentencepiece treats newlines as sentence breaks; a text is one sentence.
  out = []
  for t in texts:
    t = " ".join(str(t).split())
    if t:
      out.append(t)
  return out


def train_vocab(texts: Iterable[str], config: VocabConfig = VocabConfig()) -> TextVocab:
  """Trains a sentencepiece model in memory.

  Args:
    texts: training sentences (item titles and queries), in a fixed order.
    config: the VocabConfig.

  Returns:
    The trained TextVocab (pad=0, unk=1, no BOS/EOS).

  Raises:
    ValueError: when `texts` holds no non-empty sentence.
  """
  sentences = _clean(texts)
  if not sentences:
    raise ValueError("train_vocab: no non-empty text to train on")
  # Sentencepiece refuses a vocabulary smaller than the characters it must
  # cover plus the 256 byte pieces; raise the (soft) limit to that floor.
  n_chars = len({ch for t in sentences for ch in normalise_for_vocab(t)})
  floor = n_chars + (256 if config.byte_fallback else 0) + 3
  if len(sentences) > config.input_sentence_size:
    # Sampled here, seeded: sentencepiece's own sample of a larger input
    # differs from one process to the next despite the seed (measured: 1,807
    # vs 1,814 pieces from the same 211,822 sentences).
    rng = np.random.default_rng(config.seed)
    keep = np.sort(
      rng.choice(len(sentences), config.input_sentence_size, replace=False)
    )
    sentences = [sentences[i] for i in keep.tolist()]
  spm.set_random_generator_seed(config.seed)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(sentences),
    model_writer=model,
    vocab_size=max(config.vocab_size, floor),
    hard_vocab_limit=False,  # tiny worlds support fewer pieces than asked
    model_type=config.model_type,
    character_coverage=config.character_coverage,
    byte_fallback=config.byte_fallback,
    normalization_rule_name="nmt_nfkc_cf",  # NFKC + lower-casing
    pad_id=PAD_ID,
    unk_id=UNK_ID,
    bos_id=-1,
    eos_id=-1,
    num_threads=1,
    input_sentence_size=config.input_sentence_size,
    shuffle_input_sentence=True,
    max_sentence_length=config.max_sentence_length,
    split_digits=True,
    minloglevel=2,
  )
  return TextVocab(model.getvalue())
