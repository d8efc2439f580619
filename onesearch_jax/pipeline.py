"""The main job: the pipeline stages in order, resumable by artefact.

Each stage reads the previous stage's artefact from the workdir and writes its
own directory, then a ``STAGE.json`` marker last. The marker records a hash of
the stage's inputs (its config and the upstream artefacts' hashes). On a
re-run a stage whose marker matches is skipped; a stage whose directory exists
without a matching marker (killed half-way, or its inputs changed) is redone
from scratch. That is what makes re-runs resume and batch jobs restartable.

Stages so far: ``world`` (simulate, or validate a real world directory),
``sids`` (the KHQE tokenizer) and ``train`` (the SFT stages 1 -> 2 -> 3,
``train.sft.run_sft``, in ``workdir/train``). Later issues append alignment
and evaluation stages.

Resumable stages (``train``): the stage also writes ``STAGE.started.json``
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
from collections.abc import Callable
from typing import Any

from onesearch_jax.world.config import WorldConfig

MARKER = "STAGE.json"
STARTED = "STAGE.started.json"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What the main job runs."""

  # The simulated world to generate (ignored when world_dir is set).
  world: WorldConfig = dataclasses.field(default_factory=WorldConfig.default)
  # A directory already in the KuaiSearch schema (real data); "" = simulate.
  world_dir: str = ""
  # Stages to run, in order; a prefix of STAGE_ORDER.
  stages: tuple[str, ...] = ("world", "sids", "train", "eval")
  # KHQE build settings (onesearch_jax.khqe.build.BuildConfig); None = default.
  sids: Any = None
  # SFT settings (onesearch_jax.train.sft.SFTConfig); None = configs.sft_config().
  train: Any = None
  # Eval settings (onesearch_jax.eval.config.EvalConfig); None = defaults.
  eval: Any = None


STAGE_ORDER = ("world", "sids", "train", "eval")


def _hash_json(obj: Any) -> str:
  blob = json.dumps(obj, sort_keys=True, default=repr).encode()
  return hashlib.sha256(blob).hexdigest()


def _config_dict(cfg: Any) -> Any:
  if dataclasses.is_dataclass(cfg):
    return dataclasses.asdict(cfg)
  return cfg


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
  from onesearch_jax.world import reader, simulator, stats

  if cfg.world_dir:
    world_dir = pathlib.Path(cfg.world_dir)

    def validate(_: pathlib.Path) -> dict:
      log(f"[world] validating {world_dir}")
      world = reader.load_world(world_dir)
      log(f"{world.counts}\n{world.report.format()}")
      files = {p.name: reader.file_sha256(p) for p in sorted(world_dir.glob("*.jsonl"))}
      return {"output_hash": reader.content_hash(files), "world_dir": str(world_dir)}

    # The marker of a real world lives in the workdir, never in the user's data.
    result = run_stage(
      "world",
      workdir / "world_check",
      {"world_dir": str(world_dir.resolve())},
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


def _eval_stage(
  cfg: PipelineConfig,
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  sids: StageResult,
  train: StageResult,
  log: Callable[[str], None],
) -> StageResult:
  """Trie beam search of the trained model + the baselines on the test split.

  Writes workdir/eval/{results.md, results.json, hr_curve.png}.
  """
  from onesearch_jax.eval.config import EvalConfig

  eval_cfg = cfg.eval if cfg.eval is not None else EvalConfig()

  def body(out: pathlib.Path) -> dict:
    results = evaluate_workdir(workdir, world_dir, eval_cfg, log=log)
    from onesearch_jax.eval import evaluate

    files = evaluate.write_results(results, out)
    log(f"[eval] results ({out / evaluate.RESULTS_MD} has every metric and slice):")
    log(evaluate.summary_table(results))
    blob = pathlib.Path(files["json"]).read_bytes()
    return {"output_hash": hashlib.sha256(blob).hexdigest(), "files": files}

  return run_stage(
    "eval",
    workdir / "eval",
    {
      "sid_hash": sids.marker["output_hash"],
      "model_hash": train.marker["output_hash"],
      "eval": _config_dict(eval_cfg),
    },
    body,
    log,
  )


def evaluate_workdir(
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  log: Callable[[str], None] = print,
) -> dict:
  """Results of the trained model (workdir/train) and the baselines.

  Args:
    workdir: holds sids/ (the SID artefact) and train/ (a finished SFT run).
    world_dir: the world the SIDs were built from.
    eval_cfg: an eval.config.EvalConfig.
    log: progress printer.

  Returns:
    ``eval.evaluate.evaluate_rankings`` results for "onesearch" and the
    configured baselines.
  """
  from onesearch_jax.eval import evaluate

  eval_set, rankings, diag = rank_workdir(workdir, world_dir, eval_cfg, log=log)
  return evaluate.evaluate_rankings(
    eval_set, rankings, ks=eval_cfg.ks, diagnostics={"onesearch": diag}
  )


def rank_workdir(
  workdir: pathlib.Path,
  world_dir: pathlib.Path,
  eval_cfg: Any,
  *,
  log: Callable[[str], None] = print,
) -> tuple[Any, dict, dict]:
  """The eval set and every system's item ranking of it.

  Returns:
    (eval.examples.EvalSet, name -> [E, k_max] int32 item rows ("onesearch"
    first, then the baselines), the model's beam diagnostics).
  """
  import numpy as np

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
  model, _, model_cfg = sft.load_trained(train_dir)
  offsets = tuple(r[0] for r in model_cfg.sid_ranges)
  sizes = tuple(r[1] - r[0] for r in model_cfg.sid_ranges)
  codes = np.asarray(art.item_codes)
  trie = decoding.build_trie(
    codes,
    sizes,
    offsets,
    dense_levels=decoding.choose_dense_levels(sizes, num_items=len(codes)),
  )
  log(
    f"[eval] trie: {trie.num_sids} SIDs of {trie.num_items} items, "
    f"{trie.bytes_per_item:.1f} B/item, built in {trie.build_seconds:.2f} s; "
    f"beam {eval_cfg.beam_size}"
  )
  searcher = decoding.make_beam_search(model, trie, beam_size=eval_cfg.beam_size)

  def inputs(kind):
    return sft.eval_inputs(
      train_dir, f"eval_{kind}", batch_size=eval_cfg.batch_size, pad_last=True
    )

  per_set = {}
  for kind in examples.KINDS:
    if not eval_set.rows_of(kind).size:
      log(f"[eval] no {kind} sessions in the test split")
      continue
    beams = generative.decode_set(searcher, inputs(kind), progress=log, name=kind)
    per_set[kind] = beams
    n = beams.sid_index.shape[0]
    log(
      f"[eval] decoded {n} {kind} queries in {beams.seconds:.1f} s "
      f"({n / max(beams.seconds, 1e-9):.1f} queries/s)"
    )
  index = SidItemIndex.from_artefact(art)
  rows, _, diag = generative.rank_eval_set(eval_set, per_set, index, eval_cfg.k_max)
  if eval_cfg.exact_rows and "click" in per_set:
    batch, metas = next(iter(inputs("click")))
    diag["beam_recall"] = generative.beam_recall_vs_exact(
      model, searcher, batch, decoding.unique_sids(codes), offsets,
      min(eval_cfg.exact_rows, len(metas)),
    )  # fmt: skip
    log(
      f"[eval] beam recall vs the exhaustive top-{eval_cfg.beam_size} "
      f"({min(eval_cfg.exact_rows, len(metas))} queries): {diag['beam_recall']:.4f}"
    )
  return eval_set, {"onesearch": rows, **baselines}, diag


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
  unknown = [s for s in cfg.stages if s not in STAGE_ORDER]
  if unknown:
    raise ValueError(f"unknown stages {unknown}; known: {STAGE_ORDER}")
  if tuple(cfg.stages) != STAGE_ORDER[: len(cfg.stages)]:
    raise ValueError(
      f"stages {tuple(cfg.stages)} must be a prefix of {STAGE_ORDER} "
      "(each stage needs the one before it)"
    )
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
    log(f"[pipeline] stage 2/{n} sids finished at {time.time() - start:.0f} s")
  if "train" in cfg.stages:
    results["train"] = _train_stage(
      cfg,
      workdir,
      world_dir,
      results["world"].marker["output_hash"],
      results["sids"],
      log,
    )
    log(f"[pipeline] stage 3/{n} train finished at {time.time() - start:.0f} s")
  if "eval" in cfg.stages:
    results["eval"] = _eval_stage(
      cfg, workdir, world_dir, results["sids"], results["train"], log
    )
    log(f"[pipeline] stage 4/{n} eval finished at {time.time() - start:.0f} s")
  log(
    f"[pipeline] all {n} stages done in {time.time() - start:.1f} s; workdir {workdir}"
  )
  return results
