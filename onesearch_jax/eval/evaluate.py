"""Score rankings on the eval set, write results.{md,json} + an HR@K plot,
and run the baselines (BM25, dense, MCA, sidq_pop, query_memory) end to end.

API for the pipeline's eval stage::

  eval_set = examples.build_eval_set(world_dir, sid_items=..., sid_queries=...)
  rankings = run_baselines(world_dir, sid_dir, eval_set=eval_set)
  rankings["onesearch"] = sid_index.expand(beam_sid_index, k_max)  # [E, K_max]
  results = evaluate_rankings(eval_set, rankings, diagnostics={...})
  write_results(results, Workdir(workdir).eval)  # stages.workdir

Every ranking is [E, K_max] int32 item rows of ``eval_set.item_ids`` (-1 pad),
one row per eval-set row; the click and order sets are row subsets.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from onesearch_jax.eval import baselines as baselines_lib
from onesearch_jax.eval import examples, metrics, sensitivity
from onesearch_jax.eval import sid_items as sid_items_lib
from onesearch_jax.eval.baselines import bm25 as bm25_lib
from onesearch_jax.eval.baselines import dense as dense_lib
from onesearch_jax.eval.baselines import mca as mca_lib
from onesearch_jax.eval.baselines import rules as rules_lib
from onesearch_jax.khqe import artefact

DEFAULT_K_MAX = 350
BASELINES = baselines_lib.NAMES
RESULTS_MD, RESULTS_JSON, HR_PNG = "results.md", "results.json", "hr_curve.png"
QSENS = f"qsens@{sensitivity.K}"


def slice_groups(eval_set: examples.EvalSet, kind: str) -> dict[str, np.ndarray]:
  """Group name -> [E] bool for one set: "all" and "<family>=<label>"."""
  mask = eval_set.mask(kind)
  out = {"all": mask}
  labels = {"query_freq": examples.QUERY_FREQ}
  labels.update(user=examples.COLD_WARM, item=examples.COLD_WARM)
  for family, values in eval_set.slices(kind).items():
    for v in labels[family]:
      out[f"{family}={v}"] = mask & (values == v)
  return out


def remap_rows(
  rows: np.ndarray, from_ids: Sequence[str], to_ids: Sequence[str]
) -> np.ndarray:
  """Re-indexes item rows of ``from_ids`` into ``to_ids`` (unknown -> -1)."""
  where = {i: n for n, i in enumerate(to_ids)}
  table = np.asarray([where.get(i, -1) for i in from_ids] + [-1], np.int32)
  rows = np.asarray(rows)
  return table[np.where(rows >= 0, rows, len(from_ids))]


def ranking_from_beams(
  index: sid_items_lib.SidItemIndex,
  sid_index: np.ndarray,
  eval_set: examples.EvalSet,
  k_max: int = DEFAULT_K_MAX,
) -> tuple[np.ndarray, np.ndarray]:
  """A generative model's item ranking from its beams.

  Args:
    index: the SID -> items index (``SidItemIndex.from_artefact``).
    sid_index: [E, W] beam SID rows for the eval-set rows (-1 invalid).
    eval_set: the eval set (its ``item_ids`` order is the output's).
    k_max: ranking length.

  Returns:
    (rows [E, k_max] int32 of ``eval_set.item_ids``, duplicate beams [E]).
  """
  rows, dups = index.expand(sid_index, k_max, return_duplicates=True)
  if tuple(index.item_ids) != tuple(eval_set.item_ids):
    rows = remap_rows(rows, index.item_ids, eval_set.item_ids)
  return rows, dups


def combine_set_rankings(
  eval_set: examples.EvalSet, per_set: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, int]:
  """One [E, K] ranking from rankings of the click / order sets alone.

  ``per_set[kind]`` is [n_kind, K] in ``eval_set.rows_of(kind)`` order (the
  order of ``data.tasks``' ``eval_{kind}`` examples). A session in both sets
  takes the click set's ranking.

  Returns:
    (rows [E, K] int32, -1 for rows of neither given set; the number of
    sessions in both sets whose two rankings differ).
  """
  k = max(np.shape(v)[1] for v in per_set.values())
  out = np.full((len(eval_set), k), -1, np.int32)
  filled = np.zeros(len(eval_set), bool)
  differ = 0
  for kind in examples.KINDS:
    if kind not in per_set:
      continue
    rows = eval_set.rows_of(kind)
    got = np.asarray(per_set[kind], np.int32)
    if got.shape[0] != len(rows):
      raise ValueError(
        f"combine_set_rankings: {kind} ranking has {got.shape[0]} rows, the "
        f"{kind} set {len(rows)}"
      )
    got = np.pad(got, ((0, 0), (0, k - got.shape[1])), constant_values=-1)
    both = filled[rows]
    differ += int(np.any(out[rows[both]] != got[both], axis=1).sum())
    out[rows[~both]] = got[~both]
    filled[rows] = True
  return out, differ


def evaluate_rankings(
  eval_set: examples.EvalSet,
  rankings: Mapping[str, np.ndarray],
  ks: Sequence[int] = metrics.DEFAULT_KS,
  *,
  diagnostics: Mapping[str, Mapping[str, float]] | None = None,
  batch_size: int = 512,
  across_processes: bool = False,
) -> dict:
  """Metrics of every system on the click and order sets, with slices.

  Args:
    eval_set: the evaluation set.
    rankings: system name -> [E, K_max] item rows (-1 pad), K_max >= max(ks).
    ks: cut-offs.
    diagnostics: optional system -> beam diagnostics (``metrics.beam_diagnostics``).
    batch_size: rows per jitted metric call.
    across_processes: sum over JAX processes (each passing its own rows).

  Returns:
    {"ks", "k_max", "sets": {kind: n}, "skips", "query_sensitivity":
     {"k", "queries", "pairs", "seed"},
     "systems": {name: {"click": {group: {...}}, "order": {...},
                        "qsens@10": float, "diagnostics": {...}}}}.
    ``qsens@10`` (``eval.sensitivity``): mean top-10 overlap over pairs of
    click queries of different level-1 categories (NaN without pairs).
  """
  ks = tuple(int(k) for k in ks)
  out = {
    "ks": list(ks),
    "sets": {k: int(eval_set.mask(k).sum()) for k in examples.KINDS},
    "skips": dict(eval_set.skips),
    "systems": {},
  }
  # One target width for both sets: one compiled metric function.
  width = max(eval_set.click_targets.shape[1], eval_set.order_targets.shape[1])
  targets = {}
  for kind in examples.KINDS:
    t = eval_set.targets(kind)
    targets[kind] = np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=-1)
  k_max = None
  for name, ranked in rankings.items():
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != len(eval_set):
      raise ValueError(
        f"evaluate_rankings: ranking {name!r} has shape {ranked.shape}, want "
        f"[{len(eval_set)}, K_max]"
      )
    if ranked.shape[1] < max(ks):
      raise ValueError(
        f"evaluate_rankings: ranking {name!r} has {ranked.shape[1]} columns < "
        f"max(ks) = {max(ks)}"
      )
    if ranked.size and ranked.max() >= len(eval_set.item_ids):
      raise ValueError(
        f"evaluate_rankings: ranking {name!r} holds item row {ranked.max()} >= "
        f"{len(eval_set.item_ids)} items"
      )
    k_max = ranked.shape[1] if k_max is None else max(k_max, ranked.shape[1])
    sys_out = {}
    for kind in examples.KINDS:
      if not eval_set.mask(kind).any():
        sys_out[kind] = {}
        continue
      sys_out[kind] = metrics.compute(
        ranked,
        targets[kind],
        eval_set.rel_items,
        eval_set.rel_grades,
        slice_groups(eval_set, kind),
        ks=ks,
        batch_size=batch_size,
        across_processes=across_processes,
      )
    if diagnostics and name in diagnostics:
      sys_out["diagnostics"] = dict(diagnostics[name])
    out["systems"][name] = sys_out
  out["k_max"] = k_max
  info, qsens = sensitivity.query_sensitivity(eval_set, rankings)
  out["query_sensitivity"] = info
  for name, v in qsens.items():
    out["systems"][name][QSENS] = v
  return out


# ------------------------------------------------------------ writing

_LABEL = {"hr": "HR", "recall": "R", "mrr": "MRR", "ndcg": "NDCG", "gndcg": "gNDCG"}


def _fmt(v) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "-"
  return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
  return lines


def results_markdown(results: Mapping) -> str:
  """The results.md text (see docs/EVAL.md, "Reading results.md")."""
  ks = results["ks"]
  names = metrics.metric_names(ks)
  kinds = [k for k in examples.KINDS if results["sets"].get(k)]
  lines = ["# Evaluation results", ""]
  sets = ", ".join(f"{k}: {results['sets'][k]} sessions" for k in examples.KINDS)
  lines += [f"Test sets: {sets}. Ranking length K_max = {results['k_max']}."]
  if results.get("skips"):
    lines += [f"Left out: {results['skips']}."]
  qs = results.get("query_sensitivity")
  if qs:
    lines += [
      f"{QSENS} (last column): mean top-{qs['k']} overlap over {qs['pairs']} "
      f"pairs of the {qs['queries']} distinct click queries whose level-1 "
      "categories differ (0 = the ranking follows the query, 1 = query-blind)."
    ]
  lines += ["", "## All test sessions", ""]
  header = ["system"] + [f"{k} {_metric_label(m)}" for k in kinds for m in names]
  header += [QSENS]
  rows = []
  for sys_name, s in results["systems"].items():
    rows.append(
      [sys_name] + [s[k]["all"][m] for k in kinds for m in names] + [s.get(QSENS)]
    )
  lines += _table(header, rows)
  for kind in kinds:
    lines += ["", f"## Slices, {kind} set", ""]
    header = ["system", "slice", "n", "n_graded"] + [_metric_label(m) for m in names]
    rows = []
    for sys_name, s in results["systems"].items():
      for group, vals in s[kind].items():
        if group == "all":
          continue
        rows.append(
          [sys_name, group, vals["n"], vals["n_graded"]] + [vals[m] for m in names]
        )
    lines += _table(header, rows)
  auc = results.get("impression_auc")
  if auc:
    lines += ["", "## Click AUC on the test impressions", ""]
    lines += [
      f"{auc['impressions']} impressions of the non-train sessions, "
      f"{auc['clicks']} clicks; position-free scores.",
      "",
    ]
    lines += _table(
      ["scorer", "click AUC"],
      [[k, auc[k]] for k in ("reward model", "mca ranker") if k in auc],
    )
  diag = {
    n: s["diagnostics"] for n, s in results["systems"].items() if "diagnostics" in s
  }
  if diag:
    keys = sorted({k for d in diag.values() for k in d})
    lines += ["", "## Beam diagnostics", ""]
    lines += _table(
      ["system"] + keys, [[n] + [d.get(k) for k in keys] for n, d in diag.items()]
    )
  return "\n".join(lines) + "\n"


def summary_table(results: Mapping) -> str:
  """A compact Markdown table for the terminal: per system, HR@K and MRR@K at
  the smallest and largest K, and graded NDCG at the smallest K, per set; then
  the query sensitivity (``qsens@10``, lower = more query-specific)."""
  ks = results["ks"]
  lo, hi = min(ks), max(ks)
  cols = [f"hr@{lo}", f"hr@{hi}", f"mrr@{lo}", f"gndcg@{lo}"]
  kinds = [k for k in examples.KINDS if results["sets"].get(k)]
  header = ["system"] + [f"{k} {_metric_label(m)}" for k in kinds for m in cols]
  header += [QSENS]
  rows = [
    [name] + [s[k]["all"][m] for k in kinds for m in cols] + [s.get(QSENS)]
    for name, s in results["systems"].items()
  ]
  return "\n".join(_table(header, rows))


def _metric_label(m: str) -> str:
  name, k = m.split("@")
  return f"{_LABEL[name]}@{k}"


def plot_hr_curves(results: Mapping, path: str | os.PathLike) -> None:
  """HR@K against K (log scale), one panel per test set."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  kinds = [k for k in examples.KINDS if results["sets"].get(k)]
  fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5 * max(1, len(kinds)), 4))
  axes = np.atleast_1d(axes)
  for ax, kind in zip(axes, kinds, strict=False):
    for name, s in results["systems"].items():
      curve = s[kind]["all"]["hr_curve"]
      if curve:
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("HR@K")
    ax.set_title(f"{kind} set ({results['sets'][kind]} sessions)")
    ax.grid(True, alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_results(results: Mapping, out_dir: str | os.PathLike) -> dict[str, str]:
  """Writes results.md, results.json and hr_curve.png; returns their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {
    "md": str(out / RESULTS_MD),
    "json": str(out / RESULTS_JSON),
    "png": str(out / HR_PNG),
  }
  (out / RESULTS_MD).write_text(results_markdown(results), encoding="utf-8")

  def clean(v):
    if isinstance(v, float) and math.isnan(v):
      return None
    if isinstance(v, dict):
      return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
      return [clean(x) for x in v]
    return v

  (out / RESULTS_JSON).write_text(
    json.dumps(clean(results), indent=1, sort_keys=True) + "\n", encoding="utf-8"
  )
  plot_hr_curves(results, out / HR_PNG)
  return paths


# ------------------------------------------------------------ baselines


def _sessions(
  tables: examples.EvalTables, row_of: Mapping[str, int], train_split: bool = True
):
  train = []
  for r in tables.recall:
    if (r["split"] == "train") != train_split:
      continue
    train.append(
      mca_lib.Session(
        query=str(r["query"]),
        user_id=str(r["user_id"]),
        session_id=str(r["session_id"]),
        impressed=tuple(row_of[i] for i in r["impressed_item_ids"] if i in row_of),
        clicked=tuple(row_of[i] for i in r["clicked_item_ids"] if i in row_of),
      )
    )
  return train


def run_baselines(
  world_dir: str | os.PathLike | examples.EvalTables,
  sid_dir: str | os.PathLike,
  *,
  eval_set: examples.EvalSet | None = None,
  k_max: int = DEFAULT_K_MAX,
  systems: Sequence[str] = BASELINES,
  bm25_config: bm25_lib.BM25Config | None = None,
  mca_config: mca_lib.MCAConfig | None = None,
  log: Callable[[str], None] | None = print,
  timings: dict | None = None,
  extras: dict | None = None,
) -> dict[str, np.ndarray]:
  """Rankings of the BM25, dense, MCA, sidq_pop and query_memory baselines.

  Args:
    world_dir: the world directory (or its ``examples.read_eval_tables``).
    sid_dir: the SID artefact directory (its text encoder embeds queries and
      items for the dense channel; its item and query codes give the rules'
      level-1 clusters).
    eval_set: the set to rank (None: ``build_eval_set(world_dir)``).
    k_max: ranking length.
    systems: which of BASELINES to run.
    bm25_config, mca_config: settings (None: defaults).
    log: called with one line per finished step (None: silent).
    timings: if given, filled with step -> seconds.
    extras: if given and MCA runs, filled with "mca_impression_auc": the
      click AUC of the MCA ranker's scores over every impression of the
      non-train sessions ({"auc", "impressions", "clicks"}), the number the
      reward model's position-free CTR AUC is compared with.

  Returns:
    name -> [E, k_max] int32 item rows of ``eval_set.item_ids`` (-1 pad).
  """
  for s in systems:
    if s not in BASELINES:
      raise ValueError(f"run_baselines: unknown system {s!r}; known {BASELINES}")
  log = log or (lambda _: None)
  times = timings if timings is not None else {}
  t0 = time.perf_counter()

  def done(step, t):
    times[step] = time.perf_counter() - t
    log(f"[baselines +{time.perf_counter() - t0:6.1f}s] {step} ({times[step]:.1f} s)")

  t = time.perf_counter()
  tables = examples.read_eval_tables(world_dir)
  if eval_set is None:
    eval_set = examples.build_eval_set(tables)
  item_ids = tuple(str(r["item_id"]) for r in tables.items)
  if item_ids != tuple(eval_set.item_ids):
    raise ValueError(
      f"run_baselines: {world_dir}: items.jsonl order differs from the eval "
      "set's item_ids (built from another world?)"
    )
  row_of = {i: n for n, i in enumerate(item_ids)}
  done("read world", t)
  queries = list(eval_set.queries)
  out: dict[str, np.ndarray] = {}
  need_bm25 = "bm25" in systems or "mca" in systems
  need_dense = "dense" in systems or "mca" in systems
  if need_bm25:
    t = time.perf_counter()
    bm25 = bm25_lib.BM25Retriever(
      [bm25_lib.item_text(r) for r in tables.items], bm25_config
    )
    if "bm25" in systems:
      out["bm25"] = bm25.search(queries, k_max)[0]
    done("bm25", t)
  mca_config = mca_config or mca_lib.MCAConfig(recall_k=k_max)
  train = _sessions(tables, row_of) if "mca" in systems else []
  if need_dense:
    t = time.perf_counter()
    embedder = dense_lib.KHQEEmbedder(sid_dir)
    # All query texts in one encoder call (each call compiles).
    sample = mca_lib.sample_training_sessions(train, mca_config) if train else []
    embedder.precompute(queries + [s.query for s in sample])
    dense = dense_lib.DenseRetriever(embedder.items(tables.items))
    if "dense" in systems:
      out["dense"] = dense.search(embedder.queries(queries), k_max)[0]
    done("dense", t)
  if "mca" in systems:
    t = time.perf_counter()
    level = {r["item_id"]: r for r in tables.items}
    cats = {}
    for lvl in (2, 3):
      names = [str(level[i].get(f"category_level{lvl}_id", "")) for i in item_ids]
      vocab = {c: n for n, c in enumerate(sorted(set(names)))}
      cats[lvl] = np.asarray([vocab[c] for c in names], np.int64)
    stats = mca_lib.TrainStats(train, cats[2], cats[3])
    cascade = mca_lib.Cascade(bm25, dense, embedder.queries, stats, mca_config)
    ranker = cascade.fit(train)
    times["mca_train_logloss"] = (ranker.losses[0], ranker.losses[-1])
    eval_sessions = [
      mca_lib.Session(q, u, s, (), ())
      for q, u, s in zip(
        eval_set.queries, eval_set.user_ids, eval_set.session_ids, strict=True
      )
    ]
    out["mca"] = cascade.rank(eval_sessions, k_max)
    if extras is not None:
      z, y = cascade.impression_scores(_sessions(tables, row_of, train_split=False))
      extras["mca_impression_auc"] = {
        "auc": metrics.roc_auc(y, z),
        "impressions": int(y.size),
        "clicks": int(y.sum()),
      }
    done(f"mca (ranker log loss {ranker.losses[0]:.4f} -> {ranker.losses[-1]:.4f})", t)
  rules = [s for s in rules_lib.NAMES if s in systems]
  if rules:
    t = time.perf_counter()
    rule_ranker = rules_lib.from_artefact(
      artefact.load(sid_dir), item_ids, tables.recall
    )
    for s in rules:
      out[s] = rule_ranker.rank(s, queries, k_max)
    done(" + ".join(rules), t)
  times["total"] = time.perf_counter() - t0
  return out
