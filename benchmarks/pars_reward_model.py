"""Wall time per step of the PARS reward model, and its test metrics.

  python benchmarks/pars_reward_model.py --world_dir=DIR --sid_dir=DIR [--steps=1500]

Times (one process, same load): load_world, InteractionLog.build,
build_context (Mu-Seq features of every session), reward table, RM training
(including the jit compile) and evaluation; prints the AUC / logloss table.
Without --sid_dir a synthetic SID table stands in (levels 16-8-8).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from onesearch_jax.data.sid_table import SIDTable  # noqa: E402
from onesearch_jax.pars import logs, reward_model, reward_training, rewards, rm_features  # noqa: E402
from onesearch_jax.world import reader  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--world_dir", required=True)
  p.add_argument("--sid_dir", default="")
  p.add_argument("--steps", type=int, default=1500)
  a = p.parse_args()
  times, cpu = {}, {}
  t, c = time.perf_counter(), time.process_time()
  world = reader.load_world(a.world_dir)
  if a.sid_dir:
    table = SIDTable.from_artefact(a.sid_dir)
  else:
    items = [r["item_id"] for r in world.items]
    queries = sorted({r["query"] for r in world.recall})
    table = SIDTable.synthetic(items, queries, levels=(16, 8, 8), opq_codes=16)
  times["load_world + SIDs"] = time.perf_counter() - t
  cpu["load_world + SIDs"] = time.process_time() - c
  t, c = time.perf_counter(), time.process_time()
  interactions = logs.InteractionLog.build(world, table)
  times["InteractionLog.build"] = time.perf_counter() - t
  cpu["InteractionLog.build"] = time.process_time() - c
  t, c = time.perf_counter(), time.process_time()
  ctx = rm_features.build_context(world, interactions, table)
  rel = rm_features.relevance_rows(world, interactions, table, ctx.config)
  times["build_context + relevance"] = time.perf_counter() - t
  cpu["build_context + relevance"] = time.process_time() - c
  t, c = time.perf_counter(), time.process_time()
  rewards.RewardTable.build(interactions)
  times["RewardTable.build"] = time.perf_counter() - t
  cpu["RewardTable.build"] = time.process_time() - c
  t, c = time.perf_counter(), time.process_time()
  cfg = reward_model.RewardModelConfig(num_steps=a.steps)
  trm = reward_training.train_reward_model(ctx, interactions, rel, cfg)
  total = time.perf_counter() - t
  times["RM train + evaluate (incl. compiles)"] = total
  cpu["RM train + evaluate (incl. compiles)"] = time.process_time() - c
  print(
    f"sessions {interactions.n_sessions}, "
    f"impressions {interactions.imp_session.size}, "
    f"train impressions {interactions.train_impressions().size}"
  )
  print("| step | wall s | process CPU s |\n|---|---|---|")
  for k, v in times.items():
    print(f"| {k} | {v:.1f} | {cpu[k]:.1f} |")
  print("| metric | value |\n|---|---|")
  for k, v in sorted(trm.metrics.items()):
    print(f"| {k} | {v:.4f} |")


if __name__ == "__main__":
  main()
