"""Serving cost of a self-distilled model: the same prompts, the same decode time.

Self-distillation (``SFTConfig.sdft``, docs/V2.md) puts the keyword thoughts
in the teacher's training prompts only; serving uses the student prompt.
This loads two finished workdirs of the same world and SID artefact, one
trained without self-distillation (``--plain``) and one with it
(``--sdft``), and in ONE process:

1. reads each run's eval_click serving prompts and checks that their tokens
   are the same, row for row, up to the padding (the two runs may pad to
   different lengths), and that no prompt of the self-distilled run has the
   keyword label ``[TEXT]``;
2. times the trie beam search of both models on the SAME batches (the
   self-distilled run's prompts, padded to its length), round-robin, and
   prints the median milliseconds per query and their ratio.

Usage (workdirs of experiments/ablate.py --experiment=v2, variants v1 and
sdft):
  python benchmarks/sdft_serving.py --plain=ROOT/v2/v1 --sdft=ROOT/v2/sdft \
    [--beam=50] [--batch=32] [--batches=4] [--repeats=5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from onesearch_jax import decoding
from onesearch_jax.khqe import artefact
from onesearch_jax.train import sft_load


def prompts(train_dir: str, batch: int, n: int) -> list[dict]:
  """The first ``n`` eval_click serving batches of a run (its own length)."""
  it = sft_load.eval_inputs(train_dir, "eval_click", batch_size=batch, pad_last=True)
  return [next(it)[0] for _ in range(n)]


def real_rows(tokens: np.ndarray) -> list[list[int]]:
  return [[int(t) for t in row if t != 0] for row in tokens]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--plain", required=True, help="workdir trained without sdft")
  ap.add_argument("--sdft", required=True, help="workdir trained with sdft")
  ap.add_argument("--beam", type=int, default=50)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--batches", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()

  runs = {"plain": args.plain, "sdft": args.sdft}
  cfgs = {k: sft_load.read_config(f"{wd}/train") for k, wd in runs.items()}
  if cfgs["plain"].sdft is not None or cfgs["sdft"].sdft is None:
    raise SystemExit("--plain must be trained without sdft and --sdft with it")
  codes = {
    k: np.asarray(artefact.load(f"{wd}/sids").item_codes) for k, wd in runs.items()
  }
  if not np.array_equal(codes["plain"], codes["sdft"]):
    raise SystemExit("the two workdirs have different SID artefacts")
  batches = {
    k: prompts(f"{wd}/train", args.batch, args.batches) for k, wd in runs.items()
  }
  models, text_ids = {}, {}
  for k, wd in runs.items():
    model, vocab, cfg = sft_load.load_trained(f"{wd}/train")
    models[k] = (model, cfg)
    text_ids[k] = vocab.token_id("[TEXT]")
  rows = 0
  for a, b in zip(batches["plain"], batches["sdft"], strict=True):
    ra, rb = real_rows(a["encoder_input_tokens"]), real_rows(b["encoder_input_tokens"])
    if ra != rb:
      raise SystemExit("the serving prompts of the two runs differ")
    if any(text_ids["sdft"] in r for r in rb):
      raise SystemExit("a serving prompt of the self-distilled run has [TEXT]")
    rows += len(rb)
  lengths = [
    len(r) for b in batches["sdft"] for r in real_rows(b["encoder_input_tokens"])
  ]
  print(
    f"{rows} serving prompts identical in both runs (no [TEXT] keyword segment); "
    f"real length mean {np.mean(lengths):.1f}, max {max(lengths)}; padded to "
    f"{batches['sdft'][0]['encoder_input_tokens'].shape[1]}",
    flush=True,
  )
  searchers = {}
  for k, (model, cfg) in models.items():
    trie = decoding.catalogue_trie(codes[k], cfg.sid_ranges)
    searchers[k] = decoding.make_beam_search(model, trie, beam_size=args.beam)
  same = batches["sdft"]  # both models decode the same batches
  for k, fn in searchers.items():
    t = time.perf_counter()
    for b in same:
      jax.block_until_ready(fn(dict(b)).sid_index)
    print(f"{k}: first pass (compiles) {time.perf_counter() - t:.1f} s", flush=True)
  times = {k: [] for k in searchers}
  for _ in range(args.repeats):
    for k, fn in searchers.items():
      t = time.perf_counter()
      for b in same:
        jax.block_until_ready(fn(dict(b)).sid_index)
      times[k].append(time.perf_counter() - t)
  n = len(same) * args.batch
  ms = {k: 1000 * statistics.median(v) / n for k, v in times.items()}
  print(f"\nbeam {args.beam}, batch {args.batch}, {n} queries x {args.repeats} repeats")
  print(f"load average {os.getloadavg()}")
  print("| model | ms / query (median) |")
  print("|---|---|")
  for k, v in ms.items():
    print(f"| {k} | {v:.2f} |")
  print(f"sdft / plain: {ms['sdft'] / ms['plain']:.3f}")


if __name__ == "__main__":
  main()
