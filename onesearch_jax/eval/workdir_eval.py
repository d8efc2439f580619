"""Scoring a trained workdir: every generative variant and the baselines.

``evaluate_workdir`` is what the eval stage (``stages.eval``) reports;
``workdir_models`` gathers the variants of a workdir (the SFT model, each PARS
phase, the reward-model re-rankers) and ``rank_workdir`` ranks the eval set
with each of them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from onesearch_jax import generator as generator_lib
from onesearch_jax.eval import evaluate, examples, generative
from onesearch_jax.eval.sid_items import SidItemIndex
from onesearch_jax.pars import beam_rerank
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import sft_load

# The eval row of the aligned generator (the last PARS phase's model).
ALIGNED = "onesearch+pars"


def evaluate_workdir(
  workdir: Workdir | pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  pars: Any = None,
  log: Callable[[str], None] = print,
) -> dict:
  """Results of the trained model(s) and the baselines.

  Args:
    workdir: holds sids/ (the SID artefact), train/ (a finished SFT run) and,
      with `pars`, pars/ (a finished pars stage).
    world_dir: the world the SIDs were built from.
    eval_cfg: an eval.config.EvalConfig.
    pars: the pars stage's ParsStageConfig (None: SFT model only).
    log: progress printer.

  Returns:
    ``eval.evaluate.evaluate_rankings`` results for every generative variant
    ("onesearch", "onesearch+pars", "onesearch+rm", "onesearch+pars+rm") and
    the configured baselines, plus "impression_auc" when MCA ran: the click
    AUC of the MCA ranker and (with `pars`) of the reward model on the same
    test impressions.
  """
  return score_workdir(workdir, world_dir, eval_cfg, pars=pars, log=log)[2]


def score_workdir(
  workdir: Workdir | pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  pars: Any = None,
  log: Callable[[str], None] = print,
  extras: dict | None = None,
) -> tuple[Any, dict, dict]:
  """``evaluate_workdir`` with its inputs: (eval set, rankings, results).

  ``extras``, when given, receives what ``rank_workdir`` puts there (e.g.
  "decode": the beam-search wall time of every model and set)."""
  generator = generator_lib.load_generator(workdir, beam_size=eval_cfg.beam_size)
  models, rerankers = workdir_models(workdir, world_dir, generator, pars, log=log)
  extras = {} if extras is None else extras
  eval_set, rankings, diags = rank_workdir(
    workdir,
    world_dir,
    eval_cfg,
    generator=generator,
    models=models,
    rerankers=rerankers,
    log=log,
    extras=extras,
  )
  results = evaluate.evaluate_rankings(
    eval_set, rankings, ks=eval_cfg.ks, diagnostics=diags
  )
  auc = impression_auc(Workdir.of(workdir), extras, pars is not None)
  if auc:
    results["impression_auc"] = auc
  return eval_set, rankings, results


def impression_auc(wd: Workdir, extras: dict, with_rm: bool) -> dict:
  """{"impressions", "clicks", "mca ranker", "reward model"}: click AUCs on
  the non-train sessions' impressions (the reward model's position-free CTR
  AUC from pars/reward_model/metrics.json, the MCA ranker's from the
  baselines); {} when MCA did not run."""
  mca = extras.get("mca_impression_auc")
  if not mca:
    return {}
  out = {"impressions": mca["impressions"], "clicks": mca["clicks"],
         "mca ranker": mca["auc"]}  # fmt: skip
  metrics = wd.pars / "reward_model" / "metrics.json"
  if with_rm and metrics.exists():
    m = json.loads(metrics.read_text())
    if int(m.get("test_impressions", -1)) != mca["impressions"]:
      raise ValueError(
        f"{metrics}: {m.get('test_impressions')} test impressions, the MCA "
        f"ranker's AUC has {mca['impressions']}: not the same impressions"
      )
    out["reward model"] = m["ctr_auc"]
  return out


def workdir_models(
  workdir: Workdir | pathlib.Path,
  world_dir: pathlib.Path,
  generator: generator_lib.Generator,
  pars: Any = None,
  *,
  log: Callable[[str], None] = print,
) -> tuple[list[tuple[str, Any]], list[tuple[str, str, Callable]]]:
  """The generative variants of a workdir, for ``rank_workdir``.

  Args:
    workdir: holds train/ and, with ``pars``, pars/.
    world_dir: the world.
    generator: the workdir's generator (``generator.load_generator``): its
      model is the "onesearch" row.
    pars: the pars stage's ParsStageConfig (None: the SFT model only).
    log: progress printer.

  Returns:
    ([(name, EncoderDecoder)]: "onesearch" and, when a PARS phase has a
    checkpoint, "onesearch+pars" (the last phase's model: the aligned
    generator), with ``ParsConfig.grpo`` "onesearch+grpo" / "onesearch+tpma"
    (the GRPO phase's model), [(name, source name, beam re-ranker)]: with pars.rerank,
    "onesearch+rm" (the RM re-rank of the SFT beams) and
    "onesearch+pars+rm" (of the aligned model's beams)).
  """
  wd = Workdir.of(workdir)
  models: list[tuple[str, Any]] = [("onesearch", generator.model)]
  rerankers: list[tuple[str, str, Callable]] = []
  if pars is None:
    return models, rerankers
  phases = generator_lib.existing_phases(wd.pars)
  if phases:
    final = phases[-1]
    model = generator_lib.load_phase_model(wd, final, pars.pars.phase(final).optimizer)
    models.append((ALIGNED, model))
  grpo_dir = wd.pars / "grpo" / "checkpoints"
  if pars.pars.grpo is not None and grpo_dir.exists():
    model = generator_lib.load_phase_model_from(wd, grpo_dir, pars.pars.grpo.optimizer)
    models.append((f"onesearch+{pars.pars.grpo.variant}", model))
  if pars.rerank:
    fn = beam_rerank.beam_reranker(
      world_dir,
      wd,
      pars.pars,
      generator,
      label_relevance=pars.rerank_label_relevance,
      log=log,
    )
    rerankers += [(f"{src}+rm", src, fn) for src in rerank_sources(phases)]
  return models, rerankers


def rerank_sources(phases: Sequence[str]) -> list[str]:
  """The rows whose beams the RM re-ranks: the SFT model's alone, and the
  aligned model's (the eval rows "<source>+rm")."""
  return ["onesearch"] + ([ALIGNED] if phases else [])


def rank_workdir(
  workdir: Workdir | pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  generator: generator_lib.Generator | None = None,
  models: Sequence[tuple[str, Any]] | None = None,
  rerankers: Sequence[tuple[str, str, Callable]] = (),
  log: Callable[[str], None] = print,
  extras: dict | None = None,
) -> tuple[Any, dict, dict]:
  """The eval set and every system's item ranking of it.

  One beam search is compiled (the generator's) and every model is swapped
  in with ``Generator.with_model`` (same shapes: no recompile).

  Args:
    workdir: holds sids/ and train/ (a finished SFT run).
    world_dir: the world.
    eval_cfg: an eval.config.EvalConfig (one for every row).
    generator: the workdir's generator at ``eval_cfg.beam_size`` (None:
      loaded here).
    models: (name, EncoderDecoder) pairs of the run's architecture; None =
      the generator's model (SFT phase 3) as "onesearch".
    rerankers: (name, source model name, fn) with fn(session_ids,
      sid_index [n, W], scores [n, W]) -> (sid_index, scores) re-ordered; a
      row ranked from the source model's beams.
    log: progress printer.

  Returns:
    (eval.examples.EvalSet, name -> [E, k_max] int32 item rows (the models,
    the re-ranked rows, then the baselines), name -> beam diagnostics of each
    generative row; "beam_recall" only for the first model).
  """
  wd = Workdir.of(workdir)
  sid_dir = wd.sids
  train_dir = wd.train
  art = wd.sid_artefact()
  # Items, recall and relevance read once, for the eval set and the baselines.
  tables = examples.read_eval_tables(world_dir)
  eval_set = examples.build_eval_set(
    tables, sid_items=art.item_ids, sid_queries=art.query_texts
  )
  log(
    f"[eval] eval set: {int(eval_set.has_click.sum())} click, "
    f"{int(eval_set.has_order.sum())} order sessions; skipped {dict(eval_set.skips)}"
  )
  baselines = {}
  if eval_cfg.baselines:
    baselines = evaluate.run_baselines(
      tables,
      sid_dir,
      eval_set=eval_set,
      k_max=eval_cfg.k_max,
      systems=eval_cfg.baselines,
      log=log,
      extras=extras,
    )
  if generator is None:
    generator = generator_lib.load_generator(wd, beam_size=eval_cfg.beam_size)
  if generator.beam_size != eval_cfg.beam_size:
    raise ValueError(
      f"rank_workdir: generator beam {generator.beam_size} != eval beam "
      f"{eval_cfg.beam_size}"
    )
  if models is None:
    models = [("onesearch", generator.model)]
  models = list(models)
  names = [n for n, _ in models] + [n for n, _, _ in rerankers]
  if not models or len(set(names)) != len(names) or set(names) & set(baselines):
    raise ValueError(f"rank_workdir: model names {names} empty or not unique")
  trie = generator.trie
  offsets = tuple(r[0] for r in generator.model_config.sid_ranges)
  log(
    f"[eval] trie: {trie.num_sids} SIDs of {trie.num_items} items, "
    f"{trie.bytes_per_item:.1f} B/item, built in {trie.build_seconds:.2f} s; "
    f"beam {eval_cfg.beam_size}"
  )

  def inputs(kind):
    return sft_load.eval_inputs(
      train_dir, f"eval_{kind}", batch_size=eval_cfg.batch_size, pad_last=True
    )

  index = SidItemIndex.from_artefact(art)
  rankings: dict[str, np.ndarray] = {}
  diags: dict[str, dict] = {}
  beams_of: dict[str, dict] = {}
  kinds = [kind for kind in examples.KINDS if eval_set.rows_of(kind).size]
  for kind in examples.KINDS:
    if kind not in kinds:
      log(f"[eval] no {kind} sessions in the test split")
  for k, (name, model) in enumerate(models):
    searcher = generator.with_model(model).searcher
    # Each distinct query once: the order set's sessions are click sessions
    # with the same inputs, whose beams it reuses.
    per_set = generative.decode_sets(
      searcher, {kind: inputs(kind) for kind in kinds}, log=log
    )
    for kind, beams in per_set.items():
      n = beams.sid_index.shape[0]
      decoded = n - beams.reused
      speed = ""
      if decoded:
        speed = f" ({decoded / max(beams.seconds, 1e-9):.1f} queries/s)"
      log(
        f"[eval] {name}: {kind} set: {n} queries, {decoded} decoded in "
        f"{beams.seconds:.1f} s{speed}, {beams.reused} reused from an earlier set"
      )
    if extras is not None:
      extras.setdefault("decode", {})[name] = {
        kind: {
          "queries": int(beams.sid_index.shape[0]),
          "decoded": int(beams.sid_index.shape[0] - beams.reused),
          "seconds": float(beams.seconds),
        }
        for kind, beams in per_set.items()
      }
    beams_of[name] = per_set
    rankings[name], _, diags[name] = generative.rank_eval_set(
      eval_set, per_set, index, eval_cfg.k_max
    )
    # Exhaustive scoring knows no thought prefix: no beam recall for direct CoT.
    if (
      k == 0 and eval_cfg.exact_rows and "click" in per_set and searcher.thought is None
    ):
      batch, metas = next(iter(inputs("click")))
      m = min(eval_cfg.exact_rows, len(metas))
      diags[name]["beam_recall"] = generative.beam_recall_vs_exact(
        model, searcher, batch, generator.unique_codes, offsets, m,
        sid_index=per_set["click"].sid_index[:m],
      )  # fmt: skip
      log(
        f"[eval] beam recall vs the exhaustive top-{eval_cfg.beam_size} "
        f"({m} queries): {diags[name]['beam_recall']:.4f}"
      )
  for name, source, fn in rerankers:
    if source not in beams_of:
      raise ValueError(f"rank_workdir: re-ranker {name!r} source {source!r} unknown")
    per_set = {}
    for kind, beams in beams_of[source].items():
      sid_index, scores = fn(beams.session_ids, beams.sid_index, beams.scores)
      per_set[kind] = dataclasses.replace(beams, sid_index=sid_index, scores=scores)
    rankings[name], _, diags[name] = generative.rank_eval_set(
      eval_set, per_set, index, eval_cfg.k_max
    )
    log(f"[eval] {name}: re-ranked the beams of {source}")
  return eval_set, {**rankings, **baselines}, diags
