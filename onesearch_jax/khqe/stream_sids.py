"""SIDs of a catalogue too big to hold: fit on a bounded sample, encode in blocks.

The in-memory build (``quantizer.fit_encode``) holds several N x D copies of
the embeddings (input, residuals, device copies): ~5.7x the input at 2 M
points (docs/BENCHMARKS.md). For the full KuaiSearch catalogue (18.6 M items)
this module keeps memory bounded by a sample and a block, not by N:

  1. the embeddings are an ``[N, D]`` ``.npy`` file, read memory-mapped
     (``embeddings_io.open_embeddings``; written block by block with
     ``embeddings_io.BlockWriter``);
  2. the quantiser is fitted on a seeded random sample of at most
     ``points_per_centroid * k1`` rows (``fit_rows``; 256 is faiss's default
     ``max_points_per_centroid``, which subsamples every ``faiss.Kmeans`` the
     same way), gathered from the file in sorted order;
  3. every row is encoded with the fitted codebooks, ``block_rows`` rows at a
     time (``encode_file``), and the codes are written block by block to an
     ``[N, 3 + s]`` int32 ``.npy`` file.

Memory: the sample (``points_per_centroid * k1 * D * 4`` bytes times the
fit's ~6x working set), one block, and the output file's dirty pages (the OS
writes them back). Nothing is N x D in memory.

The codes are ``Quantizer.encode``'s (the canonical code, see quantizer.py):
with a sample holding every row (N <= points_per_centroid * k1) the fit is
the in-memory ``quantizer.fit`` on the same array, and the codes equal
``fit(emb).encode(emb)``. The build_sids stage stays in memory (the main
job's default world is 10k items); this path is for catalogues where N x D
does not fit (``benchmarks/streaming.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np

from onesearch_jax.khqe import embeddings_io
from onesearch_jax.khqe import quantizer as quantizer_lib


@dataclasses.dataclass(frozen=True)
class StreamConfig:
  """How the streamed build samples and blocks.

  Attributes:
    points_per_centroid: the fit sample holds at most this many points per
      level-1 centroid (faiss's ``max_points_per_centroid`` default, 256).
    block_rows: rows encoded (and read from disk) per block.
    sample_seed: seed of the fit sample.
  """

  points_per_centroid: int = 256
  block_rows: int = 65_536
  sample_seed: int = 0

  def __post_init__(self):
    if self.points_per_centroid < 1 or self.block_rows < 1:
      raise ValueError(
        "StreamConfig: points_per_centroid and block_rows must be >= 1, got "
        f"{self.points_per_centroid} and {self.block_rows}"
      )


def fit_rows(n: int, max_points: int, seed: int) -> np.ndarray:
  """Sorted row indices [min(n, max_points)] of the fit sample.

  All rows (0..n-1) when n <= max_points, else ``max_points`` distinct rows
  drawn with ``seed``; sorted, so a memory-mapped file is read front to back.
  """
  if n <= max_points:
    return np.arange(n, dtype=np.int64)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(n, size=max_points, replace=False)).astype(np.int64)


def fit_sample(
  emb: np.ndarray,
  config: quantizer_lib.QuantizerConfig,
  stream: StreamConfig = StreamConfig(),
  *,
  mesh: jax.sharding.Mesh | None = None,
  log: Callable[[str], None] | None = None,
) -> quantizer_lib.Quantizer:
  """Fits the quantiser on a bounded sample of the rows of ``emb``.

  Args:
    emb: [N, D] float32 embeddings, typically a memory map
      (``embeddings_io.open_embeddings``).
    config: quantiser settings (levels, L3 mode, OPQ).
    stream: sample size and seed.
    mesh: optional mesh the fit shards its points over.
    log: optional printer.

  Returns:
    The fitted quantiser.
  """
  rows = fit_rows(
    emb.shape[0], stream.points_per_centroid * config.levels[0], stream.sample_seed
  )
  sample = np.asarray(emb[rows], np.float32)
  _check_finite(sample, rows, "fit sample")
  if log:
    log(f"fit sample: {len(rows)} of {emb.shape[0]} rows")
  return quantizer_lib.fit(sample, config, mesh=mesh, log=log)


def _check_finite(block: np.ndarray, rows, what: str) -> None:
  bad = ~np.isfinite(block).all(axis=1)
  if bad.any():
    raise ValueError(f"{what}: embedding row {int(rows[np.argmax(bad)])} is not finite")


def encode_file(
  quant: quantizer_lib.Quantizer,
  emb: np.ndarray,
  codes_path: str | os.PathLike,
  *,
  block_rows: int = StreamConfig.block_rows,
  mesh: jax.sharding.Mesh | None = None,
  log: Callable[[str], None] | None = None,
) -> dict[str, float]:
  """Encodes every row of ``emb`` block by block into an int32 ``.npy`` file.

  Args:
    quant: the fitted quantiser.
    emb: [N, D] float32 embeddings (a memory map or an array).
    codes_path: the ``.npy`` file to write, [N, 3 + s] int32.
    block_rows: rows per block; N need not be a multiple.
    mesh: optional mesh to shard each block over.
    log: optional printer (one line per ~10% of the rows).

  Returns:
    The mean squared residual norm after each level ("input", "l1", "l2",
    "l3"[, "opq"]), as ``quantizer.mean_errors`` over all rows.

  Raises:
    ValueError: a row that is not finite (naming the row).
  """
  n, d = emb.shape
  out = np.lib.format.open_memmap(
    os.fspath(codes_path), mode="w+", dtype=np.int32, shape=(n, quant.code_width)
  )
  sums = None
  sum_input = 0.0
  step = max(1, n // 10)
  for start in range(0, n, block_rows):
    stop = min(start + block_rows, n)
    block = np.asarray(emb[start:stop], np.float32).reshape(stop - start, d)
    _check_finite(block, range(start, stop), "encode_file")
    codes, sq = quant.encode_with_errors(block, mesh=mesh)
    out[start:stop] = codes
    part = np.sum(np.asarray(sq, np.float64), axis=0)
    sums = part if sums is None else sums + part
    sum_input += float(np.sum(np.asarray(block, np.float64) ** 2))
    if log and (stop // step != start // step or stop == n):
      log(f"encoded {stop}/{n}")
  out.flush()
  del out
  if n == 0:
    return {}
  errors = {"input": sum_input / n}
  errors.update(zip(quantizer_lib.ERROR_NAMES, (sums / n).tolist(), strict=False))
  return errors


def build_streamed(
  emb_path: str | os.PathLike,
  codes_path: str | os.PathLike,
  config: quantizer_lib.QuantizerConfig,
  stream: StreamConfig = StreamConfig(),
  *,
  mesh: jax.sharding.Mesh | None = None,
  log: Callable[[str], None] | None = None,
) -> tuple[quantizer_lib.Quantizer, dict[str, float]]:
  """Fit on a sample of an ``.npy`` embedding file, then encode all of it.

  Args:
    emb_path: [N, D] float ``.npy`` (memory-mapped, never loaded whole).
    codes_path: where the [N, 3 + s] int32 codes are written.
    config: quantiser settings.
    stream: sample and block sizes.
    mesh: optional mesh.
    log: optional printer.

  Returns:
    (the quantiser, the mean per-level squared errors over all rows).
  """
  emb = embeddings_io.open_embeddings(emb_path)
  quant = fit_sample(emb, config, stream, mesh=mesh, log=log)
  errors = encode_file(
    quant, emb, codes_path, block_rows=stream.block_rows, mesh=mesh, log=log
  )
  return quant, errors
