"""SID token embeddings initialised from the KHQE codebooks.

The SID artefact's codebooks live in the KHQE embedding space, whose width
equals the main model's d_model. A fresh model's SID token rows are random,
so the first steps spend themselves learning that ``<a_3>`` and ``<a_17>``
are neighbours. ``codebook_init(sid_dir, model_cfg)`` returns a function that
overwrites, on a freshly initialised model:

* the input embedding row of ``<a_i>`` with the level-1 centroid i, of
  ``<b_j>`` with the level-2 (residual) centroid j, and of the OPQ tokens
  ``<d_m>`` / ``<d_{m+256}>`` with the m-th codeword of sub-quantiser 0 / 1
  mapped back through the OPQ rotation (``x = [c, 0] @ R^T``);
* the same directions in the output (logits) kernel's columns, when the
  embeddings are untied.

Each vector is rescaled to the norm the random init gives a row / column
(sqrt(D) for the std-1 embedding, 1 for the fan-in-scaled logits kernel), so
only directions change. Level-3 tokens keep their random rows: their local
codes are conditional on the parent, so code k means something different
under every parent and no single vector stands for it.

Choice (the paper is silent): the init is applied once, before phase 1;
later phases continue from the trained parameters.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import jax
import numpy as np

from onesearch_jax.model.configs import ModelConfig


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  n = np.linalg.norm(x, axis=-1, keepdims=True)
  return (x / np.maximum(n, 1e-12)).astype(np.float32)


def sid_vectors(
  sid_dir: str | os.PathLike, model_cfg: ModelConfig
) -> dict[int, np.ndarray]:
  """Token id -> unit direction [D] for the a, b and OPQ SID tokens.

  Raises:
    ValueError: the codebooks' width is not d_model, or the SID ranges do
      not match the codebook sizes.
  """
  path = pathlib.Path(sid_dir) / "codebooks.npz"
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  d = model_cfg.d_model
  if arrays["rq_l1"].shape[1] != d:
    raise ValueError(
      f"{path}: codebook width {arrays['rq_l1'].shape[1]} != d_model {d}; "
      "the codebook init needs equal widths"
    )
  ranges = model_cfg.sid_ranges
  out: dict[int, np.ndarray] = {}
  for level, key in ((0, "rq_l1"), (1, "rq_l2")):
    start, end = ranges[level]
    book = _unit(arrays[key])
    if book.shape[0] != end - start:
      raise ValueError(
        f"{path}: {key} has {book.shape[0]} codes, SID level {level} {end - start}"
      )
    for i in range(book.shape[0]):
      out[start + i] = book[i]
  if "opq_codebooks" in arrays and len(ranges) > 3:
    books, rot = arrays["opq_codebooks"], arrays["opq_rotation"]
    m, k, sub = books.shape
    for j in range(min(m, len(ranges) - 3)):
      start, end = ranges[3 + j]
      y = np.zeros((min(k, end - start), d), np.float64)
      y[:, j * sub : (j + 1) * sub] = books[j, : y.shape[0]]
      x = _unit(y @ rot.T)
      for i in range(x.shape[0]):
        out[start + i] = x[i]
  return out


def codebook_init(
  sid_dir: str | os.PathLike, model_cfg: ModelConfig
) -> Callable[[object], None]:
  """A function that writes the codebook directions into a fresh model."""
  vectors = sid_vectors(sid_dir, model_cfg)
  ids = np.asarray(sorted(vectors), np.int32)
  rows = np.stack([vectors[int(i)] for i in ids]) if len(ids) else np.zeros((0, 0))
  d = model_cfg.d_model

  def apply(model) -> None:
    if not len(ids):
      return
    emb = model.embed.embedding
    old = emb[...]
    new = np.asarray(jax.device_get(old)).copy()
    new[ids] = rows * np.sqrt(d)
    emb[...] = jax.device_put(new.astype(old.dtype), old.sharding)
    if model.logits_kernel is not None:
      kern = model.logits_kernel
      old = kern[...]
      new = np.asarray(jax.device_get(old)).copy()
      new[:, ids] = rows.T
      kern[...] = jax.device_put(new.astype(old.dtype), old.sharding)

  return apply
