"""Time of the three evaluation baselines and of the metrics on a built workdir.

  python benchmarks/eval_baselines.py --workdir=DIR [--k_max=350]

DIR is a ``run.py --mode=build_sids`` workdir (``DIR/world``, ``DIR/sids``).
Prints the wall and CPU seconds of each step of ``eval.evaluate.run_baselines``,
of ``evaluate_rankings``, the peak RSS, and the headline metrics; writes
``DIR/eval/results.{md,json}`` and ``hr_curve.png``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from onesearch_jax.eval import evaluate, examples  # noqa: E402
from onesearch_jax.stages.workdir import Workdir  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--k_max", type=int, default=evaluate.DEFAULT_K_MAX)
  args = ap.parse_args()
  wd = Workdir(args.workdir)
  t0, c0 = time.perf_counter(), time.process_time()
  art = wd.sid_artefact()
  tables = examples.read_eval_tables(wd.world)
  es = examples.build_eval_set(
    tables, sid_items=art.item_ids, sid_queries=art.query_texts
  )
  print(
    f"eval set: {len(es)} sessions (click {int(es.has_click.sum())}, order "
    f"{int(es.has_order.sum())}), {len(es.item_ids)} items; "
    f"{time.perf_counter() - t0:.1f} s"
  )
  timings: dict = {}
  tb, cb = time.perf_counter(), time.process_time()
  rankings = evaluate.run_baselines(
    tables, wd.sids, eval_set=es, k_max=args.k_max, timings=timings
  )
  print(
    f"run_baselines: wall {time.perf_counter() - tb:.1f} s, "
    f"cpu {time.process_time() - cb:.1f} s"
  )
  tm = time.perf_counter()
  res = evaluate.evaluate_rankings(es, rankings)
  print(f"evaluate_rankings: wall {time.perf_counter() - tm:.1f} s")
  evaluate.write_results(res, wd.eval)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
  print(
    f"total: wall {time.perf_counter() - t0:.1f} s, cpu "
    f"{time.process_time() - c0:.1f} s, peak RSS {rss} MB"
  )
  for name, s in res["systems"].items():
    for kind in examples.KINDS:
      a = s[kind]["all"]
      print(
        f"{name:6s} {kind:5s} "
        + " ".join(
          f"{m}={a[m]:.4f}"
          for m in ("hr@10", "hr@50", "hr@350", "mrr@10", "ndcg@10", "gndcg@10")
          if m in a
        )
      )


if __name__ == "__main__":
  main()
