"""Latency of host-side phase-3 prompts (``data.session_prompts``).

  python benchmarks/session_prompts.py [--batches=1,32,256] [--repeats=5]

On the simulator's tiny world (``WorldConfig.tiny(seed=0)``, written to a
temporary directory) with a synthetic SID table (levels 64-16-16), L = 256,
in one process:

* ``SessionPrompter`` build (Mu-Seq index of the world);
* ``SessionPrompter.for_sessions`` per batch size B: one warm-up call (the
  tf.function trace), then the mean of --repeats calls, each on B train
  sessions not used before;
* the long-seq feature alone on the same rows, side by side: a new tf.data
  pipeline through ``preprocessors.long_seq_feature`` per call (the way the
  seqio tasks compute it) against the prompter's traced-once tf.function of
  ``preprocessors.long_seq_example``; the outputs are asserted bit-identical.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from onesearch_jax.data import inspect, preprocessors, tasks  # noqa: E402
from onesearch_jax.data import session_prompts as sp  # noqa: E402
from onesearch_jax.world import simulator  # noqa: E402
from onesearch_jax.world.config import WorldConfig  # noqa: E402


def tf_data_long_seq(rows, centroids, cfg) -> tuple[np.ndarray, np.ndarray]:
  """The long-seq feature of `rows` through a new tf.data pipeline."""
  ds = tf.data.Dataset.from_tensor_slices(
    {
      name: tf.ragged.constant([list(r[name]) for r in rows], dtype=tf.int32)
      for name in preprocessors.LONG_SEQ_FIELDS
    }
  )
  ds = preprocessors.long_seq_feature(ds, centroids, cfg.long_reduce, cfg.use_long_seq)
  out = ds.batch(len(rows)).get_single_element()
  return out["long_seq"].numpy(), out["long_seq_mask"].numpy()


def _ms(fn, batches) -> float:
  t = time.perf_counter()
  for b in batches:
    fn(b)
  return 1000 * (time.perf_counter() - t) / len(batches)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", default="1,32,256")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--inputs_length", type=int, default=256)
  args = ap.parse_args()
  sizes = [int(x) for x in args.batches.split(",")]
  world_dir = tempfile.mkdtemp(prefix="bench_prompts_")
  simulator.write_world(WorldConfig.tiny(seed=0), world_dir)
  table = inspect._synthetic_table(world_dir)
  reg = tasks.register_tasks(world_dir, sid_table=table, prefix="bench_prompts")
  t = time.perf_counter()
  prompter = sp.SessionPrompter(
    world_dir, table, reg.vocabulary, inputs_length=args.inputs_length
  )
  print(f"SessionPrompter build: {time.perf_counter() - t:.2f} s")
  train = [s for s, x in prompter.sessions.items() if x.split == tasks.TRAIN]
  need = sum(b * (2 * args.repeats + 2) for b in sizes)
  if len(train) < need:
    raise SystemExit(f"{len(train)} train sessions, need {need}")
  pos = 0

  def take(b: int) -> list[list[str]]:
    nonlocal pos
    out = [train[pos + i * b : pos + (i + 1) * b] for i in range(args.repeats + 1)]
    pos += b * (args.repeats + 1)
    return out

  print("| B | for_sessions ms / batch |\n|---|---|")
  for b in sizes:
    warm, *timed = take(b)
    prompter.for_sessions(warm)
    print(f"| {b} | {_ms(prompter.for_sessions, timed):.1f} |", flush=True)

  centroids = table.item_centroids
  cfg = prompter.config
  print(
    "| B | new tf.data pipeline + long_seq_feature per call ms | traced-once "
    "tf.function of long_seq_example ms | ratio |\n|---|---|---|---|"
  )
  for b in sizes:
    rows = [[prompter.fields(s) for s in ids] for ids in take(b)]
    for r in rows:  # bit-identical
      got, want = prompter._long_seq(r), tf_data_long_seq(r, centroids, cfg)
      np.testing.assert_array_equal(got[0], want[0])
      np.testing.assert_array_equal(got[1], want[1])
    a = _ms(lambda r: tf_data_long_seq(r, centroids, cfg), rows[1:])
    f = _ms(prompter._long_seq, rows[1:])
    print(f"| {b} | {a:.1f} | {f:.1f} | {a / f:.1f}x |", flush=True)


if __name__ == "__main__":
  main()
