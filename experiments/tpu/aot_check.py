"""AOT-compile the train step for a pod mesh on fake CPU devices (no weights).

  python experiments/tpu/aot_check.py --devices=32 --shape=4,8,1 --rules=fsdp \
      --preset=base --batch=256 --enc_len=128 --dec_len=6

Checks before booking a slice that the layout compiles (shardings
propagate, collectives are legal) and prints the per-device bytes of the
parameters and the AdamW state. `--devices` must equal the product of
`--shape` (the slice's chip count: v5litepod-32 -> 32). Compiling the base
model for 8-32 fake devices takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import os
import sys


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--devices", type=int, default=8, help="fake CPU devices")
  p.add_argument("--shape", default="2,4,1", help="data,fsdp,tensor")
  p.add_argument("--rules", default="fsdp", choices=("dp", "fsdp", "fsdp_tp"))
  p.add_argument("--preset", default="base", choices=("tiny", "small", "base"))
  p.add_argument("--dtype", default="bfloat16", help="model compute dtype")
  p.add_argument("--batch", type=int, default=64, help="global batch")
  p.add_argument("--enc_len", type=int, default=128)
  p.add_argument("--dec_len", type=int, default=6)
  p.add_argument(
    "--param_ema",
    action="store_true",
    help="the step also keeps the served parameter average (the main job's "
    "phase 3): its bytes are reported",
  )
  args = p.parse_args(argv)
  shape = tuple(int(s) for s in args.shape.split(","))
  if len(shape) != 3 or math.prod(shape) != args.devices:
    p.error(f"--shape {args.shape} must have 3 sizes multiplying to --devices")
  # Must happen before jax is imported.
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count={args.devices}"
  )
  from onesearch_jax import sharding as sh
  from onesearch_jax.model.configs import model_config
  from onesearch_jax.train import aot, param_ema

  cfg = model_config(args.preset, {"dtype": args.dtype})
  report, _ = aot.compile_train_step_aot(
    cfg,
    sh.MeshConfig(shape=shape, rules=args.rules),
    args.batch,
    args.enc_len,
    args.dec_len,
    param_ema=param_ema.ParamEMAConfig() if args.param_ema else None,
  )
  print(report.format())
  return 0


if __name__ == "__main__":
  sys.exit(main())
