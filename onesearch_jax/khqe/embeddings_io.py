"""Precomputed embeddings: a ``.npy`` matrix plus a text file of ids.

Users with their own (e.g. BGE-style) encoder plug their vectors in here
instead of training khqe/encoder.py. Format:

  * ``<name>.npy``: float array [N, D] (any float dtype; read as float32);
  * ``<name>.txt``: N lines, the id of row i on line i+1 (item ids for items,
    the query text itself for queries, the keyword text for keywords). Lines
    are UTF-8; only the trailing newline is stripped, so a query with inner
    spaces is kept verbatim.

Every problem raises EmbeddingsError naming the file(s) and, where it applies,
the line or row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


class EmbeddingsError(ValueError):
  """A precomputed embedding file pair is malformed."""


def load_embeddings(
  npy_path: str | os.PathLike, ids_path: str | os.PathLike
) -> tuple[list[str], np.ndarray]:
  """Loads a precomputed embedding matrix and its ids.

  Args:
    npy_path: the ``.npy`` file holding [N, D] floats.
    ids_path: the text file holding N ids, one per line.

  Returns:
    (ids, embeddings): N ids in file order and [N, D] float32.

  Raises:
    EmbeddingsError: unreadable files, a matrix that is not 2-D or not
      floating point, non-finite values, empty or duplicate ids, or a row
      count that differs from the id count.
  """
  npy_path, ids_path = os.fspath(npy_path), os.fspath(ids_path)
  emb = _float_matrix(npy_path, mmap_mode=None)
  bad = ~np.isfinite(emb).all(axis=1)
  if bad.any():
    raise EmbeddingsError(
      f"{npy_path}: row {int(np.argmax(bad))} holds NaN or infinity "
      f"({int(bad.sum())} such rows)"
    )
  try:
    with open(ids_path, encoding="utf-8") as f:
      lines = f.read().split("\n")
  except (OSError, UnicodeDecodeError) as e:
    raise EmbeddingsError(f"{ids_path}: cannot read the id file ({e})") from e
  if lines and lines[-1] == "":
    lines.pop()  # the final newline
  ids = [line.rstrip("\r") for line in lines]
  seen: dict[str, int] = {}
  for n, i in enumerate(ids, start=1):
    if not i:
      raise EmbeddingsError(f"{ids_path}:{n}: empty id")
    if i in seen:
      raise EmbeddingsError(
        f"{ids_path}:{n}: duplicate id {i!r} (first on line {seen[i]})"
      )
    seen[i] = n
  if len(ids) != emb.shape[0]:
    raise EmbeddingsError(
      f"{npy_path} has {emb.shape[0]} rows but {ids_path} has {len(ids)} ids"
    )
  return ids, emb.astype(np.float32, copy=False)


def open_embeddings(npy_path: str | os.PathLike) -> np.ndarray:
  """An [N, D] float ``.npy`` file, memory-mapped (read only, never loaded).

  Rows are read from disk when indexed, so a catalogue larger than memory can
  be encoded block by block (``stream_sids.encode_file``). Finiteness is
  checked block by block by the reader of the rows, not here.

  Raises:
    EmbeddingsError: unreadable, not 2-D, or not floating point.
  """
  return _float_matrix(os.fspath(npy_path), mmap_mode="r")


def _float_matrix(npy_path: str, mmap_mode: str | None) -> np.ndarray:
  """The [N, D] float array of ``npy_path`` (loaded, or memory-mapped)."""
  try:
    emb = np.load(npy_path, mmap_mode=mmap_mode, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise EmbeddingsError(f"{npy_path}: cannot read a .npy array ({e})") from e
  if emb.ndim != 2:
    raise EmbeddingsError(
      f"{npy_path}: expected a 2-D [N, D] array, got shape {emb.shape}"
    )
  if not np.issubdtype(emb.dtype, np.floating):
    raise EmbeddingsError(f"{npy_path}: expected floats, got dtype {emb.dtype}")
  return emb


class BlockWriter:
  """Writes an [N, D] float32 ``.npy`` file block by block (N known ahead).

  ``write(block)`` appends the next ``[B, D]`` rows; ``close()`` (or leaving
  the ``with`` block) checks that exactly N rows were written. Only the
  current block is in memory; the file is a memory map the OS writes back.
  """

  def __init__(self, npy_path: str | os.PathLike, n: int, dim: int):
    self.path = os.fspath(npy_path)
    self.n = n
    self.rows = 0
    self._out = np.lib.format.open_memmap(
      self.path, mode="w+", dtype=np.float32, shape=(n, dim)
    )

  def write(self, block: np.ndarray) -> None:
    block = np.asarray(block, np.float32)
    if block.ndim != 2 or block.shape[1] != self._out.shape[1]:
      raise EmbeddingsError(
        f"{self.path}: block of shape {block.shape}, expected [B, {self._out.shape[1]}]"
      )
    if self.rows + block.shape[0] > self.n:
      raise EmbeddingsError(
        f"{self.path}: {self.rows + block.shape[0]} rows written, file holds {self.n}"
      )
    self._out[self.rows : self.rows + block.shape[0]] = block
    self.rows += block.shape[0]

  def close(self) -> None:
    if self._out is None:
      return
    self._out.flush()
    self._out = None
    if self.rows != self.n:
      raise EmbeddingsError(f"{self.path}: {self.rows} of {self.n} rows written")

  def __enter__(self) -> BlockWriter:
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.close()
    else:
      self._out = None


def save_embeddings(
  npy_path: str | os.PathLike,
  ids_path: str | os.PathLike,
  ids: Sequence[str],
  embeddings: np.ndarray,
) -> None:
  """Writes the pair read by `load_embeddings` (ids must hold no newline)."""
  if len(ids) != embeddings.shape[0]:
    raise EmbeddingsError(
      f"save_embeddings: {embeddings.shape[0]} rows but {len(ids)} ids"
    )
  for n, i in enumerate(ids):
    if "\n" in i or "\r" in i or not i:
      raise EmbeddingsError(
        f"save_embeddings: id #{n} {i!r} is empty or holds a newline"
      )
  np.save(npy_path, np.asarray(embeddings, np.float32), allow_pickle=False)
  with open(ids_path, "w", encoding="utf-8") as f:
    f.writelines(i + "\n" for i in ids)


def align(
  ids: Sequence[str],
  loaded_ids: Sequence[str],
  embeddings: np.ndarray,
  *,
  source: str,
) -> np.ndarray:
  """Reorders loaded embeddings to `ids`; every id must be present.

  Args:
    ids: the wanted order (e.g. the world's item ids).
    loaded_ids: the ids of the loaded rows.
    embeddings: [N, D] rows of `loaded_ids`.
    source: file name(s) to name in errors.

  Returns:
    [len(ids), D] float32.

  Raises:
    EmbeddingsError: listing (up to 5 of) the ids missing from the file.
  """
  row = {i: n for n, i in enumerate(loaded_ids)}
  missing = [i for i in ids if i not in row]
  if missing:
    raise EmbeddingsError(
      f"{source}: {len(missing)} ids have no embedding, e.g. {missing[:5]}"
    )
  return embeddings[np.asarray([row[i] for i in ids], np.int64)].reshape(
    len(ids), embeddings.shape[1]
  )
