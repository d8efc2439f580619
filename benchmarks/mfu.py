"""MFU of one train step against this machine's measured matmul peak.

  JAX_PLATFORMS=cpu python benchmarks/mfu.py [--preset=small]
      [--shapes=64x128x6,128x128x6,32x128x64] [--steps=5] [--dropout=0.1,0.0]
      [--peak_n=2048] [--prng=unsafe_rbg] [--vocab_size=2446] [--json=/tmp/mfu.json]

Run it WITHOUT --xla_force_host_platform_device_count: one CPU device that
owns every core (the same device the peak matmul runs on). Each shape is
`BxLxT` (batch, encoder tokens, decoder tokens). For every (shape, dropout)
the script builds the train state and the jitted step exactly as
train/loop.py does (dp rules, AdamW, z-loss), runs 2 warm-up steps, then
times `--steps` steps one by one with a matmul peak probe (best of 3
[n, n] @ [n, n] in the model dtype, train/peak_flops.MatmulPeak) before the
first and after every step, all in this process. Model FLOPs come from
onesearch_jax/model/flops.py (matmuls only, training = 3 x forward).

MFU columns:
  best/run peak  fastest step vs the best probe of the whole run;
  local median   per step, achieved FLOP/s over the better of the two probes
                 around it; the median over steps (robust to other jobs on
                 a shared machine: both see the same load);
  CPU-time       FLOP per CPU-second of the step vs of the matmul (immune
                 to time slicing, but blind to cores idling in serial parts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from onesearch_jax import sharding as sh  # noqa: E402
from onesearch_jax.model.configs import ModelConfig, model_config  # noqa: E402
from onesearch_jax.model.flops import train_flops_per_batch  # noqa: E402
from onesearch_jax.model.model import LossConfig  # noqa: E402
from onesearch_jax.train import state, steps  # noqa: E402
from onesearch_jax.train.optimizers import OptimizerConfig  # noqa: E402
from onesearch_jax.train.peak_flops import MatmulPeak  # noqa: E402


def parse_shape(text: str) -> tuple[int, int, int]:
  """'64x128x6' -> (B, L, T)."""
  parts = text.lower().split("x")
  if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--shapes entry {text!r} is not BxLxT (e.g. 64x128x6)")
  return int(parts[0]), int(parts[1]), int(parts[2])


def make_batch(cfg: ModelConfig, b: int, enc_len: int, dec_len: int, seed: int = 0):
  """Random tokens in the batch contract (2 padding positions per row)."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, cfg.vocab_size, size=(b, enc_len)).astype(np.int32)
  enc[:, -2:] = 0
  tgt = rng.integers(2, cfg.vocab_size, size=(b, dec_len)).astype(np.int32)
  dec_in = np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], axis=1)
  feats = rng.normal(size=(b, cfg.num_seq_vectors, cfg.seq_feature_dim))
  return {
    "encoder_input_tokens": enc,
    "decoder_input_tokens": dec_in,
    "decoder_target_tokens": tgt,
    "decoder_loss_weights": np.ones((b, dec_len), np.float32),
    "long_seq_features": feats.astype(np.float32),
  }


def time_train_step(
  cfg: ModelConfig,
  b: int,
  enc_len: int,
  dec_len: int,
  n_steps: int,
  peak_probe: Callable[[], float],
) -> dict[str, Any]:
  """Times the jitted train step, with a matmul peak probe before each step.

  Returns:
    {'step_s': [...], 'cpu_s': [...], 'peaks': [n_steps + 1 probes],
     'compile_s': float}; peaks[i] and peaks[i + 1] bracket step i.
  """
  mesh = sh.single_device_mesh()
  rules = sh.DP_RULES
  opt = OptimizerConfig(learning_rate=1e-3, warmup_steps=10, total_steps=1000)
  ts = state.create_train_state(cfg, opt, mesh, rules)
  batch = make_batch(cfg, b, enc_len, dec_len)
  bsh = state.batch_shardings(batch, mesh, rules)
  fn = steps.compile_train_step(ts, bsh, LossConfig(), opt)
  gbatch = state.shard_batch(batch, bsh)
  t = time.perf_counter()
  st, m = fn(ts.state, gbatch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  st, m = fn(st, gbatch)
  jax.block_until_ready(m)
  out = {"step_s": [], "cpu_s": [], "peaks": [peak_probe()], "compile_s": compile_s}
  for _ in range(n_steps):
    t, c = time.perf_counter(), time.process_time()
    st, m = fn(st, gbatch)
    jax.block_until_ready(m)
    out["step_s"].append(time.perf_counter() - t)
    out["cpu_s"].append(time.process_time() - c)
    out["peaks"].append(peak_probe())
  if not np.isfinite(float(m["loss"])):
    raise FloatingPointError(f"non-finite loss at B={b} L={enc_len} T={dec_len}")
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="small")
  p.add_argument("--shapes", default="64x128x6,128x128x6,32x128x64")
  p.add_argument("--dropout", default="0.1,0.0", help="comma list of rates")
  p.add_argument("--dtype", default="float32", help="model compute dtype")
  p.add_argument(
    "--vocab_size",
    type=int,
    default=0,
    help="override the preset's vocabulary (0 = preset; the main job's is 2446)",
  )
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--peak_n", type=int, default=2048)
  p.add_argument("--json", default="", help="write the rows here")
  p.add_argument(
    "--prng",
    default="",
    help="jax_default_prng_impl for dropout masks (threefry2x32 default; "
    "rbg / unsafe_rbg are cheaper on CPU)",
  )
  args = p.parse_args(argv)
  if args.prng:
    jax.config.update("jax_default_prng_impl", args.prng)
  if len(jax.devices()) != 1:
    print(
      f"warning: {len(jax.devices())} devices; unset "
      "--xla_force_host_platform_device_count so one device owns all cores",
      file=sys.stderr,
    )
  shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
  rates = [float(r) for r in args.dropout.split(",") if r]
  print(
    f"machine: {os.cpu_count()} cores {platform.machine()}, "
    f"load {os.getloadavg()}, jax {jax.__version__}, "
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
    f"prng {jax.config.jax_default_prng_impl}",
    flush=True,
  )
  peaks: list[float] = []
  cpu_peaks: list[float] = []

  matmul = MatmulPeak(args.peak_n, args.dtype)

  def probe() -> float:
    p = matmul.measure(3)
    peaks.append(p)
    cpu_peaks.append(matmul.cpu_flops)
    return p

  rows = []
  for b, enc_len, dec_len in shapes:
    for rate in rates:
      over = {"dropout_rate": rate, "dtype": args.dtype}
      if args.vocab_size:
        over["vocab_size"] = args.vocab_size
      cfg = model_config(args.preset, over)
      flops = train_flops_per_batch(cfg, b, enc_len, dec_len)
      t = time_train_step(cfg, b, enc_len, dec_len, args.steps, probe)
      # Per step: achieved FLOP/s over the better of the two bracketing probes.
      local = [
        flops / s / max(t["peaks"][i], t["peaks"][i + 1])
        for i, s in enumerate(t["step_s"])
      ]
      row = dict(
        batch=b,
        enc_len=enc_len,
        dec_len=dec_len,
        dropout=rate,
        gflop_per_step=flops / 1e9,
        best_s=min(t["step_s"]),
        median_s=statistics.median(t["step_s"]),
        cpu_s=statistics.median(t["cpu_s"]),
        compile_s=t["compile_s"],
        mfu_local_median=statistics.median(local),
        mfu_local_max=max(local),
        tokens_per_s=b * (enc_len + dec_len) / min(t["step_s"]),
        load=os.getloadavg()[0],
        probes=t["peaks"],
      )
      rows.append(row)
      print(
        f"B={b} L={enc_len} T={dec_len} dropout={rate}: {flops / 1e9:.1f} GFLOP, "
        f"steps {[round(x, 2) for x in t['step_s']]} s, probes "
        f"{[round(p / 1e9) for p in t['peaks']]} GFLOP/s -> local MFU median "
        f"{row['mfu_local_median']:.1%} max {row['mfu_local_max']:.1%} "
        f"(load {row['load']:.1f})",
        flush=True,
      )
  run_peak = max(peaks)
  cpu_peak = max(cpu_peaks)
  print(
    f"\nrun peak: {run_peak / 1e9:.1f} GFLOP/s wall (best of {len(peaks)} probes), "
    f"{cpu_peak / 1e9:.1f} GFLOP per CPU-second"
  )
  print(
    "| B | L | T | dropout | GFLOP/step | best s | median s | GFLOP/s (best) | "
    "MFU best/run peak | MFU local median | MFU local max | MFU CPU-time |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    f = r["gflop_per_step"] * 1e9
    r["mfu_best"] = f / r["best_s"] / run_peak
    r["mfu_cpu_time"] = f / r["cpu_s"] / cpu_peak
    print(
      f"| {r['batch']} | {r['enc_len']} | {r['dec_len']} | {r['dropout']} | "
      f"{r['gflop_per_step']:.1f} | {r['best_s']:.2f} | {r['median_s']:.2f} | "
      f"{f / r['best_s'] / 1e9:.1f} | {r['mfu_best']:.1%} | "
      f"{r['mfu_local_median']:.1%} | {r['mfu_local_max']:.1%} | "
      f"{r['mfu_cpu_time']:.1%} |"
    )
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(
        {"run_peak": run_peak, "cpu_peak": cpu_peak, "rows": rows}, fh, indent=1
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
