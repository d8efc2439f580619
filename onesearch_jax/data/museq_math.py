"""The pure numpy formulas of Mu-Seq (SPEC §3): the softmax-of-sqrt position
weights, behaviour-derived user SIDs, hashed user buckets, long-term
sequence sums and the sliding-window pairs. ``data/museq.py`` builds the
per-session features from them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np

_CEIL_TOL = 1e-6


@functools.lru_cache(maxsize=2048)
def _weights(m: int) -> np.ndarray:
  s = np.sqrt(np.arange(1, m + 1, dtype=np.float64))
  e = np.exp(s - s.max())
  w = e / e.sum()
  w.flags.writeable = False
  return w


def softmax_sqrt_weights(m: int) -> np.ndarray:
  """λ_i = exp(√i) / Σ_{t=1..m} exp(√t), i = 1..m.

  Args:
    m: sequence length (>= 1).

  Returns:
    [m] float64 weights summing to 1, increasing in i.
  """
  if m < 1:
    raise ValueError(f"softmax_sqrt_weights: m must be >= 1, got {m}")
  return _weights(m)


def behaviour_sid(codes: np.ndarray, ranges: Sequence[int]) -> np.ndarray:
  """``⌈Σ_i λ_i · SID_i⌉`` position-wise, clamped to each position's range.

  Args:
    codes: [m, C] int local codes, oldest first (row m-1 = most recent).
    ranges: [C] exclusive upper bounds (k1, k2, k3, opq_codes, ...).

  Returns:
    [C] int32 codes.
  """
  codes = np.asarray(codes, np.float64)
  if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] != len(ranges):
    raise ValueError(f"behaviour_sid: codes {codes.shape} vs {len(ranges)} ranges")
  x = softmax_sqrt_weights(codes.shape[0]) @ codes
  out = np.ceil(x - _CEIL_TOL)
  # = np.clip(out, 0, ranges - 1) (x is finite), without clip's overhead.
  return np.minimum(np.maximum(out, 0.0), _upper(tuple(ranges))).astype(np.int32)


@functools.lru_cache(maxsize=64)
def _upper(ranges: tuple[int, ...]) -> np.ndarray:
  """[C] float64 largest code per position (ranges - 1), read-only."""
  out = np.asarray(ranges, np.float64) - 1
  out.flags.writeable = False
  return out


def hashed_user_bucket(user_id: str, buckets: int) -> int:
  """A stable hash of a user id into [0, buckets) (TIGER-style ablation)."""
  digest = hashlib.sha256(user_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % buckets


def long_seq_sums(
  seqs: Sequence[np.ndarray], item_centroids: np.ndarray, reduce: str = "sum"
) -> tuple[np.ndarray, np.ndarray]:
  """Per-level centroid sums of the long-term sequences.

  Args:
    seqs: 3 int arrays of item rows (click, order, RSU).
    item_centroids: [N, 3, D] per-item level centroid vectors.
    reduce: "sum" (paper) or "mean".

  Returns:
    ([9, D] float32: seq-major, level-minor; [9] int32 mask, 1 = non-empty).
  """
  d = item_centroids.shape[-1]
  out = np.zeros((len(seqs), 3, d), np.float32)
  mask = np.zeros((len(seqs), 3), np.int32)
  for s, rows in enumerate(seqs):
    rows = np.asarray(rows, np.int64)
    if rows.size == 0:
      continue
    v = item_centroids[rows].sum(axis=0, dtype=np.float64)
    if reduce == "mean":
      v /= rows.size
    out[s] = v
    mask[s] = 1
  return out.reshape(-1, d), mask.reshape(-1)


def sliding_window_pairs(n: int) -> list[tuple[int, int]]:
  """Prefix -> next-item pairs of a window of n items: (prefix_len j, next j).

  For Seq_short = s_1..s_n the pairs are (s_1..s_j) -> s_{j+1}, j = 1..n-1,
  returned as (j, j) with 0-based next index j.
  """
  return [(j, j) for j in range(1, n)]
