"""The main job: the pipeline stages in order, resumable by artefact.

Each stage reads the previous stage's artefact from the workdir and writes its
own directory, then a ``STAGE.json`` marker last. The marker records a hash of
the stage's inputs (its config and the upstream artefacts' hashes). On a
re-run a stage whose marker matches is skipped; a stage whose directory exists
without a matching marker (killed half-way, or its inputs changed) is redone
from scratch. That is what makes re-runs resume and batch jobs restartable.

Stages: ``world`` (simulate, or validate a real world directory), ``sids``
(the KHQE tokenizer), ``train`` (the SFT stages 1 -> 2 -> 3,
``train.sft.run_sft``, in ``workdir/train``), ``pars`` (reward model +
listwise alignment phases 1 and 2, ``pars.stage.run_stage``, in
``workdir/pars``) and ``eval`` (every generative variant and the baselines on
the test split, ``workdir/eval``). A stage list may skip a stage that no later
listed stage needs (``STAGE_NEEDS``), e.g. ("world", "sids", "train", "eval").

Resumable stages (``train``, ``pars``): the stage also writes ``STAGE.started.json``
with its inputs hash when it starts. A re-run that finds no finished marker
but a started marker with the SAME inputs keeps the directory and lets the
body continue (the trainer resumes from its latest checkpoint at the saved
data position); different inputs wipe the directory as for any stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from onesearch_jax.config_io import json_hash as _hash_json
from onesearch_jax.config_io import to_dict as _config_dict
from onesearch_jax.world.config import WorldConfig

if TYPE_CHECKING:  # heavy imports (jax, seqio); pipeline stays light to import
  from onesearch_jax.eval.config import EvalConfig
  from onesearch_jax.khqe.build import BuildConfig
  from onesearch_jax.pars.stage import StageConfig
  from onesearch_jax.train.sft import SFTConfig

MARKER = "STAGE.json"
STARTED = "STAGE.started.json"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What the main job runs."""

  # The simulated world to generate (ignored when world_dir is set).
  world: WorldConfig = dataclasses.field(default_factory=WorldConfig.default)
  # A directory already in the KuaiSearch schema (real data); "" = simulate.
  world_dir: str = ""
  # Stages to run, in STAGE_ORDER order, each with its STAGE_NEEDS.
  # The main job's: pars is left out (gin/runs/main.gin says why).
  stages: tuple[str, ...] = ("world", "sids", "train", "eval")
  # KHQE build settings; None = BuildConfig().
  sids: BuildConfig | None = None
  # SFT settings; None = configs.sft_config() (== SFTConfig()).
  train: SFTConfig | None = None
  # Eval settings; None = EvalConfig().
  eval: EvalConfig | None = None
  # PARS settings; None = configs.pars_config() (== StageConfig()).
  pars: StageConfig | None = None


STAGE_ORDER = ("world", "sids", "train", "pars", "eval")
# The stages each stage reads (they must be in the same stage list).
STAGE_NEEDS = {
  "world": (),
  "sids": ("world",),
  "train": ("world", "sids"),
  "pars": ("world", "sids", "train"),
  "eval": ("world", "sids", "train"),
}


def check_stages(stages: tuple[str, ...]) -> None:
  """Raises unless `stages` are known, unique, in STAGE_ORDER order, start
  with "world" and contain every stage's STAGE_NEEDS."""
  stages = tuple(stages)
  unknown = [s for s in stages if s not in STAGE_ORDER]
  if unknown:
    raise ValueError(f"unknown stages {unknown}; known: {STAGE_ORDER}")
  if len(set(stages)) != len(stages):
    raise ValueError(f"stages {stages} repeat a stage")
  if list(stages) != sorted(stages, key=STAGE_ORDER.index):
    raise ValueError(f"stages {stages} must be in the order of {STAGE_ORDER}")
  if not stages or stages[0] != "world":
    raise ValueError(f"stages {stages} must start with 'world'")
  for s in stages:
    missing = [n for n in STAGE_NEEDS[s] if n not in stages]
    if missing:
      raise ValueError(f"stage {s!r} needs {missing} in the stage list {stages}")


def read_marker_file(path: pathlib.Path) -> dict | None:
  """A JSON marker, or None when absent or torn."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError:
    return None  # a torn write counts as unfinished


def read_marker(stage_dir: pathlib.Path) -> dict | None:
  """The stage marker, or None when the stage has not finished."""
  return read_marker_file(stage_dir / MARKER)


def _write_json(path: pathlib.Path, obj: dict) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)


def _write_marker(stage_dir: pathlib.Path, marker: dict) -> None:
  _write_json(stage_dir / MARKER, marker)


@dataclasses.dataclass
class StageResult:
  name: str
  skipped: bool
  seconds: float
  marker: dict


def run_stage(
  name: str,
  stage_dir: pathlib.Path,
  inputs: dict,
  body: Callable[[pathlib.Path], dict],
  log: Callable[[str], None],
  *,
  keep_dir: bool = False,
  resumable: bool = False,
) -> StageResult:
  """Runs ``body(stage_dir)`` unless the marker says it is done for ``inputs``.

  Args:
    name: stage name, for messages.
    stage_dir: the stage's artefact directory.
    inputs: everything the output depends on (configs, upstream hashes).
    body: does the work, returns a dict merged into the marker; it must
      return an ``output_hash`` that downstream stages key on.
    log: progress printer.
    keep_dir: do not wipe a stale directory (it holds user data).
    resumable: an unfinished run with the same inputs keeps its directory
      and the body continues it (see the module docstring).

  Returns:
    What happened, with the marker.
  """
  inputs_hash = _hash_json(inputs)
  marker = read_marker(stage_dir)
  if marker is not None and marker.get("inputs_hash") == inputs_hash:
    log(f"[{name}] up to date in {stage_dir} (inputs {inputs_hash[:12]}), skipping")
    return StageResult(name, True, 0.0, marker)
  started = read_marker_file(stage_dir / STARTED) if resumable else None
  resume = (
    marker is None and started is not None and started.get("inputs_hash") == inputs_hash
  )
  if resume:
    log(
      f"[{name}] unfinished earlier run with the same inputs: resuming in {stage_dir}"
    )
  elif stage_dir.exists() and not keep_dir:
    why = "inputs changed" if marker or started else "unfinished earlier run"
    log(f"[{name}] {why}: rebuilding {stage_dir}")
    shutil.rmtree(stage_dir)
  stage_dir.mkdir(parents=True, exist_ok=True)
  (stage_dir / MARKER).unlink(missing_ok=True)
  if resumable and not resume:
    _write_json(stage_dir / STARTED, {"stage": name, "inputs_hash": inputs_hash})
  start = time.time()
  out = body(stage_dir)
  seconds = time.time() - start
  if "output_hash" not in out:
    raise RuntimeError(f"stage {name} returned no output_hash")
  marker = {
    "stage": name,
    "inputs_hash": inputs_hash,
    "seconds": round(seconds, 2),
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    **out,
  }
  _write_marker(stage_dir, marker)
  log(f"[{name}] done in {seconds:.1f} s -> {stage_dir}")
  return StageResult(name, False, seconds, marker)


def _world_stage(
  cfg: PipelineConfig, workdir: pathlib.Path, log: Callable[[str], None]
) -> tuple[pathlib.Path, StageResult]:
  from onesearch_jax.world import manifest as manifest_lib
  from onesearch_jax.world import reader, simulator, stats

  if cfg.world_dir:
    world_dir = pathlib.Path(cfg.world_dir)

    def validate(_: pathlib.Path) -> dict:
      log(f"[world] validating {world_dir}")
      world = reader.load_world(world_dir)
      log(f"{world.counts}\n{world.report.format()}")
      output_hash = manifest_lib.jsonl_content_hash(world_dir)
      return {"output_hash": output_hash, "world_dir": str(world_dir)}

    # The marker of a real world lives in the workdir, never in the user's data.
    # Its inputs include each table's size and mtime, so a rewritten world is
    # validated (and hashed) again rather than trusted from the old marker.
    stamps = {
      p.name: [p.stat().st_size, p.stat().st_mtime_ns]
      for p in sorted(world_dir.glob("*.jsonl"))
    }
    result = run_stage(
      "world",
      workdir / "world_check",
      {"world_dir": str(world_dir.resolve()), "files": stamps},
      validate,
      log,
    )
  else:
    world_dir = workdir / "world"

    def simulate(out: pathlib.Path) -> dict:
      log(f"[world] simulating {cfg.world.n_items}-item world (seed {cfg.world.seed})")
      manifest = simulator.write_world(cfg.world, out, progress=log)
      return {"output_hash": manifest["content_hash"]}

    result = run_stage(
      "world", world_dir, {"world": _config_dict(cfg.world)}, simulate, log
    )
  log(stats.format_stats(stats.compute_stats(world_dir)))
  return world_dir, result


def _sids_stage(
  cfg: PipelineConfig,
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  world_hash: str,
  log: Callable[[str], None],
) -> StageResult:
  from onesearch_jax.khqe import artefact, build

  build_cfg = cfg.sids if cfg.sids is not None else build.BuildConfig()

  def body(out: pathlib.Path) -> dict:
    summary = build.build_sids(world_dir, out, build_cfg, progress=log)
    metrics = {k: dict(v) for k, v in summary.metrics.items()}
    return {"output_hash": summary.content_hash, "metrics": metrics}

  return run_stage(
    "sids",
    workdir / "sids",
    # The artefact schema is an input too: a workdir built by an older
    # khqe (other files hashed, other OPQ) is rebuilt, not silently reused.
    {
      "world_hash": world_hash,
      "sids": _config_dict(build_cfg),
      "artefact_schema": artefact.SCHEMA_VERSION,
    },
    body,
    log,
  )


def _train_stage(
  cfg: PipelineConfig,
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  world_hash: str,
  sids: StageResult,
  log: Callable[[str], None],
) -> StageResult:
  from onesearch_jax import configs
  from onesearch_jax.train import sft

  sft_cfg = cfg.train if cfg.train is not None else configs.sft_config()
  sid_hash = sids.marker["output_hash"]

  def body(out: pathlib.Path) -> dict:
    res = sft.run_sft(
      world_dir, workdir / "sids", out, sft_cfg, sid_hash=sid_hash, log=log
    )
    if not res.finished:
      raise RuntimeError(f"training stopped before the end: {res.stages}")
    last = res.stages["stage3"].evals[-1] if res.stages["stage3"].evals else {}
    return {
      "output_hash": res.params_hash,
      "sid_hash": sid_hash,
      "final_eval": {k: v for k, v in last.items() if k != "kind"},
    }

  return run_stage(
    "train",
    workdir / "train",
    {
      "world_hash": world_hash,
      "sid_hash": sid_hash,
      "sft": sft.config_to_dict(sft_cfg),
    },
    body,
    log,
    resumable=True,
  )


def _pars_stage(
  cfg: PipelineConfig,
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  sids: StageResult,
  train: StageResult,
  log: Callable[[str], None],
) -> StageResult:
  """Reward model + PARS phases 1 and 2 on the SFT model -> workdir/pars."""
  from onesearch_jax import configs
  from onesearch_jax.pars import stage as pars_stage

  pars_cfg = cfg.pars if cfg.pars is not None else configs.pars_config()

  def body(out: pathlib.Path) -> dict:
    return pars_stage.run_stage(
      world_dir, workdir / "sids", workdir / "train", out, pars_cfg, log=log
    )

  return run_stage(
    "pars",
    workdir / "pars",
    {
      "sid_hash": sids.marker["output_hash"],
      "model_hash": train.marker["output_hash"],
      "pars": pars_stage.config_to_dict(pars_cfg),
    },
    body,
    log,
    resumable=True,
  )


def _eval_stage(
  cfg: PipelineConfig,
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  sids: StageResult,
  train: StageResult,
  pars: StageResult | None,
  log: Callable[[str], None],
) -> StageResult:
  """Trie beam search of every generative variant + the baselines on the test
  split: "onesearch" (SFT stage 3) and, when the pars stage ran,
  "onesearch+pars1", "onesearch+pars2", "onesearch+rm" and
  "onesearch+pars2+rm" (the RM re-rank of the SFT / pars2 beams).

  Writes workdir/eval/{results.md, results.json, hr_curve.png} and
  examples.md (a few test-day searches of "onesearch", also printed).
  """
  from onesearch_jax import configs
  from onesearch_jax.eval.config import EvalConfig

  eval_cfg = cfg.eval if cfg.eval is not None else EvalConfig()
  pars_cfg = None
  if pars is not None:
    pars_cfg = cfg.pars if cfg.pars is not None else configs.pars_config()

  def body(out: pathlib.Path) -> dict:
    from onesearch_jax.eval import evaluate, searches
    from onesearch_jax.world import reader

    eval_set, rankings, results = _score_workdir(
      workdir, world_dir, eval_cfg, pars=pars_cfg, log=log
    )
    files = evaluate.write_results(results, out)
    log(f"[eval] results ({out / evaluate.RESULTS_MD} has every metric and slice):")
    log(evaluate.summary_table(results))
    items = [row for _, row in reader.iter_rows(world_dir / "items.jsonl", "items")]
    shown = searches.example_searches(eval_set, rankings, items)
    if shown:
      (out / searches.EXAMPLES_MD).write_text(shown, encoding="utf-8")
      files["examples"] = str(out / searches.EXAMPLES_MD)
      log(f"[eval] example searches (also in {files['examples']}):")
      log(shown)
    blob = pathlib.Path(files["json"]).read_bytes()
    return {"output_hash": hashlib.sha256(blob).hexdigest(), "files": files}

  inputs = {
    "sid_hash": sids.marker["output_hash"],
    "model_hash": train.marker["output_hash"],
    "eval": _config_dict(eval_cfg),
  }
  if pars is not None:
    phases = pars.marker.get("phases", [])
    inputs["pars_hash"] = pars.marker["output_hash"]
    inputs["pars_phases"] = phases
    inputs["rerank_rows"] = (
      [f"{src}+rm" for src in _rerank_sources(phases)] if pars_cfg.rerank else []
    )
    inputs["rerank_label_relevance"] = pars_cfg.rerank_label_relevance
  return run_stage("eval", workdir / "eval", inputs, body, log)


def evaluate_workdir(
  workdir: pathlib.Path,
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
    pars: the pars stage's StageConfig (None: SFT model only).
    log: progress printer.

  Returns:
    ``eval.evaluate.evaluate_rankings`` results for every generative variant
    ("onesearch", "onesearch+pars1", "onesearch+pars2", "onesearch+rm",
    "onesearch+pars2+rm") and the configured baselines.
  """
  return _score_workdir(workdir, world_dir, eval_cfg, pars=pars, log=log)[2]


def _score_workdir(
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  pars: Any = None,
  log: Callable[[str], None] = print,
) -> tuple[Any, dict, dict]:
  """``evaluate_workdir`` with its inputs: (eval set, rankings, results)."""
  from onesearch_jax.eval import evaluate

  models, rerankers = workdir_models(workdir, world_dir, pars, log=log)
  eval_set, rankings, diags = rank_workdir(
    workdir, world_dir, eval_cfg, models=models, rerankers=rerankers, log=log
  )
  results = evaluate.evaluate_rankings(
    eval_set, rankings, ks=eval_cfg.ks, diagnostics=diags
  )
  return eval_set, rankings, results


def workdir_models(
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  pars: Any = None,
  *,
  log: Callable[[str], None] = print,
) -> tuple[list[tuple[str, Any]], list[tuple[str, str, Callable]]]:
  """The generative variants of a workdir, for ``rank_workdir``.

  Returns:
    ([(name, EncoderDecoder)]: "onesearch" and each PARS phase with a
    checkpoint, [(name, source name, beam re-ranker)]: with pars.rerank,
    "onesearch+rm" (the RM re-rank of the SFT beams) and
    "onesearch+pars2+rm" (of the last phase's beams)).
  """
  from onesearch_jax.train import sft

  model, _, model_cfg = sft.load_trained(workdir / "train")
  models: list[tuple[str, Any]] = [("onesearch", model)]
  rerankers: list[tuple[str, str, Callable]] = []
  if pars is None:
    return models, rerankers
  import numpy as np

  from onesearch_jax import decoding
  from onesearch_jax.khqe import artefact
  from onesearch_jax.pars import stage as pars_stage

  pars_dir = workdir / "pars"
  phases = pars_stage.existing_phases(pars_dir)
  for phase in phases:
    models.append(
      (
        f"onesearch+{phase}",
        pars_stage.load_phase_model(pars_dir, phase, pars, model_cfg),
      )
    )
  if pars.rerank:
    unique = decoding.unique_sids(
      np.asarray(artefact.load(workdir / "sids").item_codes)
    )
    fn = pars_stage.beam_reranker(
      world_dir, workdir / "sids", pars_dir, pars, model_cfg, unique, log=log
    )
    rerankers += [(f"{src}+rm", src, fn) for src in _rerank_sources(phases)]
  return models, rerankers


def _rerank_sources(phases: Sequence[str]) -> list[str]:
  """The rows whose beams the RM re-ranks: the SFT model's alone, and the
  last aligned phase's (the eval rows "<source>+rm")."""
  return ["onesearch"] + [f"onesearch+{p}" for p in list(phases)[-1:]]


def rank_workdir(
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  models: Sequence[tuple[str, Any]] | None = None,
  rerankers: Sequence[tuple[str, str, Callable]] = (),
  log: Callable[[str], None] = print,
) -> tuple[Any, dict, dict]:
  """The eval set and every system's item ranking of it.

  One beam search is compiled (for the first model) and every further model
  is swapped in as state (same shapes: no recompile).

  Args:
    workdir: holds sids/ and train/ (a finished SFT run).
    world_dir: the world.
    eval_cfg: an eval.config.EvalConfig (one for every row).
    models: (name, EncoderDecoder) pairs of one architecture; None = the SFT
      stage-3 model as "onesearch".
    rerankers: (name, source model name, fn) with fn(session_ids,
      sid_index [n, W], scores [n, W]) -> (sid_index, scores) re-ordered; a
      row ranked from the source model's beams.
    log: progress printer.

  Returns:
    (eval.examples.EvalSet, name -> [E, k_max] int32 item rows (the models,
    the re-ranked rows, then the baselines), name -> beam diagnostics of each
    generative row; "beam_recall" only for the first model).
  """
  import numpy as np
  from flax import nnx

  from onesearch_jax import decoding
  from onesearch_jax.eval import evaluate, examples, generative
  from onesearch_jax.eval.sid_items import SidItemIndex
  from onesearch_jax.khqe import artefact
  from onesearch_jax.train import sft

  sid_dir = workdir / "sids"
  train_dir = workdir / "train"
  art = artefact.load(sid_dir)
  eval_set = examples.build_eval_set(
    world_dir, sid_items=art.item_ids, sid_queries=art.query_texts
  )
  log(
    f"[eval] eval set: {int(eval_set.has_click.sum())} click, "
    f"{int(eval_set.has_order.sum())} order sessions; skipped {dict(eval_set.skips)}"
  )
  baselines = {}
  if eval_cfg.baselines:
    baselines = evaluate.run_baselines(
      world_dir,
      sid_dir,
      eval_set=eval_set,
      k_max=eval_cfg.k_max,
      systems=eval_cfg.baselines,
      progress=log,
    )
  if models is None:
    models = [("onesearch", sft.load_trained(train_dir)[0])]
  models = list(models)
  names = [n for n, _ in models] + [n for n, _, _ in rerankers]
  if not models or len(set(names)) != len(names) or set(names) & set(baselines):
    raise ValueError(f"rank_workdir: model names {names} empty or not unique")
  codes = np.asarray(art.item_codes)
  model_cfg = sft.read_model_config(train_dir)
  trie = decoding.catalogue_trie(codes, model_cfg.sid_ranges)
  offsets = tuple(r[0] for r in model_cfg.sid_ranges)
  log(
    f"[eval] trie: {trie.num_sids} SIDs of {trie.num_items} items, "
    f"{trie.bytes_per_item:.1f} B/item, built in {trie.build_seconds:.2f} s; "
    f"beam {eval_cfg.beam_size}"
  )
  searcher = decoding.make_beam_search(models[0][1], trie, beam_size=eval_cfg.beam_size)

  def inputs(kind):
    return sft.eval_inputs(
      train_dir, f"eval_{kind}", batch_size=eval_cfg.batch_size, pad_last=True
    )

  index = SidItemIndex.from_artefact(art)
  rankings: dict[str, np.ndarray] = {}
  diags: dict[str, dict] = {}
  beams_of: dict[str, dict] = {}
  for k, (name, model) in enumerate(models):
    if k:
      searcher.state = nnx.state(model)
    per_set = {}
    for kind in examples.KINDS:
      if not eval_set.rows_of(kind).size:
        log(f"[eval] no {kind} sessions in the test split")
        continue
      beams = generative.decode_set(searcher, inputs(kind), progress=log, name=kind)
      per_set[kind] = beams
      n = beams.sid_index.shape[0]
      log(
        f"[eval] {name}: decoded {n} {kind} queries in {beams.seconds:.1f} s "
        f"({n / max(beams.seconds, 1e-9):.1f} queries/s)"
      )
    beams_of[name] = per_set
    rankings[name], _, diags[name] = generative.rank_eval_set(
      eval_set, per_set, index, eval_cfg.k_max
    )
    if k == 0 and eval_cfg.exact_rows and "click" in per_set:
      batch, metas = next(iter(inputs("click")))
      m = min(eval_cfg.exact_rows, len(metas))
      diags[name]["beam_recall"] = generative.beam_recall_vs_exact(
        model, searcher, batch, decoding.unique_sids(codes), offsets, m
      )
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


def run_pipeline(
  cfg: PipelineConfig,
  workdir: str | pathlib.Path,
  *,
  log: Callable[[str], None] = print,
) -> dict[str, StageResult]:
  """Runs the configured stages in order, resuming finished ones.

  Args:
    cfg: the pipeline configuration.
    workdir: where every artefact goes.
    log: progress printer (one line per call).

  Returns:
    stage name -> StageResult.
  """
  check_stages(tuple(cfg.stages))
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  results: dict[str, StageResult] = {}
  n = len(cfg.stages)
  world_dir, results["world"] = _world_stage(cfg, workdir, log)
  log(f"[pipeline] stage 1/{n} world finished at {time.time() - start:.0f} s")
  if "sids" in cfg.stages:
    results["sids"] = _sids_stage(
      cfg, workdir, world_dir, results["world"].marker["output_hash"], log
    )
    log(
      f"[pipeline] stage {len(results)}/{n} sids finished at {time.time() - start:.0f} s"
    )
  if "train" in cfg.stages:
    results["train"] = _train_stage(
      cfg,
      workdir,
      world_dir,
      results["world"].marker["output_hash"],
      results["sids"],
      log,
    )
    log(
      f"[pipeline] stage {len(results)}/{n} train finished at {time.time() - start:.0f} s"
    )
  if "pars" in cfg.stages:
    results["pars"] = _pars_stage(
      cfg, workdir, world_dir, results["sids"], results["train"], log
    )
    log(
      f"[pipeline] stage {len(results)}/{n} pars finished at {time.time() - start:.0f} s"
    )
  if "eval" in cfg.stages:
    results["eval"] = _eval_stage(
      cfg, workdir, world_dir, results["sids"], results["train"],
      results.get("pars"), log,
    )  # fmt: skip
    log(
      f"[pipeline] stage {len(results)}/{n} eval finished at {time.time() - start:.0f} s"
    )
  total = time.time() - start
  log(f"[pipeline] all {n} stages done in {total:.1f} s; workdir {workdir}")
  for line in stage_times(results, total):
    log(f"[pipeline] {line}")
  return results


def stage_times(results: dict[str, StageResult], total: float) -> list[str]:
  """One line per stage, its wall seconds (from ``run_stage``) or "skipped
  (done earlier)", then the total wall time of the run."""
  width = max([len(name) for name in results] + [5])
  lines = ["stage times:"]
  for name, res in results.items():
    took = "skipped (done earlier)" if res.skipped else f"{res.seconds:8.1f} s"
    lines.append(f"  {name:<{width}} {took}")
  lines.append(f"  {'total':<{width}} {total:8.1f} s")
  return lines
