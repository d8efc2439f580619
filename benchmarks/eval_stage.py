"""Wall time of each part of the eval stage on a finished workdir.

Runs what ``stages.eval.run`` runs (``eval.workdir_eval.evaluate_workdir``:
``workdir_models`` + ``rank_workdir`` + ``evaluate_rankings``), without
writing the stage's marker or results (``--out`` writes the results), and
times each part by wrapping the functions it calls: eval-set build,
baselines, model / reward-model loading, beam decode per model and set, the
beam-recall check, the RM re-rank, ranking from beams and the metrics.

Usage:
  python benchmarks/eval_stage.py --workdir=/tmp/wd_base [--json=out.json]
    [--out=DIR]  (DIR/results.json: compare two runs' metrics)

The eval config is ``EvalConfig()`` (the main job's). The pars phases and
re-rank rows are included when workdir/pars exists (a ``--mode=pars``
workdir; pars defaults of ``configs.pars_config()``). ``time_parts`` also
times a ``run.py --mode=eval`` process when called before it runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import time


def time_parts() -> tuple[dict[str, float], dict[str, int]]:
  """Wraps the functions the eval stage calls: (seconds, calls) per part,
  filled as the stage runs (also usable around ``run.py --mode=eval``)."""
  from onesearch_jax import generator as generator_lib
  from onesearch_jax.eval import evaluate, examples, generative
  from onesearch_jax.pars import beam_rerank
  from onesearch_jax.train import sft_load

  times: dict[str, float] = collections.defaultdict(float)
  calls: dict[str, int] = collections.defaultdict(int)

  def wrap(mod, attr, label):
    fn = getattr(mod, attr)

    def timed(*a, **kw):
      t = time.perf_counter()
      try:
        return fn(*a, **kw)
      finally:
        times[label] += time.perf_counter() - t
        calls[label] += 1

    setattr(mod, attr, timed)

  wrap(examples, "build_eval_set", "eval-set build")
  wrap(evaluate, "run_baselines", "baselines")
  wrap(generative, "decode_set", "beam decode (all models, sets)")
  if hasattr(generative, "decode_sets"):  # absent before the port
    wrap(generative, "decode_sets", "beam decode (all models, sets)")
  wrap(generative, "beam_recall_vs_exact", "beam recall vs exhaustive")
  wrap(generative, "rank_eval_set", "ranking from beams (SID -> items)")
  wrap(generator_lib, "load_phase_model", "load pars phase models")
  wrap(beam_rerank, "beam_reranker", "RM re-ranker build")
  wrap(beam_rerank.BeamReranker, "__call__", "RM re-rank of beams")
  wrap(evaluate, "evaluate_rankings", "metrics (evaluate_rankings)")
  wrap(sft_load, "load_trained", "load SFT model")
  return times, calls


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--json", default="")
  ap.add_argument("--no_pars", action="store_true")
  ap.add_argument("--out", default="", help="write results.{md,json} here")
  args = ap.parse_args()

  from onesearch_jax import configs
  from onesearch_jax.eval import evaluate, workdir_eval
  from onesearch_jax.eval.config import EvalConfig

  wd = pathlib.Path(args.workdir)
  world_dir = wd / "world"
  times, calls = time_parts()
  t_start = time.perf_counter()

  def log(msg: str) -> None:
    print(f"[+{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

  eval_cfg = EvalConfig()
  pars_cfg = None
  if (wd / "pars").exists() and not args.no_pars:
    pars_cfg = configs.pars_config()
  t = time.perf_counter()
  results = workdir_eval.evaluate_workdir(
    wd, world_dir, eval_cfg, pars=pars_cfg, log=log
  )
  total = time.perf_counter() - t
  t = time.perf_counter()
  print(evaluate.summary_table(results))
  if args.out:
    evaluate.write_results(results, args.out)
  times["summary table + results files"] = time.perf_counter() - t
  out = {
    "total_s": total,
    "parts_s": dict(times),
    "calls": dict(calls),
    "load_average": os.getloadavg(),
  }
  print(json.dumps(out, indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
