"""Residual quantisation with k-means (RQ-Kmeans), 3 levels (SPEC §2.3).

Level 1 and level 2 are global k-means of size k1 and k2 on the running
residual (``M <- M - centroid[assign]``, the official ``rq_dynamic.py``).

Level 3 has two modes:

* ``"global"``: a third global k-means of size k3.
* ``"parent"``: the official ``--balanced 2`` (the paper's "+l3 balanced"): an
  independent k-means of size k3 *inside each level-2 code group* (all points
  whose b code is the same, whatever their a code). A group with n <= k3
  points gives each point its own centroid (the point itself, in input order)
  and pads the remaining centroids with the group mean; an empty group keeps
  zero centroids. All groups with n > k3 are fitted together by one
  ``kmeans.fit_grouped_kmeans`` call (one compilation, no Python loop over
  groups).

Local versus global c code. The official code would emit the global id
``b * k3 + c`` (k2*k3 centroids). We emit the LOCAL code c in [0, k3): the
level-3 codebook is indexed by the pair (b, c), which is unique because b is
already in the SID, so no information is lost; the ``c_`` vocabulary stays k3
tokens (512, matching the published SID examples, which are all < 512) instead
of k2*k3 (524k), and ``CUR_Total``'s denominator k1*k2*k3 stays meaningful.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from onesearch_jax.khqe import kmeans, sid_encode

L3_MODES = ("global", "parent", "parent_ab")
PARENT_MODES = ("parent", "parent_ab")


def l3_group_ids(mode: str, a: np.ndarray | None, b: np.ndarray, k2: int) -> np.ndarray:
  """Level-3 parent group of each point [N]: b ("parent", official
  --balanced 2) or a*k2 + b ("parent_ab", --balanced 1, which needs a)."""
  if mode == "parent_ab":
    if a is None:
      raise ValueError("parent_ab level-3 groups need the level-1 codes a")
    return np.asarray(a, np.int64) * k2 + np.asarray(b)
  return np.asarray(b)


@dataclasses.dataclass(frozen=True)
class RQCodebooks:
  """The three RQ codebooks.

  Attributes:
    l1: [k1, D] level-1 centroids.
    l2: [k2, D] level-2 centroids.
    l3: [k2, k3, D] per-parent level-3 centroids ("parent") or [k3, D]
      ("global").
    l3_mode: "global" or "parent".
  """

  l1: np.ndarray
  l2: np.ndarray
  l3: np.ndarray
  l3_mode: str

  @property
  def levels(self) -> tuple[int, int, int]:
    return (self.l1.shape[0], self.l2.shape[0], self.l3.shape[-2])

  def l3_groups(self, a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    """The level-3 parent group of each point [N] (see l3_group_ids)."""
    return l3_group_ids(self.l3_mode, a, b, self.l2.shape[0])

  def level3_vectors(
    self, b: np.ndarray, c: np.ndarray, a: np.ndarray | None = None
  ) -> np.ndarray:
    """Level-3 centroid vectors [N, D] of codes (a [N], b [N], c [N]).

    ``a`` is needed only in "parent_ab" mode.
    """
    if self.l3_mode in PARENT_MODES:
      return self.l3[self.l3_groups(a, b), c]
    return self.l3[c]


def _fit_parent_l3(
  r2: np.ndarray,
  b: np.ndarray,
  k2: int,
  k3: int,
  *,
  seed: int,
  n_iter: int,
  mesh: jax.sharding.Mesh | None,
  max_points_per_centroid: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Parent-conditional level 3. Returns (centroids [k2, k3, D], c [N])."""
  n, d = r2.shape
  counts = np.bincount(b, minlength=k2)
  centroids = np.zeros((k2, k3, d), np.float32)
  c = np.zeros((n,), np.int32)
  # Small groups (n <= k3): each point its own centroid, rest = group mean.
  small_point = counts[b] <= k3
  idx = np.nonzero(small_point)[0]
  order = idx[np.argsort(b[idx], kind="stable")]
  sb = b[order]
  small_counts = np.bincount(sb, minlength=k2)
  small_starts = np.concatenate([[0], np.cumsum(small_counts)[:-1]])
  rank = np.arange(order.size) - small_starts[sb]
  c[order] = rank.astype(np.int32)
  small_groups = np.nonzero((counts > 0) & (counts <= k3))[0]
  if small_groups.size:
    rows = r2[order].astype(np.float64)
    sums = np.add.reduceat(rows, small_starts[small_groups], axis=0)
    means = (sums / counts[small_groups, None]).astype(np.float32)
    centroids[small_groups] = means[:, None, :]
    centroids[sb, rank] = rows

  # Big groups: one batched k-means over all of them.
  big_groups = np.nonzero(counts > k3)[0]
  if big_groups.size:
    dense = np.full((k2,), -1, np.int64)
    dense[big_groups] = np.arange(big_groups.size)
    big_idx = np.nonzero(~small_point)[0]
    fit = kmeans.fit_grouped_kmeans(
      r2[big_idx],
      dense[b[big_idx]],
      int(big_groups.size),
      k3,
      seed=seed,
      n_iter=n_iter,
      mesh=mesh,
      max_points_per_centroid=max_points_per_centroid,
    )
    centroids[big_groups] = fit.centroids
    c[big_idx] = fit.assign
  return centroids, c


def fit_rq(
  emb: np.ndarray,
  levels: tuple[int, int, int],
  *,
  l3_mode: str = "parent",
  seed: int = 0,
  n_iter: int = 25,
  mesh: jax.sharding.Mesh | None = None,
  log: Callable[[str], None] | None = None,
  max_points_per_centroid: int | None = None,
) -> tuple[RQCodebooks, np.ndarray, np.ndarray]:
  """Fits 3-level RQ-Kmeans.

  Args:
    emb: [N, D] float32 embeddings (queries and items together).
    levels: (k1, k2, k3).
    l3_mode: "global" or "parent" (see module docstring).
    seed: base seed; level i uses ``seed + i``.
    n_iter: Lloyd iterations per level.
    mesh: optional mesh to shard the points over.
    log: optional printer of one line per level.
    max_points_per_centroid: if set, every k-means trains on at most that
      many points per centroid (a seeded sample; per parent group at level
      3), then assigns all points: faiss's sampling (its default is 256).
      None trains on all points.

  Returns:
    (codebooks, codes [N, 3] int32, final residual [N, D] float32).
  """
  if l3_mode not in L3_MODES:
    raise ValueError(f"l3_mode must be one of {L3_MODES}, got {l3_mode!r}")
  k1, k2, k3 = levels
  log = log or (lambda _: None)
  r = np.asarray(emb, np.float32)
  sample = dict(
    n_iter=n_iter, mesh=mesh, max_points_per_centroid=max_points_per_centroid
  )
  km1 = kmeans.fit_kmeans(r, k1, seed=seed, **sample)
  r1 = r - km1.centroids[km1.assign]
  log(f"RQ level 1: k={k1} inertia={km1.inertia:.4g}")
  km2 = kmeans.fit_kmeans(r1, k2, seed=seed + 1, **sample)
  r2 = r1
  r2 -= km2.centroids[km2.assign]  # in place: keeps only one N x D residual
  del r1
  log(f"RQ level 2: k={k2} inertia={km2.inertia:.4g}")
  if l3_mode in PARENT_MODES:
    groups = l3_group_ids(l3_mode, km1.assign, km2.assign, k2)
    n_groups = k1 * k2 if l3_mode == "parent_ab" else k2
    l3, c = _fit_parent_l3(r2, groups, n_groups, k3, seed=seed + 2, **sample)
    r3 = r2
    r3 -= l3[groups, c]
  else:
    km3 = kmeans.fit_kmeans(r2, k3, seed=seed + 2, **sample)
    l3, c = km3.centroids, km3.assign
    r3 = r2
    r3 -= l3[c]
  log(f"RQ level 3 ({l3_mode}): k={k3} mse={np.mean(np.sum(r3 * r3, -1)):.4g}")
  codebooks = RQCodebooks(l1=km1.centroids, l2=km2.centroids, l3=l3, l3_mode=l3_mode)
  codes = np.stack([km1.assign, km2.assign, c], axis=1).astype(np.int32)
  return codebooks, codes, r3


def encode_rq(
  emb: np.ndarray,
  codebooks: RQCodebooks,
  *,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, list[float], np.ndarray]:
  """Encodes embeddings with fixed codebooks (no retraining).

  Args:
    emb: [N, D] embeddings.
    codebooks: fitted codebooks (unchanged).
    mesh: optional mesh.

  Returns:
    (codes [N, 3] int32, mean squared residual norm after each of the 3
    levels, final residual r3 [N, D]).
  """
  emb = np.asarray(emb, np.float32)
  codes, sq = sid_encode.encode_blocks(
    emb,
    mode=codebooks.l3_mode,
    l1=codebooks.l1,
    l2=codebooks.l2,
    l3=codebooks.l3,
    mesh=mesh,
  )
  a, b, c = codes[:, 0], codes[:, 1], codes[:, 2]
  r = emb - codebooks.l1[a]
  r -= codebooks.l2[b]
  r -= codebooks.level3_vectors(b, c, a)
  mse = np.mean(sq.astype(np.float64), axis=0).tolist()
  return codes, mse, r
