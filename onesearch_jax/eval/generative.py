"""The generative model's item ranking on the eval set.

Glue between decoding/ and eval/: encoder inputs of the eval tasks (one
stream per set, rows aligned with per-row metadata) -> trie-constrained beam
search -> beams' ``sid_index`` -> item rows of the eval set through the SID ->
items multimap and its tie policy. Takes a model and ready inputs, never a
checkpoint path (eval/ does not import train/).

Shapes: E eval-set rows, W beams, K_max ranking length, U unique SIDs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from onesearch_jax.decoding import beam_search as beam_lib
from onesearch_jax.decoding import exhaustive
from onesearch_jax.eval import evaluate, examples, metrics
from onesearch_jax.eval import sid_items as sid_items_lib

Inputs = Iterable[tuple[Mapping[str, np.ndarray], Sequence[Mapping[str, object]]]]


@dataclasses.dataclass(frozen=True)
class SetBeams:
  """Beam output of one eval set, rows in the set's order.

  Attributes:
    sid_index: [n, W] int32 beams' SID rows (-1 = padding / invalid).
    scores: [n, W] float32 sequence log-probs, descending.
    session_ids: n session ids (row i's metadata).
    seconds: wall time of the decode.
    reused: rows whose beams came from an earlier set (``decode_sets``).
  """

  sid_index: np.ndarray
  scores: np.ndarray
  session_ids: tuple[str, ...]
  seconds: float
  reused: int = 0


def decode_set(
  searcher: beam_lib.BeamSearcher,
  inputs: Inputs,
  *,
  log: Callable[[str], None] | None = None,
  name: str = "",
) -> SetBeams:
  """Runs the beam search over every batch of one eval stream.

  Args:
    searcher: from ``decoding.make_beam_search`` (compiled once; feed batches
      of one fixed shape, e.g. ``eval_inputs(..., pad_last=True)``).
    inputs: (batch, metas) pairs; batch has encoder_input_tokens [B, L]
      (+ long_seq_features [B, 9, D]); metas[i] describes row i and may be
      shorter than B (padding rows are dropped).
    log: printer for one line per ~10 batches.
    name: set name for the progress lines.

  Returns:
    SetBeams with one row per metadata entry.
  """
  start = time.time()
  sids, scores, sessions = [], [], []
  for i, (batch, metas) in enumerate(inputs):
    res = searcher(dict(batch))
    n = len(metas)
    sids.append(np.asarray(res.sid_index)[:n])
    scores.append(np.asarray(res.scores)[:n])
    sessions += [str(m["session_id"]) for m in metas]
    if log and (i + 1) % 10 == 0:
      log(
        f"[eval] decoded {len(sessions)} {name} queries in {time.time() - start:.1f} s"
      )
  w = searcher.beam_size
  return SetBeams(
    sid_index=np.concatenate(sids) if sids else np.zeros((0, w), np.int32),
    scores=np.concatenate(scores) if scores else np.zeros((0, w), np.float32),
    session_ids=tuple(sessions),
    seconds=time.time() - start,
  )


def _row_keys(batch: Mapping[str, np.ndarray], metas) -> list[tuple[str, bytes]]:
  """(session id, digest of the row's encoder inputs) of each real row."""
  keys = []
  for i, m in enumerate(metas):
    h = hashlib.sha1()
    for k in sorted(batch):
      h.update(k.encode())
      h.update(np.ascontiguousarray(np.asarray(batch[k])[i]).tobytes())
    keys.append((str(m["session_id"]), h.digest()))
  return keys


def decode_sets(
  searcher: beam_lib.BeamSearcher,
  streams: Mapping[str, Inputs],
  *,
  log: Callable[[str], None] | None = None,
) -> dict[str, SetBeams]:
  """``decode_set`` of several eval streams, each distinct row decoded once.

  The streams are decoded in order; a batch of a later stream whose rows
  all appeared (same session id and identical encoder inputs) in an earlier
  stream is not decoded, its rows take the earlier beams. Batches with a new
  row are decoded whole, as ``decode_set`` would (so every row's beams are
  the ones its own stream's batch gives, up to batch composition). In the
  eval set the order sessions are a subset of the click sessions with the
  same inputs, so the order set costs no decode.

  Args:
    searcher: the compiled beam search.
    streams: kind -> (batch, metas) pairs (see ``decode_set``).
    log: printer for one line per ~10 decoded batches.

  Returns:
    kind -> SetBeams (``seconds``: that stream's share of the wall time;
    ``reused`` rows taken from an earlier stream).
  """
  seen: dict[tuple[str, bytes], tuple[np.ndarray, np.ndarray]] = {}
  out = {}
  for kind, inputs in streams.items():
    start = time.time()
    sids, scores, sessions = [], [], []
    decoded = reused = 0
    for batch, metas in inputs:
      keys = _row_keys(batch, metas)
      n = len(metas)
      if not n:
        continue
      if all(k in seen for k in keys):
        sids.append(np.stack([seen[k][0] for k in keys]))
        scores.append(np.stack([seen[k][1] for k in keys]))
        reused += n
      else:
        res = searcher(dict(batch))
        sids.append(np.asarray(res.sid_index)[:n])
        scores.append(np.asarray(res.scores)[:n])
        decoded += 1
        for i, k in enumerate(keys):
          seen.setdefault(k, (sids[-1][i], scores[-1][i]))
        if log and decoded % 10 == 0:
          log(
            f"[eval] decoded {len(sessions) + n} {kind} queries in "
            f"{time.time() - start:.1f} s"
          )
      sessions += [k[0] for k in keys]
    w = searcher.beam_size
    out[kind] = SetBeams(
      sid_index=np.concatenate(sids) if sids else np.zeros((0, w), np.int32),
      scores=np.concatenate(scores) if scores else np.zeros((0, w), np.float32),
      session_ids=tuple(sessions),
      seconds=time.time() - start,
      reused=reused,
    )
  return out


def check_alignment(eval_set: examples.EvalSet, kind: str, beams: SetBeams) -> None:
  """Raises unless the decoded rows are exactly the eval set's rows of `kind`."""
  rows = eval_set.rows_of(kind)
  want = [eval_set.session_ids[r] for r in rows]
  got = list(beams.session_ids)
  if got != want:
    bad = next(
      (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
      min(len(got), len(want)),
    )
    raise ValueError(
      f"eval {kind} set: decoded {len(got)} rows, the eval set has {len(want)}; "
      f"first mismatch at row {bad} "
      f"(decoded {got[bad] if bad < len(got) else None!r}, "
      f"eval set {want[bad] if bad < len(want) else None!r})"
    )


def rank_eval_set(
  eval_set: examples.EvalSet,
  per_set: Mapping[str, SetBeams],
  index: sid_items_lib.SidItemIndex,
  k_max: int = evaluate.DEFAULT_K_MAX,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
  """Item rows of the whole eval set from the beams of its click/order sets.

  Args:
    eval_set: the eval set.
    per_set: "click" / "order" -> SetBeams in ``eval_set.rows_of(kind)`` order.
    index: SID -> items (tie policy) over the artefact's items.
    k_max: ranking length.

  Returns:
    (rows [E, k_max] int32 item rows of eval_set.item_ids, sid_index [E, W]
    int32 beams per eval-set row, diagnostics: valid_sid_rate, duplicate_rate,
    duplicate_items (mean items dropped as repeats), sets_differ (sessions in
    both sets whose two rankings differ; their click-set ranking is used)).
  """
  item_rows, beam_rows = {}, {}
  dup_items = []
  for kind, beams in per_set.items():
    check_alignment(eval_set, kind, beams)
    rows, dups = evaluate.ranking_from_beams(index, beams.sid_index, eval_set, k_max)
    item_rows[kind] = rows
    beam_rows[kind] = beams.sid_index
    dup_items.append(np.asarray(dups, np.float64))
  rows, differ = evaluate.combine_set_rankings(eval_set, item_rows)
  sid_rows, _ = evaluate.combine_set_rankings(eval_set, beam_rows)
  covered = np.zeros(len(eval_set), bool)
  for kind in per_set:
    covered[eval_set.rows_of(kind)] = True
  diag = metrics.beam_diagnostics(sid_rows[covered])
  diag["duplicate_items"] = (
    float(np.concatenate(dup_items).mean()) if dup_items else 0.0
  )
  diag["sets_differ"] = float(differ)
  return rows, sid_rows, diag


def beam_recall_vs_exact(
  model,
  searcher: beam_lib.BeamSearcher | None,
  batch: Mapping[str, np.ndarray],
  unique_codes: np.ndarray,
  token_offsets: Sequence[int],
  n_rows: int,
  *,
  sid_index: np.ndarray | None = None,
) -> float:
  """Share of the exhaustive top-W SIDs that the beam search finds.

  Scores every catalogue SID by teacher forcing for the first `n_rows` rows
  of `batch` (cost n_rows * U decoder steps per level, the cross K/V shared
  per query: small catalogues or subsets).

  Args:
    model: the model the beams came from.
    searcher: its beam search (only used when `sid_index` is None).
    batch: encoder inputs whose first `n_rows` rows are scored.
    unique_codes: [U, S] the trie's SIDs (sid_index order).
    token_offsets: (S,) vocabulary id of code 0 per level.
    n_rows: rows to score.
    sid_index: [>= n_rows, W] beams already decoded for these rows (e.g. the
      first rows of ``decode_set``'s output): no second decode.
  """
  if sid_index is None:
    sid_index = np.asarray(searcher(dict(batch)).sid_index)
  got = np.asarray(sid_index)[:n_rows]
  exact = exhaustive.score_all_sids(
    model, {k: np.asarray(v)[:n_rows] for k, v in batch.items()},
    unique_codes, token_offsets, shared_cross_kv=True,
  )  # fmt: skip
  w = got.shape[1]
  top = np.argsort(-exact, axis=1, kind="stable")[:, :w].astype(np.int32)
  return metrics.beam_diagnostics(got, top)["beam_recall"]
