"""run_stage(resumable=True): an unfinished run with the same inputs continues."""

from __future__ import annotations

import pytest

from onesearch_jax import configs
from onesearch_jax.errors import UserError
from onesearch_jax.stages import resume, runner


def _body(calls):
  def body(out):
    calls.append(sorted(p.name for p in out.iterdir()))
    (out / "progress").write_text("step 5")
    if len(calls) == 1:
      raise KeyboardInterrupt  # killed half-way
    return {"output_hash": "h"}

  return body


@pytest.mark.parametrize("resumable", [True, False])
def test_killed_stage_resumes_only_when_resumable(tmp_path, resumable):
  calls: list[list[str]] = []
  logs: list[str] = []
  stage = tmp_path / "train"
  with pytest.raises(KeyboardInterrupt):
    resume.run_stage(
      "train", stage, {"a": 1}, _body(calls), logs.append, resumable=resumable
    )
  assert resume.read_marker(stage) is None
  assert (stage / resume.STARTED).exists() == resumable
  res = resume.run_stage(
    "train", stage, {"a": 1}, _body(calls), logs.append, resumable=resumable
  )
  assert not res.skipped and res.marker["output_hash"] == "h"
  if resumable:  # the body found its earlier progress
    assert "progress" in calls[1] and any("resuming" in x for x in logs)
  else:  # wiped and redone from scratch
    assert calls[1] == [] and any("unfinished earlier run" in x for x in logs)
  again = resume.run_stage(
    "train", stage, {"a": 1}, _body(calls), logs.append, resumable=resumable
  )
  assert again.skipped and len(calls) == 2


def test_changed_inputs_wipe_an_unfinished_resumable_stage(tmp_path):
  calls: list[list[str]] = []
  logs: list[str] = []
  stage = tmp_path / "train"
  with pytest.raises(KeyboardInterrupt):
    resume.run_stage(
      "train", stage, {"a": 1}, _body(calls), logs.append, resumable=True
    )
  res = resume.run_stage(
    "train", stage, {"a": 2}, _body(calls), logs.append, resumable=True
  )
  assert not res.skipped
  assert calls[1] == [resume.STARTED]  # the old progress is gone
  assert any("inputs changed" in x for x in logs)
  # ... and a finished stage whose inputs change is rebuilt as well.
  logs.clear()
  resume.run_stage(
    "train", stage, {"a": 3}, _body([[], []]), logs.append, resumable=True
  )
  assert any("inputs changed" in x for x in logs)


def test_stages_must_include_what_they_need(tmp_path):
  cfg = configs.pipeline_config(stages=("world", "train"))
  with pytest.raises(UserError, match="needs"):
    runner.run_pipeline(cfg, tmp_path)
