"""Stage "eval": every generative variant and the baselines on the test
split (``eval.workdir_eval``), ``wd.eval``."""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable

from onesearch_jax import configs
from onesearch_jax.eval import evaluate, searches, workdir_eval
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.stages.resume import StageResult, config_dict, run_stage
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.world import reader


def run(
  cfg: PipelineConfig,
  wd: Workdir,
  world_dir: pathlib.Path,
  sids: StageResult,
  train: StageResult,
  pars: StageResult | None,
  log: Callable[[str], None],
) -> StageResult:
  """Trie beam search of every generative variant + the baselines on the test
  split: "onesearch" (SFT phase 3) and, when the pars stage ran,
  "onesearch+pars" (the aligned generator), "onesearch+rm" and
  "onesearch+pars+rm" (the RM re-rank of the SFT / aligned beams), and the
  click AUC of the reward model next to the MCA ranker's.

  Writes workdir/eval/{results.md, results.json, hr_curve.png} and
  examples.md (a few test-day searches of "onesearch", also printed); the
  stage marker also holds "decode": {model: {set: {queries, decoded,
  seconds}}}, each model's beam-search wall time.
  """
  eval_cfg = cfg.eval if cfg.eval is not None else EvalConfig()
  pars_cfg = None
  if pars is not None:
    pars_cfg = cfg.pars if cfg.pars is not None else configs.pars_config()

  def body(out: pathlib.Path) -> dict:
    extras: dict = {}
    eval_set, rankings, results = workdir_eval.score_workdir(
      wd, world_dir, eval_cfg, pars=pars_cfg, log=log, extras=extras
    )
    files = evaluate.write_results(results, out)
    log(f"[eval] results ({out / evaluate.RESULTS_MD} has every metric and slice):")
    log(evaluate.summary_table(results))
    auc = results.get("impression_auc")
    if auc:
      log(
        f"[eval] click AUC on the {auc['impressions']} test impressions: "
        + ", ".join(f"{k} {auc[k]:.4f}" for k in ("reward model", "mca ranker")
                    if k in auc)
      )  # fmt: skip
    items = [row for _, row in reader.iter_rows(world_dir / "items.jsonl", "items")]
    shown = searches.example_searches(eval_set, rankings, items)
    if shown:
      (out / searches.EXAMPLES_MD).write_text(shown, encoding="utf-8")
      files["examples"] = str(out / searches.EXAMPLES_MD)
      log(f"[eval] example searches (also in {files['examples']}):")
      log(shown)
    blob = pathlib.Path(files["json"]).read_bytes()
    # Decode wall times go to the stage marker, not results.json: the
    # results (and their hash) stay the same from run to run.
    return {
      "output_hash": hashlib.sha256(blob).hexdigest(),
      "files": files,
      "decode": extras.get("decode", {}),
    }

  inputs = {
    "sid_hash": sids.output_hash,
    "model_hash": train.output_hash,
    "eval": config_dict(eval_cfg),
  }
  if pars is not None:
    phases = pars.marker.get("phases", [])
    inputs["pars_hash"] = pars.output_hash
    inputs["pars_phases"] = phases
    inputs["rerank_rows"] = (
      [f"{src}+rm" for src in workdir_eval.rerank_sources(phases)]
      if pars_cfg.rerank
      else []
    )
    inputs["rerank_label_relevance"] = pars_cfg.rerank_label_relevance
  return run_stage("eval", wd.eval, inputs, body, log)
