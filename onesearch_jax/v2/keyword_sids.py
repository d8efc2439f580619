"""Keyword SIDs: the KHQE code of a keyword text (the CoT tasks' targets).

A keyword's SID is made the way a query's SID_q is: the SID artefact's text
encoder embeds the text, keyword fusion adds the dictionary keywords it
contains (a dictionary keyword contains itself), and the artefact's fitted
RQ-OPQ quantiser encodes the embedding (``khqe.text_embedder``). Nothing is
retrained and the sids stage is unchanged: the codes are computed when the
tasks are built, from the saved encoder and quantiser, so they need a SID
artefact built with a trained encoder (not from precomputed embeddings).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from onesearch_jax.data.sid_table import sid_string
from onesearch_jax.khqe import artefact, text_embedder


def artefact_keyword_sids(
  sid_dir: str | os.PathLike,
) -> Callable[[Sequence[str]], list[str]]:
  """A function from keyword texts to their SID token strings.

  Args:
    sid_dir: the SID artefact directory (``workdir/sids``).

  Returns:
    ``fn(texts)`` -> one ``<a_i><b_j><c_k><d_m><d_n>`` string per text.

  Raises:
    ValueError: the artefact has no text encoder (precomputed embeddings).
  """
  try:
    embedder = text_embedder.load_text_embedder(sid_dir)
  except FileNotFoundError as e:
    raise ValueError(
      f"keyword SIDs need the SID artefact's text encoder: {e}. The CoT tasks "
      "(MuSeqConfig.cot_tasks) cannot run on SIDs built from precomputed "
      "embeddings"
    ) from e
  quantizer = artefact.load(sid_dir).quantizer
  opq_codes = int(quantizer.config.opq_codes)

  def encode(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if not texts:
      return []
    codes = np.asarray(quantizer.encode(embedder.queries(texts)))
    return [sid_string(row, opq_codes) for row in codes]

  return encode
