"""Wall time and peak RSS of generating a simulated world at a given size.

Usage:
  python benchmarks/world_scale.py --preset large --n_items 100000 --n_users 5000 \
      --n_days 3 --out /tmp/world_100k

Prints one Markdown table row: items, users, days, sessions, ranking rows,
bytes on disk, wall seconds, peak RSS (MiB, resource.getrusage).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import resource
import shutil
import sys
import time

from onesearch_jax.world import simulator
from onesearch_jax.world.config import WorldConfig


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--preset", default="default", choices=("tiny", "default", "large"))
  p.add_argument("--n_items", type=int, default=None)
  p.add_argument("--n_users", type=int, default=None)
  p.add_argument("--n_days", type=int, default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="directory to write (replaced)")
  p.add_argument("--keep", action="store_true", help="keep the written world")
  args = p.parse_args(argv)

  cfg = getattr(WorldConfig, args.preset)(seed=args.seed)
  overrides = {
    k: v
    for k, v in (
      ("n_items", args.n_items),
      ("n_users", args.n_users),
      ("n_days", args.n_days),
    )
    if v
  }
  cfg = dataclasses.replace(cfg, **overrides)
  out = pathlib.Path(args.out)
  if out.exists():
    shutil.rmtree(out)
  t0 = time.perf_counter()
  manifest = simulator.write_world(
    cfg, out, log=lambda m: print(m, file=sys.stderr, flush=True)
  )
  wall = time.perf_counter() - t0
  rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
  size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  c = manifest["counts"]
  print(
    "| items | users | days | sessions | ranking rows | disk MB | wall s | peak RSS MiB |"
  )
  print("|---|---|---|---|---|---|---|---|")
  print(
    f"| {cfg.n_items:,} | {cfg.n_users:,} | {cfg.n_days} | {c['recall']:,} | {c['ranking']:,} "
    f"| {size / 1e6:.0f} | {wall:.1f} | {rss_mib:.0f} |"
  )
  if not args.keep:
    shutil.rmtree(out)


if __name__ == "__main__":
  main()
