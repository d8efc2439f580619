"""Where the main job's phase-3 seconds go beyond the jitted step.

  python benchmarks/phase3_overheads.py --world_dir=workdir/world \
      --sid_dir=workdir/sids [--batches=300] [--reps=2]

In one process, on the main job's phase-3 setup (``configs.sft_config()``:
the model, the mixture, batch 32, lengths and length buckets, the served
parameter EMA; one device), it measures:

* **compilation per encoder width**: the jitted train step lowered
  (tracing, Python, one thread) and compiled (XLA) for each length bucket
  that occurs, wall and process-CPU seconds, one after the other as the
  trainer meets them;
* **the step loop**: ``--batches`` steps fed (a) from batches already in
  memory ("held") and (b) from the trainer's own iterator
  (``train.sft.phase_batches``, "streamed"), alternated ``--reps`` times, plus the
  iterator alone producing the same number of batches ("pipeline"); (b) and
  the pipeline rows once per path of ``TrainBatches``: "seqio" (the
  on-the-fly tf.data pipeline) and "index" (host arrays gathered in seqio's
  order, the trainer's default; the same batches, checked here on the
  first ``--batches``);
* **materialising** the phase's tasks for the index path (its first batch
  in a fresh process: rendering, tokenising, long-seq sums).

It prints a Markdown table (with the load average); nothing is written.
The difference held -> streamed is what the input pipeline costs the loop
on this machine's cores; the compile rows are what a fresh process pays
before its first step at each width.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from onesearch_jax import configs  # noqa: E402
from onesearch_jax import sharding as sh  # noqa: E402
from onesearch_jax.data import tasks  # noqa: E402
from onesearch_jax.train import sft, sft_config, state, steps  # noqa: E402

PHASE = 2  # phase 3


def _abstract(tree):
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
  )


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--world_dir", required=True)
  p.add_argument("--sid_dir", required=True)
  p.add_argument("--batches", type=int, default=300)
  p.add_argument("--reps", type=int, default=2)
  args = p.parse_args(argv)
  load0 = os.getloadavg()
  cfg = configs.sft_config()
  reg = tasks.register_tasks(args.world_dir, args.sid_dir, prefix="bench")
  cfg = sft.resolve_phase3_steps(cfg, reg)
  model_cfg = sft_config.derive_model_config(
    cfg.model, reg.vocabulary, cfg.museq, reg.long_seq_dim
  )
  mesh = sh.make_mesh(cfg.mesh)
  train_cfg = cfg.phase_train_config(PHASE)

  def iterator(path="index"):
    tb = sft.phase_batches(cfg, PHASE, reg, use_qformer=model_cfg.use_qformer)
    tb.index_path = path == "index"
    return tb(0)

  t0, c0 = time.perf_counter(), time.process_time()
  it = iterator("index")
  held = [next(it)]
  first = (time.perf_counter() - t0, time.process_time() - c0)
  print("index path, first batch (materialises the tasks)", first, flush=True)
  held += [next(it) for _ in range(args.batches - 1)]
  ref = iterator("seqio")
  for i, b in enumerate(held):  # the two paths give the same batches
    r = next(ref)
    assert all(np.array_equal(b[k], r[k]) for k in r) and b.keys() == r.keys(), i
  ts = state.create_train_state(
    model_cfg, train_cfg.optimizer, mesh, cfg.mesh.logical_rules
  )
  if cfg.param_ema is not None:
    ts = state.with_ema_teacher(ts)
  bsh = state.batch_shardings(held[0], mesh, cfg.mesh.logical_rules)
  fn = steps.compile_train_step(
    ts, bsh, train_cfg.loss, train_cfg.optimizer, param_ema=cfg.param_ema
  )
  widths: dict[int, dict] = {}
  for b in held:  # the order the trainer meets the widths in
    widths.setdefault(b["encoder_input_tokens"].shape[1], b)
  rows = []
  compiled = {}
  for w, b in widths.items():
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = fn.lower(_abstract(ts.state), _abstract(state.shard_batch(b, bsh)))
    t1, c1 = time.perf_counter(), time.process_time()
    compiled[w] = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    rows.append((f"compile, encoder width {w}", t1 - t0, c1 - c0, t2 - t1, c2 - c1))
    print(rows[-1], flush=True)
  st = ts.state

  def loop(source) -> tuple[float, float]:
    nonlocal st
    t0, c0 = time.perf_counter(), time.process_time()
    prev = None
    for b in source:
      b = state.shard_batch(b, bsh)
      st, m = compiled[b["encoder_input_tokens"].shape[1]](st, b)
      if prev is not None:  # the loop's one-step-behind finiteness check
        jax.device_get(prev["loss"])
      prev = m
    jax.block_until_ready(st)
    return time.perf_counter() - t0, time.process_time() - c0

  loop(held[:10])  # warm-up
  n = args.batches
  timings = []
  for rep in range(args.reps):
    wall, cpu = loop(held)
    timings.append((rep, "held", wall, cpu))
    print(timings[-1], flush=True)
    for path in ("seqio", "index"):
      s = iterator(path)
      wall, cpu = loop(next(s) for _ in range(n))
      timings.append((rep, f"streamed, {path} path", wall, cpu))
      print(timings[-1], flush=True)
      s = iterator(path)
      t0, c0 = time.perf_counter(), time.process_time()
      for _ in range(n):
        next(s)
      wall, cpu = time.perf_counter() - t0, time.process_time() - c0
      timings.append((rep, f"pipeline alone, {path} path", wall, cpu))
      print(timings[-1], flush=True)
  load1 = os.getloadavg()
  cmd = "python " + " ".join(
    [sys.argv[0]] + (argv if argv is not None else sys.argv[1:])
  )
  out = [
    f"command: `{cmd}`; load average at start {load0[0]:.2f}, at end {load1[0]:.2f}",
    "",
    "| compilation | lower s (wall / CPU) | compile s (wall / CPU) |",
    "|---|---|---|",
  ]
  out += [
    f"| {r[0]} | {r[1]:.2f} / {r[2]:.2f} | {r[3]:.2f} / {r[4]:.2f} |" for r in rows
  ]
  total = sum(r[1] + r[3] for r in rows)
  out += [f"| all {len(rows)} widths | | {total:.1f} s wall in all |", ""]
  out += [
    f"index path: materialising the phase's tasks (first batch): {first[0]:.2f} s "
    f"wall / {first[1]:.2f} s CPU; the first {n} batches equal the seqio path's",
    "",
  ]
  out += [
    f"| rep | {n} batches | wall s | CPU s | ms per batch | steps/s |",
    "|---|---|---|---|---|---|",
  ]
  out += [
    f"| {rep} | {kind} | {wall:.1f} | {cpu:.1f} | {1000 * wall / n:.1f} | {n / wall:.2f} |"
    for rep, kind, wall, cpu in timings
  ]
  print("\n".join(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
