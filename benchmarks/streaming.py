"""Peak RSS and throughput of the data path on a big catalogue: world ->
validation -> KHQE SIDs -> a pass over the seqio task examples.

Usage:
  python benchmarks/streaming.py --n_items 2000000 --workdir /tmp/stream_2m
  python benchmarks/streaming.py --n_items 200000 --mode eager --workdir /tmp/e

Each step runs in a fresh child process (its own peak RSS, from
``resource.getrusage``; it counts the resident pages of memory-mapped files
too, which the kernel can drop); the parent polls the child's resident and
anonymous memory every 0.5 s (the anonymous peak is what the step holds)
and kills it past ``--max_rss_gib`` (10). Steps:

  world     ``simulator.write_world``: ``WorldConfig.large`` with the given
            items, users (small), days and latent width D;
  validate  streamed: ``reader.validate_world`` (every check, no rows kept);
            eager: ``reader.load_world`` (all five tables as lists);
  sids      streamed: ``stream_sids.build_streamed`` on the world's item
            latents (``extras/item_latent.npy``, memory-mapped): fit on at
            most 256 x k1 sampled rows, encode every item block by block
            into an int32 ``.npy``; eager: ``quantizer.fit_encode`` on all
            rows in memory. Levels ``QuantizerConfig.scaled(N)``. Queries
            (few; they scale with the log) are embedded as the mean latent of
            their train clicks and encoded with the same quantiser; a query
            without a click gets no SID (its examples are skipped, counted);
  tasks     ``tasks.register_tasks`` over the world and those SIDs
            (streamed: ``stream_items=True``), then one pass over every
            registered task's source examples (raw fields, in batches of
            4096; the lazy item kinds read from items.jsonl), then
            ``--tokenised`` examples of ``TOKENISED_KINDS`` through their
            preprocessors (prompt, tokenisation, long-seq feature), after
            the first batch;
  build_sids  the pipeline's sids stage on the world (trained text encoder,
            keywords, quantiser, artefact): streamed ``BuildConfig(stream=
            True)`` (``khqe/stream_build.py``; ``world_checked`` as the
            pipeline's stage passes it, ``--schema_checks`` to re-check
            every item row), eager ``build.build_sids``;
            the main job's BuildConfig otherwise (levels scaled to Q + N)
            but ``--l3_parent_mode`` (default ``parent``, per-L2 groups:
            the main job's ``parent_ab`` holds a dense k1 x k2 x k3 x D
            level-3 codebook, 8 GiB at 2 M items).

Prints one Markdown row per step: seconds, peak RSS, throughput.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

STEPS = ("world", "validate", "sids", "tasks", "build_sids")
# Kinds whose preprocessed examples/s the tasks step measures (an item kind
# read from items.jsonl, and the phase-3 kind with the long-seq feature).
TOKENISED_KINDS = ("s1_title_to_sid", "s3_personal")


def _rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB


def _world_config(args):
  from onesearch_jax.world.config import WorldConfig

  return dataclasses.replace(
    WorldConfig.large(seed=0),
    n_items=args.n_items,
    n_users=args.n_users,
    n_days=args.n_days,
    latent_dim=args.dim,
    relevance_pairs=args.relevance_pairs,
  )


def step_world(args, work: pathlib.Path) -> dict:
  from onesearch_jax.world import simulator

  out = work / "world"
  if out.exists():
    shutil.rmtree(out)
  manifest = simulator.write_world(_world_config(args), out)
  c = manifest["counts"]
  size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  return {"items": c["items"], "rows": sum(c.values()), "counts": c, "bytes": size}


def step_validate(args, work: pathlib.Path) -> dict:
  from onesearch_jax.world import reader

  if args.mode == "streamed":
    counts = reader.validate_world(work / "world").counts
  else:
    counts = reader.load_world(work / "world").counts
  return {"items": counts["items"], "rows": sum(counts.values())}


def _queries_by_clicks(world: pathlib.Path) -> dict[str, list[str]]:
  """Distinct recall queries (first seen order) -> their train clicked items."""
  from onesearch_jax.data import world_source

  out: dict[str, list[str]] = {}
  for r in world_source.iter_table(world, "recall"):
    clicks = out.setdefault(r["query"], [])
    if r["split"] == "train":
      clicks.extend(r["clicked_item_ids"])
  return out


def step_sids(args, work: pathlib.Path) -> dict:
  import numpy as np

  from onesearch_jax.khqe import embeddings_io, quantizer, stream_sids

  world = work / "world"
  emb = embeddings_io.open_embeddings(world / "extras/item_latent.npy")
  n = emb.shape[0]
  cfg = quantizer.QuantizerConfig.scaled(n, opq_iter=args.opq_iter)
  t = time.perf_counter()
  if args.mode == "streamed":
    stream = stream_sids.StreamConfig(block_rows=args.block_rows)
    quant = stream_sids.fit_sample(emb, cfg, stream)
    fit_s = time.perf_counter() - t
    stream_sids.encode_file(
      quant, emb, work / "item_codes.npy", block_rows=args.block_rows
    )
  else:
    quant, codes, _ = quantizer.fit_encode(
      np.load(world / "extras/item_latent.npy"), cfg
    )
    fit_s = time.perf_counter() - t
    np.save(work / "item_codes.npy", codes)
  encode_s = time.perf_counter() - t - fit_s
  # Queries: mean latent of their train clicks (row of each clicked item).
  clicks = _queries_by_clicks(world)
  wanted = {i for v in clicks.values() for i in v}
  row = {}
  with open(world / "extras/item_latent_ids.txt", encoding="utf-8") as f:
    for n_row, line in enumerate(f):
      if line.rstrip("\n") in wanted:
        row[line.rstrip("\n")] = n_row
  queries = [q for q, v in clicks.items() if v]
  q_emb = np.stack(
    [np.mean(emb[sorted(row[i] for i in clicks[q])], 0) for q in queries]
  )
  q_codes = quant.encode(q_emb.astype(np.float32))
  np.save(work / "query_codes.npy", q_codes)
  (work / "queries.json").write_text(json.dumps(queries, ensure_ascii=False))
  l3 = quant.rq.l3
  np.savez(work / "centroids.npz", l1=quant.rq.l1, l2=quant.rq.l2, l3=l3)
  (work / "sid_config.json").write_text(
    json.dumps({"levels": cfg.levels, "opq_codes": cfg.opq_codes})
  )
  return {
    "items": n,
    "queries": len(queries),
    "levels": "-".join(map(str, cfg.levels)),
    "fit_s": round(fit_s, 1),
    "encode_s": round(encode_s, 1),
    "encode_items_per_s": round(n / max(encode_s, 1e-9)),
  }


def step_tasks(args, work: pathlib.Path) -> dict:
  import numpy as np
  import seqio

  from onesearch_jax.data import tasks
  from onesearch_jax.data.sid_table import SIDTable

  world = work / "world"
  sid_cfg = json.loads((work / "sid_config.json").read_text())
  cents = np.load(work / "centroids.npz")
  with open(world / "extras/item_latent_ids.txt", encoding="utf-8") as f:
    item_ids = tuple(line.rstrip("\n") for line in f)
  table = SIDTable(
    item_ids=item_ids,
    item_codes=np.load(work / "item_codes.npy", mmap_mode="r"),
    query_texts=tuple(json.loads((work / "queries.json").read_text())),
    query_codes=np.load(work / "query_codes.npy"),
    levels=tuple(sid_cfg["levels"]),
    opq_codes=sid_cfg["opq_codes"],
    rq_centroids=(cents["l1"], cents["l2"], cents["l3"]),
  )
  t = time.perf_counter()
  reg = tasks.register_tasks(
    world,
    sid_table=table,
    prefix="bench_stream",
    stream_items=args.mode == "streamed",
  )
  register_s = time.perf_counter() - t
  t = time.perf_counter()
  seen: collections.Counter = collections.Counter()
  for kind, name in reg.tasks.items():
    split = "test" if kind.startswith("eval_") else "train"
    ds = seqio.get_mixture_or_task(name).source.get_dataset(split=split, shuffle=False)
    for batch in ds.ragged_batch(4096).as_numpy_iterator():
      seen[kind] += len(next(iter(batch.values())))
  pass_s = time.perf_counter() - t
  mismatch = {
    k: (seen[k], reg.counts[k]) for k in reg.tasks if seen[k] != reg.counts[k]
  }
  if mismatch:
    raise RuntimeError(f"examples seen != registered counts: {mismatch}")
  tok_rates = {}
  for kind in TOKENISED_KINDS:
    ds = seqio.get_mixture_or_task(reg.tasks[kind]).get_dataset(
      sequence_length=None, split="train", shuffle=False
    )
    it = ds.ragged_batch(256).as_numpy_iterator()
    next(it)  # the first batch pays the pipeline's start-up
    t = time.perf_counter()
    n = sum(len(b["targets"]) for b in itertools.islice(it, args.tokenised // 256))
    tok_rates[kind] = round(n / max(time.perf_counter() - t, 1e-9))
  total = sum(seen.values())
  return {
    "items": len(item_ids),
    "examples": total,
    "by_kind": dict(seen),
    "register_s": round(register_s, 1),
    "pass_s": round(pass_s, 1),
    "examples_per_s": round(total / max(pass_s, 1e-9)),
    "tokenised_per_s": tok_rates,
  }


def step_build_sids(args, work: pathlib.Path) -> dict:
  from onesearch_jax.khqe import build, stream_build

  out = work / f"sids_{args.mode}"
  cfg = build.BuildConfig(
    stream=args.mode == "streamed", l3_parent_mode=args.l3_parent_mode
  )

  def log(m: str) -> None:
    print(m, file=sys.stderr, flush=True)

  if cfg.stream:  # the world step wrote the world: checked as the stage does
    summary = stream_build.build_sids_streamed(
      work / "world", out, cfg, log=log, world_checked=not args.schema_checks
    )
  else:
    summary = build.build_sids(work / "world", out, cfg, log=log)
  return {
    "items": summary.n_items,
    "queries": summary.n_queries,
    "levels": "-".join(map(str, summary.levels)),
    "ICR": round(summary.metrics[cfg.final_variant]["ICR"], 4),
    "timings_s": {k: round(v, 1) for k, v in summary.timings.items()},
    "content_hash": summary.content_hash[:12],
  }


def _child(args) -> None:
  work = pathlib.Path(args.workdir)
  t = time.perf_counter()
  out = globals()[f"step_{args._step}"](args, work)
  out.update(step=args._step, wall_s=round(time.perf_counter() - t, 1))
  out["peak_rss_gib"] = round(_rss_gib(), 3)
  print("RESULT " + json.dumps(out), flush=True)


def _rss_now_gib(pid: int) -> tuple[float, float]:
  """(resident, of which anonymous) GiB of a process; the rest is file pages
  (memory-mapped inputs, which the kernel can drop and re-read)."""
  out = {}
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith(("VmRSS:", "RssAnon:")):
          out[line.split(":")[0]] = int(line.split()[1]) / 2**20
  except OSError:
    pass
  return out.get("VmRSS", 0.0), out.get("RssAnon", 0.0)


def _run_step(step: str, argv: list[str], max_rss_gib: float) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *argv, f"--_step={step}"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
  peak = peak_anon = 0.0
  while proc.poll() is None:
    rss, anon = _rss_now_gib(proc.pid)
    peak, peak_anon = max(peak, rss), max(peak_anon, anon)
    if peak > max_rss_gib:
      proc.kill()
      raise RuntimeError(f"step {step}: RSS {peak:.1f} GiB > {max_rss_gib}; killed")
    time.sleep(0.5)
  out = proc.stdout.read()
  if proc.returncode:
    raise RuntimeError(f"step {step} failed (exit {proc.returncode})")
  line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
  result = json.loads(line.removeprefix("RESULT "))
  result["peak_anon_gib"] = round(peak_anon, 3)  # polled every 0.5 s
  return result


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--n_items", type=int, default=2_000_000)
  p.add_argument("--n_users", type=int, default=2_000)
  p.add_argument("--n_days", type=int, default=3)
  p.add_argument("--dim", type=int, default=128, help="item latent width D")
  p.add_argument("--relevance_pairs", type=int, default=5_000)
  p.add_argument("--mode", default="streamed", choices=("streamed", "eager"))
  p.add_argument("--steps", default=",".join(STEPS))
  p.add_argument("--block_rows", type=int, default=65_536)
  p.add_argument("--opq_iter", type=int, default=10)
  p.add_argument(
    "--tokenised", type=int, default=20_480, help="examples per TOKENISED_KINDS"
  )
  p.add_argument(
    "--l3_parent_mode",
    default="parent",
    choices=("parent", "parent_ab"),
    help="build_sids: level-3 groups; parent_ab's dense [k1*k2, k3, D] codebook "
    "is 8 GiB at 1024-256-128, D 64",
  )
  p.add_argument(
    "--schema_checks",
    action="store_true",
    help="build_sids streamed: every item row schema-checked again (the "
    "sids stage trusts the world stage's validation: item ids only)",
  )
  p.add_argument("--max_rss_gib", type=float, default=10.0)
  p.add_argument("--workdir", required=True)
  p.add_argument("--_step", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args._step:
    _child(args)
    return
  pathlib.Path(args.workdir).mkdir(parents=True, exist_ok=True)
  print(f"load average at start: {os.getloadavg()}", flush=True)
  print(f"command: python benchmarks/streaming.py {' '.join(argv)}")
  rows = []
  for step in args.steps.split(","):
    r = _run_step(step, argv, args.max_rss_gib)
    print(json.dumps(r), flush=True)
    rows.append(r)
  print(f"load average at end: {os.getloadavg()}")
  print(
    f"\n| step ({args.mode}) | items | wall s | peak RSS GiB | of which anonymous "
    "| throughput |"
  )
  print("|---|---|---|---|---|---|")
  for r in rows:
    if r["step"] == "tasks":
      rate = (
        f"{r['examples']:,} examples, {r['examples_per_s']:,}/s raw; "
        f"tokenised/s {r['tokenised_per_s']}; register {r['register_s']} s"
      )
    elif r["step"] == "build_sids":
      rate = (
        f"{r['queries']:,} queries, levels {r['levels']}, ICR {r['ICR']}; "
        f"step s {r['timings_s']}"
      )
    elif r["step"] == "sids":
      rate = (
        f"fit {r['fit_s']} s ({r['levels']}), encode {r['encode_s']} s = "
        f"{r['encode_items_per_s']:,} items/s"
        if r["encode_s"] > 0
        else f"fit + codes {r['fit_s']} s ({r['levels']}), in memory"
      )
    else:
      rate = f"{r['rows']:,} rows, {r['rows'] / max(r['wall_s'], 1e-9):,.0f} rows/s"
    print(
      f"| {r['step']} | {r['items']:,} | {r['wall_s']} | {r['peak_rss_gib']:.2f} "
      f"| {r['peak_anon_gib']:.2f} | {rate} |"
    )


if __name__ == "__main__":
  main()
