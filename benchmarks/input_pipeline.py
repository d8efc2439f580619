"""Examples/s of each SFT phase's input pipeline (seqio -> model batches).

  python benchmarks/input_pipeline.py [--world_dir=DIR] [--sid_dir=DIR]
      [--batch_size=64] [--batches=40] [--out=docs/BENCHMARKS.md]
  python benchmarks/input_pipeline.py --vs_train_step \
      --world_dir=workdir/world --sid_dir=workdir/sids

``--vs_train_step`` (issue 4's check): for each SFT phase, in one process,
the examples/s of the exact iterator the trainer uses
(``data.model_batches.TrainBatches`` built as ``train/sft.py`` builds it:
the main job's phase tasks, batch size, lengths, length buckets and shuffle
buffer) next to the examples/s the main job's train
step consumes (``configs.sft_config()``'s model, one device, compiled,
batches already in memory), and their ratio (goal >= 5x).

Without --world_dir the simulator's tiny world is written to a temporary
directory; without --sid_dir a random synthetic SID table (levels 64-16-16,
OPQ 2x64, D=32) stands in for the KHQE artefact. For each phase mixture it
times ``pipeline.get_batches`` (tokenisation, prompt rendering, long-seq
feature, feature conversion, batching) after 3 warm-up batches, and appends a
Markdown table to --out together with the command and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from onesearch_jax.data import pipeline, tasks, world_source  # noqa: E402
from onesearch_jax.data.sid_table import SIDTable  # noqa: E402

LENGTHS = {"phase1": (128, 64), "phase2": (128, 64), "phase3": (256, 6)}


def _world(world_dir: str | None) -> str:
  if world_dir:
    return world_dir
  from onesearch_jax.world import simulator
  from onesearch_jax.world.config import WorldConfig

  out = tempfile.mkdtemp(prefix="bench_world_")
  simulator.write_world(WorldConfig.tiny(seed=0), out)
  return out


def _synthetic(world_dir: str) -> SIDTable:
  w = world_source.read_world(world_dir)
  return SIDTable.synthetic(
    [r["item_id"] for r in w.items],
    sorted({r["query"] for r in w.recall}),
    levels=(64, 16, 16),
    opq_codes=64,
    dim=32,
  )


def measure(name: str, batch_size: int, batches: int, lengths) -> float:
  ds = pipeline.get_batches(
    name,
    batch_size=batch_size,
    inputs_length=lengths[0],
    targets_length=lengths[1],
    num_epochs=None,
    seed=0,
  )
  it = ds.as_numpy_iterator()
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - t)


def vs_train_step(
  world_dir: str, sid_dir: str, batches: int, out: str, cmd: str, machine: str
) -> None:
  """Pipeline examples/s vs train-step examples/s per phase (main-job model)."""
  import jax

  from onesearch_jax import configs
  from onesearch_jax import sharding as sh
  from onesearch_jax.train import sft, sft_config, state, steps

  cfg = configs.sft_config()
  t = time.perf_counter()
  reg = tasks.register_tasks(world_dir, sid_dir, prefix="bench")
  t_reg = time.perf_counter() - t
  cfg = sft.resolve_phase3_steps(cfg, reg)
  model_cfg = sft_config.derive_model_config(
    cfg.model, reg.vocabulary, cfg.museq, reg.long_seq_dim
  )
  mesh = sh.make_mesh(cfg.mesh)
  rows = []
  for k, phase in enumerate(sft_config.PHASES):
    tb = sft.phase_batches(cfg, k, reg, use_qformer=model_cfg.use_qformer)
    t = time.perf_counter()
    it = tb(0)
    first = next(it)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    held = [next(it) for _ in range(batches)]
    pipe_eps = batches * cfg.batch_size / (time.perf_counter() - t)
    opt = cfg.phase_train_config(k).optimizer
    ts = state.create_train_state(model_cfg, opt, mesh, cfg.mesh.logical_rules)
    bsh = state.batch_shardings(first, mesh, cfg.mesh.logical_rules)
    fn = steps.compile_train_step(ts, bsh, cfg.train.loss, opt)
    st = ts.state
    # Compile once per encoder width (length buckets) + warm-up, then time
    # every held batch.
    widths = {b["encoder_input_tokens"].shape[1]: b for b in held}
    for b in [*held[:3], *widths.values()]:
      st, m = fn(st, state.shard_batch(b, bsh))
    jax.block_until_ready(m)
    n = len(held)
    t = time.perf_counter()
    for b in held:
      st, m = fn(st, state.shard_batch(b, bsh))
    jax.block_until_ready(m)
    step_eps = n * cfg.batch_size / (time.perf_counter() - t)
    print(f"{phase}: encoder widths {sorted(widths)}", flush=True)
    rows.append((phase, cfg.lengths[k], t_first, pipe_eps, step_eps))
    print(
      f"{phase}: pipeline {pipe_eps:,.0f} ex/s (first batch {t_first:.1f} s), "
      f"train step {step_eps:,.0f} ex/s, ratio {pipe_eps / step_eps:.1f}x",
      flush=True,
    )
  n_params = state.count_params(model_cfg)
  lines = [
    "",
    f"### Input pipeline vs train step, {datetime.date.today().isoformat()}",
    "",
    f"- command: `{cmd}`",
    f"- machine: {machine}; load average at the end "
    f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
    f"- world: {world_dir}; SIDs: {sid_dir}; registration {t_reg:.1f} s",
    f"- model: the main job's (`configs.sft_config()`): d_model {model_cfg.d_model}, "
    f"{model_cfg.num_encoder_layers}+{model_cfg.num_decoder_layers} layers, vocab "
    f"{model_cfg.vocab_size}, {n_params / 1e6:.2f} M params, {jax.device_count()} "
    f"device(s); batch {cfg.batch_size}; shuffle buffer {cfg.shuffle_buffer} per task",
    f"- pipeline: `TrainBatches` (the trainer's iterator), {batches} batches timed "
    "after the first; train step: jitted step on the same batches held in "
    "memory, compiled for each encoder width (length buckets) and warmed up, "
    "then every held batch timed",
    "",
    "| phase | (inputs, targets) | first batch (s) | pipeline examples/s | "
    "train step examples/s | ratio |",
    "|---|---|---|---|---|---|",
  ]
  lines += [
    f"| {s} | {ln} | {tf:.1f} | {p:,.0f} | {e:,.0f} | {p / e:.1f}x |"
    for s, ln, tf, p, e in rows
  ]
  with open(out, "a") as f:
    f.write("\n".join(lines) + "\n")
  print(f"appended to {out}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--world_dir", default=None)
  p.add_argument("--sid_dir", default=None)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--batches", type=int, default=40)
  p.add_argument("--out", default="docs/BENCHMARKS.md")
  p.add_argument(
    "--machine",
    default=f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})",
  )
  p.add_argument("--vs_train_step", action="store_true")
  args = p.parse_args(argv)
  if args.vs_train_step:
    if not (args.world_dir and args.sid_dir):
      p.error("--vs_train_step needs --world_dir and --sid_dir (a real SID artefact)")
    cmd = "python " + " ".join(
      [sys.argv[0]] + (argv if argv is not None else sys.argv[1:])
    )
    vs_train_step(
      args.world_dir, args.sid_dir, args.batches, args.out, cmd, args.machine
    )
    return 0
  world_dir = _world(args.world_dir)
  t = time.perf_counter()
  if args.sid_dir:
    reg = tasks.register_tasks(world_dir, args.sid_dir, prefix="bench")
  else:
    reg = tasks.register_tasks(
      world_dir, sid_table=_synthetic(world_dir), prefix="bench"
    )
  t_reg = time.perf_counter() - t
  rows = []
  for phase, name in sorted(reg.mixtures.items()):
    eps = measure(name, args.batch_size, args.batches, LENGTHS[phase])
    n = sum(c for k, c in reg.counts.items() if k.startswith("s" + phase[-1] + "_"))
    rows.append((phase, n, LENGTHS[phase], eps))
    print(f"{phase}: {eps:,.0f} examples/s ({n} examples)", flush=True)
  # The cache_dir path (Tasks only): epoch 1 fills the cache, epoch 2 reads it.
  cache = tempfile.mkdtemp(prefix="bench_cache_")
  name = reg.tasks["s3_personal"]
  cached = []
  for _ in range(2):
    ds = pipeline.get_batches(
      name,
      batch_size=args.batch_size,
      inputs_length=256,
      targets_length=6,
      cache_dir=cache,
      num_epochs=1,
    )
    t = time.perf_counter()
    n = sum(b["encoder_input_tokens"].shape[0] for b in ds.as_numpy_iterator())
    cached.append(n / (time.perf_counter() - t))
  rows.append(
    (
      "phase3 s3_personal, cache_dir, 1st epoch",
      reg.counts["s3_personal"],
      LENGTHS["phase3"],
      cached[0],
    )
  )
  rows.append(
    (
      "phase3 s3_personal, cache_dir, 2nd epoch (cached)",
      reg.counts["s3_personal"],
      LENGTHS["phase3"],
      cached[1],
    )
  )
  print(
    f"s3_personal cached: {cached[0]:,.0f} -> {cached[1]:,.0f} examples/s", flush=True
  )
  cmd = "python " + " ".join(
    [sys.argv[0]] + (argv if argv is not None else sys.argv[1:])
  )
  lines = [
    "",
    f"## Input pipeline, {datetime.date.today().isoformat()}",
    "",
    f"- command: `{cmd}`",
    f"- machine: {args.machine}",
    f"- world: {args.world_dir or 'WorldConfig.tiny(seed=0), written to a temp dir'}; "
    f"SIDs: {'synthetic table' if not args.sid_dir else args.sid_dir}",
    f"- registration (read world, Mu-Seq features, sentencepiece training): {t_reg:.1f} s",
    f"- batch size {args.batch_size}, {args.batches} timed batches after 3 warm-up",
    "",
    "| phase | examples in phase | (inputs, targets) length | examples/s |",
    "|---|---|---|---|",
  ]
  lines += [f"| {s} | {n} | {ln} | {eps:,.0f} |" for s, n, ln, eps in rows]
  with open(args.out, "a") as f:
    f.write("\n".join(lines) + "\n")
  print(f"appended to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
