"""SID quality metrics: codebook utilisation (CUR) and independent coding rate.

Definitions (SPEC §2.3, the official ``test_cur_icr.py``):

* ``CUR_L1`` = distinct L1 codes / k1;
* ``CUR_L1xL2`` = distinct (L1, L2) prefixes / (k1 * k2);
* ``CUR_Total`` = distinct full SIDs / (k1 * k2 * k3), the same denominator
  for every variant (also with OPQ columns in the SID);
* ``ICR`` = share of items whose full SID is held by exactly one item;
  ``collision_rate`` = 1 - ICR.
"""

from __future__ import annotations

import numpy as np


def _distinct_rows(codes: np.ndarray) -> tuple[int, np.ndarray]:
  """(number of distinct rows, count of each row's SID for every row)."""
  _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
  return counts.size, counts[inverse.reshape(-1)]


def cur_icr(codes: np.ndarray, levels: tuple[int, int, int]) -> dict[str, float]:
  """Computes CUR_L1, CUR_L1xL2, CUR_Total, ICR and the collision rate.

  Args:
    codes: [N, L] int codes, L >= 3; the full SID is the whole row.
    levels: (k1, k2, k3) RQ codebook sizes.

  Returns:
    Dict of the five metrics (fractions in [0, 1]) plus ``n_items`` and
    ``n_sids``.
  """
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] < 3 or codes.shape[0] == 0:
    raise ValueError(f"cur_icr: expected non-empty codes [N, >=3], got {codes.shape}")
  k1, k2, k3 = (int(k) for k in levels)
  n_l1 = np.unique(codes[:, 0]).size
  n_l12, _ = _distinct_rows(codes[:, :2])
  n_sids, per_row = _distinct_rows(codes)
  icr = float(np.mean(per_row == 1))
  return {
    "CUR_L1": n_l1 / k1,
    "CUR_L1xL2": n_l12 / (k1 * k2),
    "CUR_Total": n_sids / (k1 * k2 * k3),
    "ICR": icr,
    "collision_rate": 1.0 - icr,
    "n_items": int(codes.shape[0]),
    "n_sids": int(n_sids),
  }
