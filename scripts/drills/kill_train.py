"""kill -9 drill: a SIGKILLed and rerun training run ends bitwise equal to an
uninterrupted one.

  python scripts/drills/kill_train.py --workdir /tmp/drill
  python scripts/drills/kill_train.py --workdir /tmp/drill --loop=pars

`--loop=sft` drills the SFT loop (train/loop.py); `--loop=pars` a PARS phase
(pars/listwise.train_phase: S-DPO with a frozen reference, synthetic
preference lists). Both run on the project's one loop core
(train/step_loop.py).

runs three subprocesses of this script in `worker` mode on a tiny model and
synthetic data (CPU, 8 fake devices, asynchronous checkpoints every step):
  1. reference: uninterrupted, `--steps` steps;
  2. victim: the same run in another workdir, SIGKILLed once its checkpoint
     directory holds a finished step >= `--kill_after` (with
     `--kill_during_save`: and an async save is half-written on disk);
  3. rerun: the victim's command again, which resumes from the newest
     readable checkpoint.
The victim and the rerun share a persistent XLA compile cache (the rerun
loads the victim's executables instead of compiling them again); the
reference compiles on its own, so the comparison still covers two
independent compiles of the same program.
It then checks that (3) resumed (did not start over), and that its final
parameters (sha256 over every state array) and final-step metrics equal
(1)'s exactly. Exit status 0 on success; the report goes to
`<workdir>/report.json` and stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

TIMING = ("steps_per_sec", "tokens_per_sec", "eta_sec", "seconds")


def _pars_run(args, cfg, ckpt, optimizer, slow_log):
  """A PARS phase (listwise S-DPO) on synthetic preference lists."""
  import numpy as np

  from onesearch_jax import sharding as sh
  from onesearch_jax.pars import listwise
  from onesearch_jax.train import state, synthetic

  mesh_cfg = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
  ts = state.create_train_state(
    cfg, optimizer, sh.make_mesh(mesh_cfg), mesh_cfg.logical_rules, seed=0
  )
  ref = listwise.reference_from(ts)

  def make(p):
    rng = np.random.default_rng(p)
    prompts = synthetic.make_batch(cfg, 8, 7, seed=p)
    chosen = synthetic.random_sids(rng, 8, cfg.sid_ranges)
    rejected = np.stack(
      [synthetic.random_sids(rng, 8, cfg.sid_ranges) for _ in range(3)], 1
    )
    rw = np.concatenate([np.ones((8, 1)), rng.random((8, 3)) * 0.3], 1)
    return listwise.make_batch(
      {"encoder_input_tokens": prompts["encoder_input_tokens"]}, chosen, rejected, rw
    )

  def batches(position):
    return (make(p) for p in range(position, 10**6))

  phase = listwise.ListwiseTrainConfig(
    num_steps=args.steps,
    log_every=1,
    loss=listwise.ListwiseConfig(beta=0.5, reg_weight=1.0),
    optimizer=optimizer,
    checkpoint=ckpt,
  )
  return listwise.train_phase(
    ts, ref, batches, phase, pathlib.Path(args.workdir) / "checkpoints",
    meta={"drill": "pars"}, log_fn=slow_log,
  )  # fmt: skip


def _worker(args) -> None:
  """One training run; writes <workdir>/result.json at the end."""
  import jax
  import numpy as np

  from onesearch_jax import sharding as sh
  from onesearch_jax.model import ModelConfig
  from onesearch_jax.train import checkpoints, loop, optimizers, synthetic

  jax.config.update("jax_disable_most_optimizations", True)  # fast compile
  if args.compile_cache:
    jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  sid_ranges = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
  cfg = ModelConfig.tiny(
    sid_ranges=sid_ranges, emb_placeholder_id=3, dropout_rate=0.1, qformer_layers=1
  )
  optimizer = optimizers.OptimizerConfig(
    learning_rate=1e-3, warmup_steps=1, total_steps=args.steps
  )
  ckpt = checkpoints.CheckpointConfig(save_every_steps=1, keep_last=2, async_save=True)

  def slow_log(step, metrics):  # a slower "step" so the kill lands mid-run
    time.sleep(args.step_sleep)

  if args.loop == "pars":
    res = _pars_run(args, cfg, ckpt, optimizer, slow_log)
  else:
    train_cfg = loop.TrainConfig(
      num_steps=args.steps, log_every=1, optimizer=optimizer, checkpoint=ckpt
    )

    def batches(position):
      return (synthetic.make_batch(cfg, 8, 7, seed=p) for p in range(position, 10**6))

    res = loop.train(
      cfg,
      train_cfg,
      sh.MeshConfig(shape=(2, 4, 1), rules="fsdp"),
      batches,
      args.workdir,
      sid_hash="drill",
      log_fn=slow_log,
    )
  digest = hashlib.sha256()
  for x in jax.tree.leaves(res.state.state):
    digest.update(np.ascontiguousarray(np.asarray(x)).tobytes())
  final = {k: v for k, v in res.history[-1].items() if k not in TIMING}
  out = {
    "params_sha256": digest.hexdigest(),
    "final_metrics": final,
    "resumed_from": res.resumed_from,
    "step": res.state.step,
  }
  (pathlib.Path(args.workdir) / "result.json").write_text(json.dumps(out, indent=1))


def _finished_steps(ckpt_dir: pathlib.Path) -> list[int]:
  """Finished (renamed, committed) step directories; tmp ones are excluded."""
  if not ckpt_dir.is_dir():
    return []
  return sorted(
    int(p.name)
    for p in ckpt_dir.iterdir()
    if p.name.isdigit() and (p / "commit_success.txt").exists()
  )


def _tmp_dirs(ckpt_dir: pathlib.Path) -> list[str]:
  """Unfinished saves: orbax's `<step>.orbax-checkpoint-tmp-<t>` directories."""
  if not ckpt_dir.is_dir():
    return []
  return sorted(p.name for p in ckpt_dir.iterdir() if "orbax-checkpoint-tmp" in p.name)


def _worker_cmd(args, workdir: pathlib.Path, cache: pathlib.Path | None = None):
  cmd = [
    sys.executable,
    __file__,
    "worker",
    f"--workdir={workdir}",
    f"--steps={args.steps}",
    f"--step_sleep={args.step_sleep}",
    f"--loop={args.loop}",
  ]
  return cmd + ([f"--compile_cache={cache}"] if cache else [])


def _env() -> dict[str, str]:
  env = dict(os.environ)
  root = str(pathlib.Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  flag = "--xla_force_host_platform_device_count=8"
  if flag not in env.get("XLA_FLAGS", ""):
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
  return env


def _run(cmd, log_path, timeout) -> None:
  with open(log_path, "w") as log_file:
    proc = subprocess.run(
      cmd, env=_env(), stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout
    )
  if proc.returncode:
    raise RuntimeError(f"{cmd} exited {proc.returncode}; see {log_path}")


def drill(args) -> dict:
  """Runs the drill; returns the report (raises on a failed check)."""
  root = pathlib.Path(args.workdir)
  root.mkdir(parents=True, exist_ok=True)
  ref_dir, run_dir = root / "reference", root / "killed"
  cache = root / "victim_jax_cache"  # victim and rerun only
  t0 = time.perf_counter()
  _run(_worker_cmd(args, ref_dir), root / "reference.log", args.timeout)
  ref = json.loads((ref_dir / "result.json").read_text())

  with open(root / "killed.log", "w") as log_file:
    victim = subprocess.Popen(
      _worker_cmd(args, run_dir, cache),
      env=_env(),
      stdout=log_file,
      stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + args.timeout
    ckpt_dir = run_dir / "checkpoints"
    while not (
      any(s >= args.kill_after for s in _finished_steps(ckpt_dir))
      and (not args.kill_during_save or _tmp_dirs(ckpt_dir))
    ):
      if victim.poll() is not None:
        raise RuntimeError(f"victim exited {victim.returncode} before the kill")
      if time.monotonic() > deadline:
        victim.kill()
        raise TimeoutError("no checkpoint appeared before the timeout")
      time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
  at_kill = _finished_steps(ckpt_dir)
  tmp_at_kill = _tmp_dirs(ckpt_dir)
  if (run_dir / "result.json").exists():
    raise RuntimeError("the victim finished before the kill; raise --step_sleep")

  _run(_worker_cmd(args, run_dir, cache), root / "rerun.log", args.timeout)
  got = json.loads((run_dir / "result.json").read_text())
  report = {
    "killed_with_steps_on_disk": at_kill,
    "unfinished_saves_at_kill": tmp_at_kill,
    "victim_returncode": victim.returncode,
    "rerun_resumed_from": got["resumed_from"],
    "params_equal": got["params_sha256"] == ref["params_sha256"],
    "metrics_equal": got["final_metrics"] == ref["final_metrics"],
    "reference": ref,
    "rerun": got,
    "wall_sec": time.perf_counter() - t0,
  }
  (root / "report.json").write_text(json.dumps(report, indent=1))
  if got["resumed_from"] is None or got["resumed_from"] < args.kill_after:
    raise AssertionError(f"the rerun did not resume from the kill point: {report}")
  if not (report["params_equal"] and report["metrics_equal"]):
    raise AssertionError(f"rerun differs from the uninterrupted run: {report}")
  return report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("mode", nargs="?", default="drill", choices=("drill", "worker"))
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, default=12)
  p.add_argument("--kill_after", type=int, default=4, help="kill once step >= this")
  p.add_argument("--step_sleep", type=float, default=0.3, help="seconds per step")
  p.add_argument(
    "--kill_during_save",
    action="store_true",
    help="kill only while an async save is in flight (a tmp dir exists)",
  )
  p.add_argument("--timeout", type=float, default=300.0, help="per subprocess")
  p.add_argument(
    "--loop", default="sft", choices=("sft", "pars"), help="the loop to drill"
  )
  p.add_argument(
    "--compile_cache", default="", help="worker: persistent XLA compile cache dir"
  )
  args = p.parse_args(argv)
  if args.mode == "worker":
    _worker(args)
    return 0
  report = drill(args)
  print(
    json.dumps({k: v for k, v in report.items() if k not in ("reference", "rerun")})
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
