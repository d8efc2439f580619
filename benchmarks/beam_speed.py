"""Beam-search queries/s at the eval's shapes, this tree vs a reference file.

Loads a finished workdir's SFT model, SID trie and eval_click inputs, and
times, round-robin in one process (ratios hold on a loaded machine):

* the reference beam search (a copy of an older decoding/beam_search.py,
  e.g. ``git show REV:onesearch_jax/decoding/beam_search.py > /tmp/ref.py``),
  optionally with its batch split into lax.map blocks (--ref_blocks);
* this tree's ``make_beam_search`` at each --blocks query block and each
  --batch size;

and reports each variant's sid_index agreement with the reference.

Usage:
  python benchmarks/beam_speed.py --workdir=/tmp/wd_base --ref=/tmp/ref.py \
    [--batch=32,64] [--blocks=none,2,4] [--ref_blocks=2] [--beam=350]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax import decoding
from onesearch_jax import sharding as sh
from onesearch_jax.khqe import artefact
from onesearch_jax.train import sft_load

bs_new = importlib.import_module("onesearch_jax.decoding.beam_search")


def _load_ref(path: str):
  spec = importlib.util.spec_from_file_location("beam_search_ref", path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules["beam_search_ref"] = mod
  spec.loader.exec_module(mod)
  return mod


def _ref_blocked(ref, model, trie, beam, batch_size, block):
  graphdef, state = nnx.split(model)
  trie_d = jax.tree.map(jnp.asarray, trie)

  @jax.jit
  def run(state, trie, inputs):
    m = nnx.merge(graphdef, state)
    n = batch_size // block
    chunks = jax.tree.map(lambda a: a.reshape((n, block) + a.shape[1:]), inputs)
    out = jax.lax.map(lambda x: ref.search(m, x, trie, beam_size=beam), chunks)
    return jax.tree.map(lambda a: a.reshape((batch_size,) + a.shape[2:]), out)

  def call(batch):
    with jax.set_mesh(sh.single_device_mesh()), nnx.logical_axis_rules(sh.DP_RULES):
      return run(state, trie_d, {k: jnp.asarray(v) for k, v in batch.items()})

  return call


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--ref", default="")
  ap.add_argument("--ref_blocks", default="")
  ap.add_argument("--batch", default="32")
  ap.add_argument("--blocks", default="none,2,4")
  ap.add_argument("--beam", type=int, default=350)
  ap.add_argument("--queries", type=int, default=64, help="queries per timing")
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()

  wd = args.workdir
  model, _, cfg = sft_load.load_trained(f"{wd}/train")
  codes = np.asarray(artefact.load(f"{wd}/sids").item_codes)
  trie = decoding.catalogue_trie(codes, cfg.sid_ranges)
  ref = _load_ref(args.ref) if args.ref else None
  blocks = [None if b == "none" else int(b) for b in args.blocks.split(",") if b]
  variants = {}  # name -> (batch size, fn)
  for bsz in (int(x) for x in args.batch.split(",")):
    if ref is not None:
      variants[f"ref B={bsz}"] = (
        bsz, ref.make_beam_search(model, trie, beam_size=args.beam)
      )  # fmt: skip
      for rb in (int(x) for x in args.ref_blocks.split(",") if x):
        variants[f"ref B={bsz} blocks of {rb}"] = (
          bsz, _ref_blocked(ref, model, trie, args.beam, bsz, rb)
        )  # fmt: skip
    for q in blocks:
      variants[f"new B={bsz} query_block={q}"] = (
        bsz, bs_new.make_beam_search(model, trie, beam_size=args.beam, query_block=q)
      )  # fmt: skip
  batches = {}
  for bsz, _ in variants.values():
    if bsz not in batches:
      it = sft_load.eval_inputs(
        f"{wd}/train", "eval_click", batch_size=bsz, pad_last=True
      )
      batches[bsz] = [next(it)[0] for _ in range(max(1, args.queries // bsz))]
  outs = {}
  for name, (bsz, fn) in variants.items():
    t = time.perf_counter()
    outs[name] = [np.asarray(fn(dict(b)).sid_index) for b in batches[bsz]]
    print(f"{name}: first pass (compiles) {time.perf_counter() - t:.1f} s", flush=True)
  times = {name: [] for name in variants}
  for _ in range(args.repeats):
    for name, (bsz, fn) in variants.items():
      t = time.perf_counter()
      for b in batches[bsz]:
        jax.block_until_ready(fn(dict(b)))
      times[name].append(time.perf_counter() - t)
  base = None
  print(f"\nbeam {args.beam}, load average {os.getloadavg()}")
  print(
    "| variant | queries/s | vs first | sid_index equal to first (same batch size) |"
  )
  print("|---|---|---|---|")
  for name, (bsz, _) in variants.items():
    n = len(batches[bsz]) * bsz
    qps = n / statistics.median(times[name])
    base = base or qps
    same = next((o for k, o in outs.items() if variants[k][0] == bsz), None)
    eq = np.mean([np.mean(a == b) for a, b in zip(outs[name], same, strict=True)])
    print(f"| {name} | {qps:.1f} | {qps / base:.2f}x | {eq:.5f} |")


if __name__ == "__main__":
  main()
