"""Dense retrieval: exact top-K by inner product with KHQE aligned embeddings.

The embeddings are KHQE's fused (encoder + keyword) vectors:
``khqe.text_embedder.load_text_embedder(sid_dir)`` embeds queries and items
with the artefact's encoder and keyword dictionary (L2-normalised, so the
inner product is the cosine). The keyword mean is the paper's plain one by
default, whatever tag weights the SIDs were built with
(``BuildConfig.keyword_tag_weights``): weighting brand and product type
makes better SID clusters but a worse dense retriever (world seed 0's
validation day: click HR@10 0.448 plain, 0.403 weighted), and a baseline
should not move with the tokenizer's tuning. Scoring is one jitted matmul +
``lax.top_k`` per query chunk; ties go to the lower item row (``lax.top_k``
is stable).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from onesearch_jax.khqe import text_embedder


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(q: jax.Array, items: jax.Array, k: int):
  scores = q @ items.T  # [C, N]
  return jax.lax.top_k(scores, k)


class DenseRetriever:
  """Exact maximum-inner-product search over item embeddings [N, D]."""

  def __init__(self, item_embeddings: np.ndarray):
    emb = np.asarray(item_embeddings, np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
      raise ValueError(f"DenseRetriever: want [N, D] embeddings, got {emb.shape}")
    self.item_embeddings = emb
    self._items = jnp.asarray(emb)

  @property
  def n_items(self) -> int:
    return int(self.item_embeddings.shape[0])

  def search(self, query_embeddings: np.ndarray, k: int, chunk: int = 256):
    """Top-k items per query.

    Args:
      query_embeddings: [E, D].
      k: ranking length (k > N: -1 / -inf padding).
      chunk: queries per jitted call (the last chunk is padded).

    Returns:
      (rows [E, k] int32, scores [E, k] float32).
    """
    q = np.asarray(query_embeddings, np.float32)
    if q.ndim != 2 or q.shape[1] != self.item_embeddings.shape[1]:
      raise ValueError(
        f"DenseRetriever.search: queries {q.shape} vs items "
        f"{self.item_embeddings.shape}"
      )
    e = q.shape[0]
    kk = min(k, self.n_items)
    rows = np.full((e, k), -1, np.int32)
    vals = np.full((e, k), -np.inf, np.float32)
    c = max(1, min(chunk, e))
    for start in range(0, e, c):
      stop = min(start + c, e)
      block = np.zeros((c, q.shape[1]), np.float32)
      block[: stop - start] = q[start:stop]
      v, i = _top_k(jnp.asarray(block), self._items, kk)
      rows[start:stop, :kk] = np.asarray(i)[: stop - start]
      vals[start:stop, :kk] = np.asarray(v)[: stop - start]
    return rows, vals

  def scores_of(self, query_embeddings: np.ndarray, item_rows: np.ndarray):
    """Inner products [E, C] of each query with its candidate rows (-1: 0)."""
    q = np.asarray(query_embeddings, np.float32)
    rows = np.asarray(item_rows)
    emb = self.item_embeddings[np.maximum(rows, 0)]  # [E, C, D]
    out = np.einsum("ed,ecd->ec", q, emb)
    return np.where(rows >= 0, out, 0.0).astype(np.float32)


class KHQEEmbedder:
  """Query / item embeddings from a SID artefact directory's text encoder.

  Query embeddings are cached by text: ``precompute`` embeds many texts in
  one encoder call (each call of the encoder compiles anew, so batching the
  calls matters more than their size).
  """

  def __init__(self, sid_dir: str | os.PathLike, tag_weights: bool = False):
    """
    Args:
      sid_dir: a SID artefact directory (its ``text_encoder/``).
      tag_weights: fuse keywords with the artefact's tag weights, as its
        SIDs were built; False (the default) = the plain keyword mean.
    """
    embedder = text_embedder.load_text_embedder(sid_dir)
    if not tag_weights:
      embedder = dataclasses.replace(embedder, keyword_weights=None)
    self._embedder = embedder
    self._cache: dict[str, np.ndarray] = {}

  def precompute(self, texts: Sequence[str]) -> None:
    """Embeds (in one call) every text not cached yet."""
    todo = sorted(set(texts) - set(self._cache))
    if todo:
      emb = np.asarray(self._embedder.queries(todo), np.float32)
      self._cache.update(zip(todo, emb, strict=True))

  def queries(self, texts: Sequence[str]) -> np.ndarray:
    """[E, D] float32 query embeddings (cached)."""
    self.precompute(texts)
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    return np.stack([self._cache[t] for t in texts])

  @property
  def dim(self) -> int:
    return int(self._embedder.keyword_embeddings.shape[1])

  def items(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.asarray(self._embedder.items(list(rows)), np.float32)
