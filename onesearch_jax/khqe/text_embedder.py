"""Embedding new text exactly as build_sids did: the artefact's text encoder
plus keyword fusion, and the file names build_sids writes them under.

``load_text_embedder(sid_dir)`` reads them back (after verifying the
artefact's hashes); feed its output to the artefact's ``quantizer.encode``
to get SIDs of new queries and items without retraining anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onesearch_jax.khqe import artefact as artefact_lib
from onesearch_jax.khqe import encoder as encoder_lib
from onesearch_jax.khqe import keywords as keywords_lib

KEYWORDS_FILE = "keywords.tsv"  # keyword \t tag \t pv \t emb (official format)
ENCODER_DIR = "text_encoder"  # encoder_lib.save_encoder + EMBEDDER_FILE
EMBEDDER_FILE = "embedder.json"


def item_texts(items: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
  """The encoder's item text: the non-empty `fields` joined by spaces."""
  out = []
  for row in items:
    parts = [str(row.get(f) or "").strip() for f in fields]
    out.append(" ".join(p for p in parts if p))
  return out


@dataclasses.dataclass
class TextEmbedder:
  """Embeds new queries and items exactly as build_sids did (encoder + fusion).

  Feed the result to the artefact's ``quantizer.encode`` to get their SIDs
  without retraining anything.
  """

  encoder: encoder_lib.TrainedEncoder
  matcher: keywords_lib.KeywordMatcher
  keyword_embeddings: np.ndarray  # [K, D]
  item_text_fields: tuple[str, ...]
  keyword_weights: np.ndarray | None = None  # [K] fusion weights (None: plain mean)

  def queries(self, texts: Sequence[str]) -> np.ndarray:
    """Fused embeddings [N, D] of query strings."""
    raw = self.encoder.embed(texts)
    return keywords_lib.fuse(
      raw,
      self.matcher.match_all(texts),
      self.keyword_embeddings,
      weights=self.keyword_weights,
    )

  def items(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Fused embeddings [N, D] of items.jsonl-style rows."""
    raw = self.encoder.embed(item_texts(rows, self.item_text_fields))
    matches = self.matcher.match_all([r["item_title"] for r in rows])
    return keywords_lib.fuse(
      raw, matches, self.keyword_embeddings, weights=self.keyword_weights
    )


def load_text_embedder(
  out_dir: str | os.PathLike, expected_hash: str | None = None
) -> TextEmbedder:
  """Reads the text encoder and keyword dictionary build_sids wrote.

  The artefact's hashes are verified first (both files are covered by its
  content hash), so an edited encoder or dictionary is refused.

  Args:
    out_dir: the build_sids output (artefact) directory.
    expected_hash: optional artefact content hash to insist on.

  Raises:
    artefact.ArtefactError: a modified, missing or added file, or a content
      hash different from ``expected_hash``.
    FileNotFoundError: when the build used precomputed embeddings (no encoder
      was trained) or the files are missing.
  """
  root = pathlib.Path(out_dir)
  artefact_lib.check_hash(root, expected_hash)
  settings = root / ENCODER_DIR / EMBEDDER_FILE
  if not settings.is_file():
    raise FileNotFoundError(
      f"{settings}: missing (built from precomputed embeddings, or not a "
      "build_sids output directory)"
    )
  entries, kw_emb = keywords_lib.load_dictionary(root / KEYWORDS_FILE)
  saved = json.loads(settings.read_text())
  weights = [(str(t), float(w)) for t, w in saved.get("keyword_tag_weights", [])]
  return TextEmbedder(
    encoder=encoder_lib.load_encoder(root / ENCODER_DIR),
    matcher=keywords_lib.KeywordMatcher([k.text for k in entries]),
    keyword_embeddings=kw_emb,
    item_text_fields=tuple(saved["item_text_fields"]),
    keyword_weights=keywords_lib.tag_weights(entries, weights),
  )
