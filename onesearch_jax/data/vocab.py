"""One vocabulary for prompt text, SID tokens and segment specials (seqio).

Id layout (``VocabLayout``), contiguous ranges in this order:

  [0, P)                     sentencepiece pieces: pad 0, eos 1, unk 2, then
                             the learnt pieces and the 256 byte-fallback pieces
  specials                   ``[BOS] [SEP] [EOS] [EMB]`` (segment markers and
                             the Q-Former embedding placeholder), then the
                             compact prompts' segment labels ``[Q] [QID] ...``
                             and task markers ``[GEN_IID] ...``
  ``<a_0>..<a_{k1-1}>``      level-1 SID tokens
  ``<b_0>..<b_{k2-1}>``      level-2
  ``<c_0>..<c_{k3-1}>``      level-3 (local code)
  ``<d_0>..<d_{s*256-1}>``   OPQ codes (2nd code offset by +256)
  ``<u_0>..<u_{H-1}>``       hashed user ids (only for the "hashed" ablation)
  markers                    extra task markers (``VocabLayout.markers``; only
                             with OneSearch-V2's keyword CoT tasks, e.g.
                             ``[GEN_KW] [GEN_KWID]``), last so that every
                             other id is the same with or without them

Encoding splits the text on the token strings of the appended ranges; the
text spans go through sentencepiece, each token string maps to its own id by
table lookup. So a SID token never gets a ``▁`` piece before it, and
``decode(encode(s)) == s`` for every string: the sentencepiece model uses the
``identity`` normalisation, no dummy prefix and no whitespace folding, and
byte fallback covers any character (CJK included). A token-like string out of
range (``<a_99999>`` with k1 = 4096) is plain text.

``[EOS]`` is the prompt's closing segment marker, distinct from the sequence
terminator ``eos_id`` = 1 that seqio appends.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence

import sentencepiece as spm
import seqio
import tensorflow as tf
import tensorflow_text as tf_text

# Segment markers, the Q-Former placeholder, then the compact prompts'
# one-token segment labels and task markers (data/prompts.py, "tokens" style).
SPECIALS = (
  "[BOS]",
  "[SEP]",
  "[EOS]",
  "[EMB]",
  "[UID]",
  "[Q]",
  "[QID]",
  "[IID]",
  "[TITLE]",
  "[TEXT]",
  "[RQ]",
  "[RC]",
  "[LT]",
  "[PF]",
  "[GEN_QID]",
  "[GEN_IID]",
  "[GEN_Q]",
  "[GEN_TITLE]",
  "[GEN_CAT]",
)
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_SPLIT = "\x1f"  # unit separator: never produced by the prompts


@dataclasses.dataclass(frozen=True)
class VocabLayout:
  """Sizes of the appended token ranges."""

  levels: tuple[int, int, int]  # (k1, k2, k3)
  d_range: int = 512  # s * opq_codes
  user_buckets: int = 0  # <u_*> tokens (hashed user-id ablation)
  # Task markers appended after every range ("[NAME]" strings, none of
  # SPECIALS); () in the main job, and then left out of ``layout_dict``.
  markers: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "markers", tuple(self.markers))
    for m in self.markers:
      if not re.fullmatch(r"\[[A-Z_]+\]", m) or m in SPECIALS:
        raise ValueError(
          f"VocabLayout.markers: {m!r} must look like [NAME] and not be one of SPECIALS"
        )
    if len(set(self.markers)) != len(self.markers):
      raise ValueError(f"VocabLayout.markers repeats a marker: {self.markers}")

  def ranges(self) -> list[tuple[str, int]]:
    return [
      ("a", self.levels[0]),
      ("b", self.levels[1]),
      ("c", self.levels[2]),
      ("d", self.d_range),
      ("u", self.user_buckets),
    ]


def layout_dict(layout: VocabLayout) -> dict:
  """``dataclasses.asdict`` without ``markers`` when there are none, so the
  vocab.json and fingerprint of a main-job vocabulary are what they were
  before the field existed."""
  out = dataclasses.asdict(layout)
  if not out["markers"]:
    del out["markers"]
  else:
    out["markers"] = list(out["markers"])
  return out


def _token_patterns(specials: Sequence[str]) -> tuple[re.Pattern, str]:
  """(Python regex, RE2 pattern string) matching one appended token."""
  alt = "|".join(re.escape(t) for t in specials)
  return re.compile(rf"(<[abcdu]_\d+>|{alt})"), "(<[abcdu]_[0-9]+>|" + alt + ")"


@dataclasses.dataclass(frozen=True)
class SentencePieceConfig:
  """How the sentencepiece part is trained (deterministic)."""

  vocab_size: int = 8000  # soft target (hard_vocab_limit=False)
  model_type: str = "unigram"
  character_coverage: float = 0.9995  # rare CJK characters -> byte pieces
  seed: int = 0


def train_sentencepiece(
  texts: Iterable[str], config: SentencePieceConfig = SentencePieceConfig()
) -> bytes:
  """Trains the text model on ``texts`` and returns the serialized model.

  Deterministic: one thread, the input order as given, no sampling, fixed
  seed. The caller should pass a sorted or otherwise canonical text list.

  Args:
    texts: training sentences (titles, queries, prompt template words).
    config: settings.

  Returns:
    The model proto bytes.
  """
  texts = [t for t in texts if t and _SPLIT not in t]
  if not texts:
    raise ValueError("train_sentencepiece: no training text")
  # The model needs room for every kept character, 256 bytes and 3 controls.
  n_chars = len(set("".join(texts)))
  out = io.BytesIO()
  spm.set_random_generator_seed(config.seed)
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=out,
    vocab_size=max(config.vocab_size, n_chars + 256 + 3 + 16),
    hard_vocab_limit=False,
    model_type=config.model_type,
    character_coverage=config.character_coverage,
    byte_fallback=True,
    normalization_rule_name="identity",
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    split_digits=True,
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    bos_id=-1,
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    max_sentence_length=1 << 16,
    minloglevel=2,
  )
  return out.getvalue()


class OneSearchVocabulary(seqio.Vocabulary):
  """sentencepiece text + specials + level-disjoint SID token ranges.

  Args:
    sp_model: serialized sentencepiece model (``train_sentencepiece``).
    layout: the appended ranges.
  """

  def __init__(self, sp_model: bytes, layout: VocabLayout):
    self._sp_model = bytes(sp_model)
    self._layout = layout
    self._sp = spm.SentencePieceProcessor(model_proto=self._sp_model)
    if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (
      PAD_ID,
      EOS_ID,
      UNK_ID,
    ):
      raise ValueError("sentencepiece model must have pad=0, eos=1, unk=2")
    self.sp_size = self._sp.get_piece_size()
    tokens = list(SPECIALS)
    self.range_start: dict[str, int] = {}
    for prefix, n in layout.ranges():
      self.range_start[prefix] = self.sp_size + len(tokens)
      tokens += [f"<{prefix}_{i}>" for i in range(n)]
    tokens += list(layout.markers)
    self.appended = tuple(tokens)
    self._token_re, self._token_re2 = _token_patterns(SPECIALS + layout.markers)
    self._token_id = {t: self.sp_size + i for i, t in enumerate(tokens)}
    super().__init__(extra_ids=0)

  # ---------------------------------------------------------------- ids

  @property
  def layout(self) -> VocabLayout:
    return self._layout

  @property
  def sp_model(self) -> bytes:
    return self._sp_model

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def _base_vocab_size(self) -> int:
    return self.sp_size + len(self.appended)

  def token_id(self, token: str) -> int:
    """Id of a special, marker or SID token string (KeyError if not one)."""
    return self._token_id[token]

  def level_range(self, prefix: str) -> range:
    """Id range of one appended token family ("a", "b", "c", "d", "u")."""
    n = dict(self._layout.ranges())[prefix]
    return range(self.range_start[prefix], self.range_start[prefix] + n)

  # ---------------------------------------------------------------- python

  def _encode(self, s: str) -> list[int]:
    return self.encode_many([s])[0]

  def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` of each text (the same ids), sending each distinct text
    piece between appended tokens to sentencepiece once: the prompts of one
    task repeat their queries, titles and labels many times.

    Args:
      texts: n strings.

    Returns:
      n lists of token ids (no EOS), ``encode(texts[i])`` each.
    """
    memo: dict[str, list[int]] = {}
    out = []
    for s in texts:
      ids: list[int] = []
      for part in self._token_re.split(s):
        if not part:
          continue
        tok = self._token_id.get(part)
        if tok is not None:
          ids.append(tok)
          continue
        got = memo.get(part)
        if got is None:
          got = memo[part] = self._sp.encode(part, out_type=int)
        ids.extend(got)
      out.append(ids)
    return out

  def _decode(self, ids: Sequence[int]) -> str:
    out, run = [], []
    for i in ids:
      i = int(i)
      if i >= self.sp_size:
        if run:
          out.append(self._sp.decode(run))
          run = []
        out.append(self.appended[i - self.sp_size])
      else:
        run.append(i)
    if run:
      out.append(self._sp.decode(run))
    return "".join(out)

  # ---------------------------------------------------------------- tf

  # TF resources are created eagerly (init_scope) once, so datasets traced in
  # different graphs can all capture them.
  @functools.cached_property
  def _tf_tokenizer(self):
    with tf.init_scope():
      return tf_text.SentencepieceTokenizer(model=self._sp_model, out_type=tf.int32)

  @functools.cached_property
  def _tf_tables(self):
    with tf.init_scope():
      keys = tf.constant(self.appended)
      ids = tf.range(self.sp_size, self._base_vocab_size, dtype=tf.int32)
      to_id = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, ids), default_value=-1
      )
      return to_id, tf.constant(("",) + self.appended)

  def _encode_scalar_tf(self, s: tf.Tensor) -> tf.Tensor:
    to_id, _ = self._tf_tables
    marked = tf.strings.regex_replace(s, self._token_re2, _SPLIT + r"\1" + _SPLIT)
    parts = tf.strings.split(marked, _SPLIT)  # [S]
    tok = to_id.lookup(parts)  # -1 = plain text
    is_tok = tok >= 0
    text_ids = self._tf_tokenizer.tokenize(tf.where(is_tok, "", parts))
    tok_ids = tf.ragged.boolean_mask(tok[:, None], is_tok[:, None])
    return tf.concat([text_ids, tok_ids], axis=1).flat_values

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """Scalar string -> [L] int32; [B] strings -> ragged [B, None]."""
    s = tf.convert_to_tensor(s, tf.string)
    if s.shape.rank == 0:
      return self._encode_scalar_tf(s)
    return tf.map_fn(
      self._encode_scalar_tf,
      s,
      fn_output_signature=tf.RaggedTensorSpec([None], tf.int32, ragged_rank=0),
    )

  def _decode_scalar_tf(self, ids: tf.Tensor) -> tf.Tensor:
    _, strings = self._tf_tables
    ids = tf.cast(ids, tf.int32)
    is_tok = ids >= self.sp_size
    # A new run starts at every appended token and after it.
    prev_tok = tf.concat([[True], is_tok[:-1]], axis=0)
    starts = tf.logical_or(is_tok, prev_tok)
    run = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    n_runs = tf.reduce_max(run) + 1
    text_ids = tf.RaggedTensor.from_value_rowids(
      tf.where(is_tok, PAD_ID, ids), run, nrows=n_runs
    )
    texts = self._tf_tokenizer.detokenize(text_ids)
    tok_index = tf.math.unsorted_segment_max(
      tf.where(is_tok, ids - self.sp_size + 1, 0), run, n_runs
    )
    return tf.strings.reduce_join(texts + tf.gather(strings, tok_index))

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """[L] ids -> scalar string; [B, L] -> [B] strings."""
    ids = tf.convert_to_tensor(ids)
    if ids.shape.rank == 1:
      return tf.cond(
        tf.size(ids) > 0,
        lambda: self._decode_scalar_tf(ids),
        lambda: tf.constant("", tf.string),
      )
    return tf.map_fn(
      lambda row: self._decode_tf(row), ids, fn_output_signature=tf.string
    )

  # ---------------------------------------------------------------- io

  def __eq__(self, other) -> bool:
    return (
      isinstance(other, OneSearchVocabulary)
      and self._sp_model == other._sp_model
      and self._layout == other._layout
    )

  def __hash__(self) -> int:
    return hash((hashlib.sha256(self._sp_model).hexdigest(), self._layout))

  def fingerprint(self) -> str:
    """sha256 of the model bytes and the layout."""
    h = hashlib.sha256(self._sp_model)
    h.update(json.dumps(layout_dict(self._layout), sort_keys=True).encode())
    return h.hexdigest()

  def save(self, directory: str | os.PathLike) -> None:
    """Writes ``spm.model`` and ``vocab.json`` (the layout) to a directory."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "spm.model"), "wb") as f:
      f.write(self._sp_model)
    with open(os.path.join(directory, "vocab.json"), "w") as f:
      json.dump(layout_dict(self._layout), f, sort_keys=True)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> OneSearchVocabulary:
    """Reads what ``save`` wrote."""
    with open(os.path.join(directory, "spm.model"), "rb") as f:
      model = f.read()
    path = os.path.join(directory, "vocab.json")
    with open(path) as f:
      raw = json.load(f)
    try:
      layout = VocabLayout(
        levels=tuple(raw["levels"]),
        d_range=int(raw["d_range"]),
        user_buckets=int(raw["user_buckets"]),
        markers=tuple(raw.get("markers", ())),
      )
    except KeyError as e:
      raise ValueError(f"{path}: field {e} is missing") from e
    return cls(model, layout)
