"""The command line's edge: a user error is one line on stderr, exit status 2;
a bug keeps its traceback."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from absl.testing import flagsaver

import gin
from onesearch_jax import main as cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What TensorFlow's C++ runtime logs on stderr when it is imported (not ours).
TF_IMPORT_LOG = re.compile(r"^(WARNING: All log messages before absl::|[IWE]\d{4} )")


def _requests_missing_a_query(tmp_path: pathlib.Path) -> pathlib.Path:
  path = tmp_path / "req.jsonl"
  path.write_text(
    '{"user_id": "u1", "query": "red shoes"}\n\n{"user_id": "u2"}\n', encoding="utf-8"
  )
  return path


def _main(capsys, *flags: str) -> tuple[int, str]:
  """(exit status, stderr) of ``main`` after parsing ``flags``."""
  with flagsaver.flagsaver():
    argv = cli.parse_flags(["run.py", *flags])
    try:
      with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    finally:
      gin.clear_config(clear_constants=True)
  return exit_info.value.code, capsys.readouterr().err


def test_infer_request_error_is_one_line_exit_2_subprocess(tmp_path):
  req = _requests_missing_a_query(tmp_path)
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, str(ROOT / "run.py"), "--mode=infer", f"--requests={req}",
     f"--workdir={tmp_path / 'wd'}", "--gin_file=gin/worlds/tiny.gin"],
    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  ours = [ln for ln in proc.stderr.splitlines() if not TF_IMPORT_LOG.match(ln)]
  assert ours == [f"{req}:3: field 'query' is missing"]
  assert not (tmp_path / "wd" / "world").exists()  # failed before any stage ran


def test_bad_flag_is_one_line_exit_2(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.parse_flags(["run.py", "--mode=nope"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert "--mode" in err and "nope" in err


@pytest.mark.parametrize(
  ("flags", "message"),
  [
    (("--gin_bindings=world_config.n_itemz = 5",), "doesn't have a parameter"),
    (("--gin_bindings=no_such_config.x = 1",), "No configurable matching"),
    (("--gin_bindings=world_config.seed = (",), "gin:"),
    (("--gin_file=no/such/file.gin",), "Unable to open file: no/such/file.gin"),
    (("--gin_bindings=world_config.preset = 'huge'",), "world preset 'huge'"),
    (("--gin_bindings=pipeline_config.stages = ('world', 'train')",), "needs"),
    (("--mode=validate",), "--mode=validate needs --world_dir"),
    (("--mode=infer",), "--mode=infer needs --requests=FILE"),
  ],
)
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, flags, message):
  code, err = _main(capsys, f"--workdir={tmp_path}", *flags)
  assert code == 2
  assert err.count("\n") == 1 and "Traceback" not in err
  assert message in err


def test_remote_workdir_is_refused_not_written_locally(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  code, err = _main(capsys, "--workdir=gs://bucket/run", "--mode=world")
  assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
  assert "gs://bucket/run" in err and "--sync=rsync" in err
  assert not (tmp_path / "gs:").exists()  # pathlib's gs:/bucket/run: never made


def test_bad_request_file_in_process(capsys, tmp_path):
  req = _requests_missing_a_query(tmp_path)
  code, err = _main(
    capsys, f"--workdir={tmp_path}", "--mode=infer", f"--requests={req}"
  )
  assert (code, err) == (2, f"{req}:3: field 'query' is missing\n")
  missing = tmp_path / "none.jsonl"
  code, err = _main(
    capsys, f"--workdir={tmp_path}", "--mode=infer", f"--requests={missing}"
  )
  assert code == 2 and str(missing) in err and err.count("\n") == 1


def test_bad_world_dir_is_one_line_exit_2(capsys, tmp_path):
  world = tmp_path / "world"
  world.mkdir()
  code, err = _main(
    capsys, f"--workdir={tmp_path / 'wd'}", "--mode=validate", f"--world_dir={world}"
  )
  assert code == 2
  assert err.count("\n") == 1 and "missing" in err


def test_a_bug_keeps_its_exception(monkeypatch, tmp_path):
  def broken(made):
    raise KeyError("a bug")

  monkeypatch.setattr(cli, "build_config", broken)
  with flagsaver.flagsaver():
    argv = cli.parse_flags(["run.py", f"--workdir={tmp_path}"])
    try:
      with pytest.raises(KeyError, match="a bug"):
        cli.main(argv)
    finally:
      gin.clear_config(clear_constants=True)
