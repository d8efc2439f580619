"""kill -9 drill (scripts/drills/kill_train.py): SIGKILL during an async save,
rerun, and the final parameters and metrics equal an uninterrupted run's; for
the SFT loop and for a PARS phase."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts/drills/kill_train.py"


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["sft", "pars"])
def test_kill_9_mid_save_then_rerun_equals_uninterrupted(tmp_path, loop):
  cmd = [
    sys.executable, str(SCRIPT), f"--workdir={tmp_path}", f"--loop={loop}",
    "--steps=8", "--kill_after=3", "--kill_during_save", "--timeout=240",
  ]  # fmt: skip
  # Every process of the drill compiles afresh (no shared compile cache), with
  # XLA's optimisations mostly off: faster, and still compile-to-compile.
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=800, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["victim_returncode"] == -9
  assert report["unfinished_saves_at_kill"], "the kill missed the async save"
  assert report["rerun_resumed_from"] >= 3
  assert report["rerun"]["step"] == report["reference"]["step"] == 8
  assert report["rerun"]["params_sha256"] == report["reference"]["params_sha256"]
  assert report["rerun"]["final_metrics"] == report["reference"]["final_metrics"]
  assert report["rerun"]["final_metrics"]["step"] == 8
