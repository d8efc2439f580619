"""Item-level ranking metrics as per-batch sums in JAX, aggregated on the host.

Each jitted batch function returns SUMS over the batch (per slice group), so
batches, devices and hosts combine by addition; the host divides at the end
(``MetricAccumulator.result``). Exact formulas: docs/EVAL.md. For one query
with ranked item rows r_1..r_Kmax (-1 pad), distinct target rows T (-1 pad
dropped), and h_k = 1 if r_k is a target seen for the first time at rank k:

  HR@K     = 1[sum_{k<=K} h_k > 0]
  Recall@K = sum_{k<=K} h_k / |T|
  MRR@K    = 1 / k*  where k* = the first k with h_k = 1, if k* <= K, else 0
  NDCG@K   = sum_{k<=K} h_k / log2(k + 1)  /  sum_{i<=min(|T|,K)} 1 / log2(i + 1)
  gNDCG@K  = sum_{k<=K} (2^g(r_k) - 1) / log2(k + 1)  /  IDCG_K
             g = the query's relevance grade of the item (0 if unlabelled, and
             0 for a repeat of an item already ranked); IDCG_K from the
             query's labelled grades sorted descending. Averaged over the
             queries with IDCG > 0 only (``n_graded``).

Averages are over the rows of each group (a [B, G] weight matrix: the set's
mask times slice membership), each row weighted equally.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_KS = (10, 50, 350)
METRICS = ("hr", "recall", "mrr", "ndcg", "gndcg")


def metric_names(ks: Sequence[int]) -> list[str]:
  return [f"{m}@{k}" for m in METRICS for k in ks]


@functools.partial(jax.jit, static_argnames=("ks",))
def batch_sums(
  ranked: jax.Array,
  targets: jax.Array,
  rel_items: jax.Array,
  rel_grades: jax.Array,
  groups: jax.Array,
  ks: tuple[int, ...],
) -> dict[str, jax.Array]:
  """Per-group metric sums of one batch.

  Args:
    ranked: [B, K_max] int32 item rows, best first (-1 pad).
    targets: [B, T] int32 distinct target item rows (-1 pad).
    rel_items: [B, R] int32 labelled item rows of the query (-1 pad).
    rel_grades: [B, R] int32 their grades (0..3).
    groups: [B, G] float32 weights (0/1 membership of each row in each group).
    ks: cut-offs, each <= K_max.

  Returns:
    "n" [G], "n_graded" [G], "<metric>@<K>" [G] for METRICS x ks (sums),
    "first_hit" [G, K_max + 1] (count of rows whose first hit is at rank
    index k; the last column: no hit within K_max).
  """
  b, k_max = ranked.shape
  valid_r = ranked >= 0
  match = (ranked[:, :, None] == targets[:, None, :]) & (
    valid_r[:, :, None] & (targets >= 0)[:, None, :]
  )
  first = match & (jnp.cumsum(match, axis=1) == 1)
  h = first.any(axis=2).astype(jnp.float32)  # [B, K]
  n_t = (targets >= 0).sum(axis=1).astype(jnp.float32)
  pos = jnp.arange(k_max)
  disc = 1.0 / jnp.log2(pos.astype(jnp.float32) + 2.0)  # rank k+1 -> 1/log2(k+2)
  any_hit = h.max(axis=1) > 0
  first_rank = jnp.where(any_hit, jnp.argmax(h, axis=1), k_max)  # [B]

  rmatch = (ranked[:, :, None] == rel_items[:, None, :]) & (
    valid_r[:, :, None] & (rel_items >= 0)[:, None, :]
  )
  rfirst = rmatch & (jnp.cumsum(rmatch, axis=1) == 1)
  grade = jnp.max(jnp.where(rfirst, rel_grades[:, None, :], 0), axis=2)
  gain = jnp.exp2(grade.astype(jnp.float32)) - 1.0  # [B, K]
  ideal = -jnp.sort(-jnp.where(rel_items >= 0, rel_grades, 0), axis=1)
  ideal_gain = jnp.exp2(ideal.astype(jnp.float32)) - 1.0  # [B, R]
  r = rel_items.shape[1]
  ideal_disc = 1.0 / jnp.log2(jnp.arange(r, dtype=jnp.float32) + 2.0)

  out = {}
  w = groups.astype(jnp.float32)
  out["n"] = w.sum(axis=0)
  has_ideal = ideal_gain[:, 0] > 0
  out["n_graded"] = (w * has_ideal[:, None]).sum(axis=0)
  safe_t = jnp.maximum(n_t, 1.0)
  for k in ks:
    if k > k_max:
      raise ValueError(f"cut-off {k} > ranking length {k_max}")
    hits = h[:, :k].sum(axis=1)
    per = {
      "hr": (hits > 0).astype(jnp.float32),
      "recall": hits / safe_t,
      "mrr": jnp.where(first_rank < k, 1.0 / (first_rank + 1.0), 0.0),
    }
    dcg = (h[:, :k] * disc[:k]).sum(axis=1)
    cut = jnp.minimum(n_t, k)
    idcg = jnp.where(pos[None, :] < cut[:, None], disc[None, :], 0.0).sum(axis=1)
    per["ndcg"] = jnp.where(idcg > 0, dcg / jnp.maximum(idcg, 1e-12), 0.0)
    gdcg = (gain[:, :k] * disc[:k]).sum(axis=1)
    gidcg = (ideal_gain[:, :k] * ideal_disc[:k]).sum(axis=1)
    per["gndcg"] = jnp.where(gidcg > 0, gdcg / jnp.maximum(gidcg, 1e-12), 0.0)
    for name, v in per.items():
      out[f"{name}@{k}"] = (w * v[:, None]).sum(axis=0)
  onehot = jax.nn.one_hot(first_rank, k_max + 1, dtype=jnp.float32)
  out["first_hit"] = w.T @ onehot
  return out


@jax.jit
def beam_diagnostic_sums(
  sid_index: jax.Array, exact_sid_index: jax.Array, weights: jax.Array
) -> dict[str, jax.Array]:
  """Sums of beam-output diagnostics.

  Args:
    sid_index: [B, W] int32 beam SIDs (rows of unique_codes; -1 invalid).
    exact_sid_index: [B, W'] int32 the exhaustive top-W' SIDs under the same
      model score (-1 pad); pass a [B, 0] array when not available.
    weights: [B] float32 (0 for padding rows).

  Returns:
    "beams", "valid", "duplicate" (valid beams repeating an earlier beam's
    SID), "exact" (valid exact SIDs) and "exact_found" (of those, present in
    the beams), all weighted sums; "queries".
  """
  w = sid_index.shape[1]
  valid = sid_index >= 0
  same = (sid_index[:, :, None] == sid_index[:, None, :]) & valid[:, :, None]
  earlier = jnp.tril(jnp.ones((w, w), bool), k=-1)
  dup = (same & earlier[None]).any(axis=2)
  ev = exact_sid_index >= 0
  found = (
    (exact_sid_index[:, :, None] == sid_index[:, None, :]) & valid[:, None, :]
  ).any(axis=2) & ev
  wt = weights.astype(jnp.float32)
  return {
    "queries": wt.sum(),
    "beams": (wt * w).sum(),
    "valid": (wt * valid.sum(axis=1)).sum(),
    "duplicate": (wt * dup.sum(axis=1)).sum(),
    "exact": (wt * ev.sum(axis=1)).sum(),
    "exact_found": (wt * found.sum(axis=1)).sum(),
  }


def reduce_across_processes(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Adds per-host sums over all JAX processes (identity on one host)."""
  if jax.process_count() == 1:
    return {k: np.asarray(v, np.float64) for k, v in sums.items()}
  from jax.experimental import multihost_utils

  return {
    k: np.asarray(multihost_utils.process_allgather(np.asarray(v)), np.float64).sum(0)
    for k, v in sums.items()
  }


class MetricAccumulator:
  """Host-side float64 accumulation of ``batch_sums`` outputs."""

  def __init__(self, groups: Sequence[str], ks: Sequence[int]):
    self.groups = tuple(groups)
    self.ks = tuple(ks)
    self.sums: dict[str, np.ndarray] = {}

  def add(self, sums: Mapping[str, jax.Array]) -> None:
    for k, v in sums.items():
      v = np.asarray(v, np.float64)
      self.sums[k] = self.sums[k] + v if k in self.sums else v

  def merge(self, other: MetricAccumulator) -> None:
    self.add(other.sums)

  def result(self) -> dict[str, dict[str, float]]:
    """group -> {"n", "n_graded", metric@K ..., "hr_curve": [K_max] list}."""
    s = self.sums
    out = {}
    for g, name in enumerate(self.groups):
      n = float(s["n"][g])
      ng = float(s["n_graded"][g])
      row = {"n": int(round(n)), "n_graded": int(round(ng))}
      for m in metric_names(self.ks):
        denom = ng if m.startswith("gndcg") else n
        row[m] = float(s[m][g] / denom) if denom > 0 else float("nan")
      fh = s["first_hit"][g]
      row["hr_curve"] = (np.cumsum(fh[:-1]) / n).tolist() if n > 0 else []
      out[name] = row
    return out


def compute(
  ranked: np.ndarray,
  targets: np.ndarray,
  rel_items: np.ndarray,
  rel_grades: np.ndarray,
  groups: Mapping[str, np.ndarray],
  ks: Sequence[int] = DEFAULT_KS,
  batch_size: int = 512,
  across_processes: bool = False,
) -> dict[str, dict[str, float]]:
  """Metrics of a whole set, in fixed-size jitted batches (last one padded).

  Args:
    ranked: [E, K_max] item rows (-1 pad).
    targets: [E, T] target rows (-1 pad).
    rel_items, rel_grades: [E, R] relevance labels of each row's query.
    groups: group name -> [E] bool membership.
    ks: cut-offs.
    batch_size: rows per jitted call.
    across_processes: add the sums of every JAX process (each host passing
      its own rows).

  Returns:
    ``MetricAccumulator.result()``.

  Raises:
    ValueError: shapes disagree, or a row in some group has no target.
  """
  ranked = np.asarray(ranked, np.int32)
  targets = np.asarray(targets, np.int32)
  e = ranked.shape[0]
  if e == 0 or ranked.ndim != 2:
    raise ValueError(
      f"compute: want a non-empty [E, K_max] ranking, got {ranked.shape}"
    )
  for name, arr in (("targets", targets), ("rel_items", rel_items)):
    if np.shape(arr)[0] != e:
      raise ValueError(f"compute: {name} has {np.shape(arr)[0]} rows, ranked {e}")
  names = list(groups)
  g = np.stack([np.asarray(groups[n], bool) for n in names], axis=1).astype(np.float32)
  if g.shape[0] != e:
    raise ValueError(f"compute: groups have {g.shape[0]} rows, ranked {e}")
  empty = (g.sum(axis=1) > 0) & ~(targets >= 0).any(axis=1)
  if empty.any():
    raise ValueError(
      f"compute: row {int(np.argmax(empty))} is in a group but has no target "
      f"({int(empty.sum())} such rows)"
    )
  acc = MetricAccumulator(names, ks)
  bs = max(1, min(batch_size, e))
  ks_t = tuple(int(k) for k in ks)
  rel_items = np.asarray(rel_items, np.int32)
  rel_grades = np.asarray(rel_grades, np.int32)
  for start in range(0, e, bs):
    stop = min(start + bs, e)

    def pad(a, fill, stop=stop, start=start):
      out = np.full((bs,) + a.shape[1:], fill, a.dtype)
      out[: stop - start] = a[start:stop]
      return out

    acc.add(
      batch_sums(
        pad(ranked, -1),
        pad(targets, -1),
        pad(rel_items, -1),
        pad(rel_grades, 0),
        pad(g, 0),
        ks=ks_t,
      )
    )
  if across_processes:
    acc.sums = reduce_across_processes(acc.sums)
  return acc.result()


def beam_diagnostics(
  sid_index: np.ndarray,
  exact_sid_index: np.ndarray | None = None,
  batch_size: int = 256,
) -> dict[str, float]:
  """valid_sid_rate, duplicate_rate (of valid beams) and, with the exhaustive
  top-K, beam_recall (exact SIDs found by the beams / exact SIDs)."""
  sid_index = np.asarray(sid_index, np.int32)
  e = sid_index.shape[0]
  exact = (
    np.zeros((e, 0), np.int32)
    if exact_sid_index is None
    else np.asarray(exact_sid_index, np.int32)
  )
  bs = max(1, min(batch_size, e))
  tot: dict[str, float] = {}
  for start in range(0, e, bs):
    stop = min(start + bs, e)
    n = stop - start

    def pad(a, n=n, start=start, stop=stop):
      out = np.full((bs,) + a.shape[1:], -1, np.int32)
      out[:n] = a[start:stop]
      return out

    wt = np.zeros(bs, np.float32)
    wt[:n] = 1
    s = beam_diagnostic_sums(pad(sid_index), pad(exact), wt)
    for k, v in s.items():
      tot[k] = tot.get(k, 0.0) + float(v)
  out = {
    "valid_sid_rate": tot["valid"] / tot["beams"] if tot.get("beams") else float("nan"),
    "duplicate_rate": tot["duplicate"] / tot["valid"] if tot.get("valid") else 0.0,
  }
  if exact_sid_index is not None:
    out["beam_recall"] = (
      tot["exact_found"] / tot["exact"] if tot.get("exact") else float("nan")
    )
  return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of ``scores`` [N] for binary ``labels`` [N] (Mann-Whitney U
  with average ranks over tied scores, so a tie counts one half); NaN when
  one class is empty."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="stable")
  _, start, counts = np.unique(scores[order], return_index=True, return_counts=True)
  ranks = np.empty(len(scores), np.float64)
  ranks[order] = np.repeat(start + (counts + 1) / 2.0, counts)  # 1-based averages
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
