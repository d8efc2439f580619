"""One stage run, resumable by artefact.

Each stage reads the previous stage's artefact from the workdir and writes its
own directory, then a ``STAGE.json`` marker last. The marker records a hash of
the stage's inputs (its config and the upstream artefacts' hashes). On a
re-run a stage whose marker matches is skipped; a stage whose directory exists
without a matching marker (killed half-way, or its inputs changed) is redone
from scratch. That is what makes re-runs resume and batch jobs restartable.

Resumable stages (``train``, ``pars``): the stage also writes ``STAGE.started.json``
with its inputs hash when it starts. A re-run that finds no finished marker
but a started marker with the SAME inputs keeps the directory and lets the
body continue (the trainer resumes from its latest checkpoint at the saved
data position); different inputs wipe the directory as for any stage.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

from onesearch_jax import config_io

MARKER = "STAGE.json"
STARTED = "STAGE.started.json"


def config_dict(cfg: Any) -> Any:
  """A dataclass config as a dict (the form hashed into stage inputs)."""
  return config_io.to_dict(cfg)


def read_marker_file(path: pathlib.Path) -> dict | None:
  """A JSON marker, or None when absent or torn."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError:
    return None  # a torn write counts as unfinished


def read_marker(stage_dir: pathlib.Path) -> dict | None:
  """The stage marker, or None when the stage has not finished."""
  return read_marker_file(stage_dir / MARKER)


def _write_json(path: pathlib.Path, obj: dict) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)


def _write_marker(stage_dir: pathlib.Path, marker: dict) -> None:
  _write_json(stage_dir / MARKER, marker)


@dataclasses.dataclass
class StageResult:
  """What ``run_stage`` did: skipped (marker up to date) or ran for seconds."""

  name: str
  skipped: bool
  seconds: float
  marker: dict

  @property
  def output_hash(self) -> str:
    """The hash of the stage's artefact, what downstream stages key on."""
    return self.marker["output_hash"]


def run_stage(
  name: str,
  stage_dir: pathlib.Path,
  inputs: dict,
  body: Callable[[pathlib.Path], dict],
  log: Callable[[str], None],
  *,
  keep_dir: bool = False,
  resumable: bool = False,
) -> StageResult:
  """Runs ``body(stage_dir)`` unless the marker says it is done for ``inputs``.

  Args:
    name: stage name, for messages.
    stage_dir: the stage's artefact directory.
    inputs: everything the output depends on (configs, upstream hashes).
    body: does the work, returns a dict merged into the marker; it must
      return an ``output_hash`` that downstream stages key on.
    log: progress printer.
    keep_dir: do not wipe a stale directory (it holds user data).
    resumable: an unfinished run with the same inputs keeps its directory
      and the body continues it (see the module docstring).

  Returns:
    What happened, with the marker.
  """
  inputs_hash = config_io.json_hash(inputs)
  marker = read_marker(stage_dir)
  if marker is not None and marker.get("inputs_hash") == inputs_hash:
    log(f"[{name}] up to date in {stage_dir} (inputs {inputs_hash[:12]}), skipping")
    return StageResult(name, True, 0.0, marker)
  started = read_marker_file(stage_dir / STARTED) if resumable else None
  resume = (
    marker is None and started is not None and started.get("inputs_hash") == inputs_hash
  )
  if resume:
    log(
      f"[{name}] unfinished earlier run with the same inputs: resuming in {stage_dir}"
    )
  elif stage_dir.exists() and not keep_dir:
    why = "inputs changed" if marker or started else "unfinished earlier run"
    log(f"[{name}] {why}: rebuilding {stage_dir}")
    shutil.rmtree(stage_dir)
  stage_dir.mkdir(parents=True, exist_ok=True)
  (stage_dir / MARKER).unlink(missing_ok=True)
  if resumable and not resume:
    _write_json(stage_dir / STARTED, {"stage": name, "inputs_hash": inputs_hash})
  start = time.time()
  out = body(stage_dir)
  seconds = time.time() - start
  if "output_hash" not in out:
    raise RuntimeError(f"stage {name} returned no output_hash")
  marker = {
    "stage": name,
    "inputs_hash": inputs_hash,
    "seconds": round(seconds, 2),
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    **out,
  }
  _write_marker(stage_dir, marker)
  log(f"[{name}] done in {seconds:.1f} s -> {stage_dir}")
  return StageResult(name, False, seconds, marker)
