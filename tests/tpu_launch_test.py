"""experiments/tpu/launch.sh: syntax, and the commands its --dry_run prints."""

from __future__ import annotations

import base64
import os
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "tpu" / "launch.sh"
BASH = shutil.which("bash")
if BASH is None:  # the script is bash; without it nothing here can run
  raise RuntimeError("tests/tpu_launch_test.py needs bash on PATH")


def _launch(*args, env=None, check=True):
  proc = subprocess.run(
    [BASH, str(SCRIPT), "--dry_run", *args],
    capture_output=True,
    text=True,
    env={**os.environ, **(env or {})},
    timeout=60,
  )
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def _commands(stdout):
  """The '+ ...' lines, each split back into argv."""
  return [
    shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")
  ]


def _job_script(cmds):
  """Decodes the job script shipped inside the train ssh command."""
  for argv in cmds:
    command = next((a for a in argv if a.startswith("--command=echo ")), None)
    if command:
      blob = command.split()[1]
      return base64.b64decode(blob).decode()
  raise AssertionError("no train ssh command in the dry run")


def test_bash_syntax():
  subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


def test_pod_train_runs_on_every_worker_multihost():
  bindings = "--gin_bindings=model_config.preset='base'"
  out = _launch(
    "--accelerator=v5litepod-32",
    "--zone=us-west4-a",
    "--bucket=gs://b/runs/r1",
    "--gin_file=gin/models/base.gin",
    "train",
    "--",
    "--mode=main",
    bindings,
  )
  cmds = _commands(out.stdout)
  assert len(cmds) == 1
  ssh = cmds[0]
  assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  assert "--worker=all" in ssh and "--zone=us-west4-a" in ssh
  script = _job_script(cmds)
  # What the dry run shows as the job script is what gets shipped.
  shown = [ln[4:] for ln in out.stdout.splitlines() if ln.startswith("#   ")]
  assert shown == script.rstrip("\n").splitlines()
  assert "export ONESEARCH_MULTIHOST=1" in script
  run_line = next(ln for ln in script.splitlines() if "run.py" in ln)
  assert shlex.split(run_line) == [
    ".venv/bin/python",
    "run.py",
    "--workdir=gs://b/runs/r1",
    "--gin_file=gin/mesh/fsdp.gin",
    "--gin_file=gin/models/base.gin",
    "--mode=main",
    bindings,
  ]
  assert "gcloud storage cp - gs://b/runs/r1/DONE" in script
  assert "8 host(s)" in out.stderr


def test_single_host_setup_installs_the_tpu_extra():
  out = _launch("--accelerator=v5litepod-8", "--spot", "create", check=True)
  (create,) = _commands(out.stdout)
  assert "--spot" in create and "--accelerator-type=v5litepod-8" in create
  assert "--version=v2-alpha-tpuv5-lite" in create
  out = _launch("--accelerator=v4-8", "setup")
  cmds = _commands(out.stdout)
  assert cmds[0][:3] == ["git", "-C", str(ROOT)] and "archive" in cmds[0]
  assert "scp" in cmds[1] and "--worker=all" in cmds[1]
  install = cmds[2][-1]
  assert "pip install -q -c constraints.txt -e '.[tpu]'" in install


def test_single_host_rsync_workdir_and_no_multihost():
  out = _launch("--accelerator=v6e-8", "--bucket=gs://b/r2", "--sync=rsync", "train")
  script = _job_script(_commands(out.stdout))
  assert "export ONESEARCH_MULTIHOST=0" in script
  assert 'run.py --workdir="$HOME/workdir"' in script
  assert 'gcloud storage rsync -r gs://b/r2 "$HOME/workdir"' in script
  assert script.index("rsync -r gs://b/r2") < script.index("run.py")
  assert "--mode=main" in script  # the default run.py flags


def test_single_host_defaults_to_rsync_pods_to_direct():
  one = _job_script(
    _commands(_launch("--accelerator=v6e-8", "--bucket=gs://b/r4", "train").stdout)
  )
  assert 'run.py --workdir="$HOME/workdir"' in one  # run.py refuses gs:// workdirs
  pod = _job_script(
    _commands(_launch("--accelerator=v4-32", "--bucket=gs://b/r5", "train").stdout)
  )
  assert "--workdir=gs://b/r5" in pod


@pytest.mark.parametrize(
  "state,verbs",
  [
    # Preempted: delete, recreate, ship + install (scp, ssh), train (ssh).
    ("PREEMPTED", ["describe", "delete", "create", "scp", "ssh", "ssh"]),
    # Up but run.py found dead on worker 0: restart on all workers.
    ("READY", ["describe", "ssh", "ssh"]),
  ],
)
def test_watch_recreates_or_restarts(state, verbs):
  out = _launch(
    "--accelerator=v4-32",
    "--bucket=gs://b/r3",
    "watch",
    env={"DRY_RUN_STATE": state, "DRY_RUN_TRAINING": "0"},
  )
  cmds = _commands(out.stdout)
  assert cmds[0] == ["gcloud", "storage", "ls", "gs://b/r3/DONE"]  # checked first
  tpu = [c for c in cmds if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]]
  assert [c[4] for c in tpu] == verbs
  assert "--worker=all" in tpu[-1] and _job_script(cmds).count("run.py") == 1
  if state == "READY":
    assert "--worker=0" in tpu[1]
  assert "resum" in out.stderr


@pytest.mark.parametrize(
  "args,message",
  [
    (["train"], "needs --bucket"),
    (["--bucket=/tmp/x", "train"], "not a gs:// path"),
    (
      ["--accelerator=v5litepod-32", "--bucket=gs://b/x", "--sync=rsync", "train"],
      "single-host only",
    ),
    (["--mesh=zero3", "train"], "--mesh=zero3"),
    (["--accelerator=v9-8", "create"], "unknown TPU generation"),
    ([], "no ACTION"),
  ],
)
def test_bad_invocations_fail_with_a_message(args, message):
  out = _launch(*args, check=False)
  assert out.returncode == 2 and re.search(re.escape(message), out.stderr), out.stderr
