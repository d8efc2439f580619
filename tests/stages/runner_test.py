"""The main job's stage runner: resume by marker, rebuild on changed inputs."""

from __future__ import annotations

import json

import pytest

from onesearch_jax import configs
from onesearch_jax.stages import resume, runner

# A world smaller than the tiny preset: this test is about the stage
# mechanics (markers, resume, rebuild), not the world; it writes four.
SMALL = {"n_items": 300, "n_users": 80, "n_days": 5}


def test_world_stage_runs_then_resumes_then_rebuilds(tmp_path):
  logs: list[str] = []
  cfg = configs.pipeline_config(
    world=configs.world_config("tiny", seed=0, overrides=SMALL), stages=("world",)
  )
  first = runner.run_pipeline(cfg, tmp_path, log=logs.append)["world"]
  assert not first.skipped
  assert logs[-3] == "[pipeline] stage times:"
  assert logs[-2] == f"[pipeline]   world {first.seconds:8.1f} s"
  assert logs[-1].startswith("[pipeline]   total ") and logs[-1].endswith(" s")
  manifest = json.loads((tmp_path / "world" / "manifest.json").read_text())
  assert first.marker["output_hash"] == manifest["content_hash"]
  assert any(line.startswith("items ") for line in logs)  # statistics printed

  logs.clear()
  again = runner.run_pipeline(cfg, tmp_path, log=logs.append)["world"]
  assert again.skipped and again.marker == first.marker
  assert any("up to date" in line for line in logs)
  assert logs[-2] == "[pipeline]   world skipped (done earlier)"

  # A killed run (no marker) is redone from scratch, not trusted.
  (tmp_path / "world" / resume.MARKER).unlink()
  redo = runner.run_pipeline(cfg, tmp_path, log=logs.append)["world"]
  assert not redo.skipped
  assert redo.marker["output_hash"] == first.marker["output_hash"]  # same seed

  # Changed inputs rebuild.
  cfg2 = configs.pipeline_config(
    world=configs.world_config("tiny", seed=1, overrides=SMALL), stages=("world",)
  )
  other = runner.run_pipeline(cfg2, tmp_path, log=logs.append)["world"]
  assert not other.skipped
  assert other.marker["output_hash"] != first.marker["output_hash"]


def test_stage_times_lines():
  res = {
    "world": resume.StageResult("world", True, 0.0, {}),
    "train": resume.StageResult("train", False, 132.04, {}),
  }
  assert runner.stage_times(res, 140.0) == [
    "stage times:",
    "  world skipped (done earlier)",
    "  train    132.0 s",
    "  total    140.0 s",
  ]


def test_unknown_world_override_is_refused():
  with pytest.raises(ValueError, match="n_itemz"):
    configs.world_config("tiny", overrides={"n_itemz": 5})


def test_real_world_dir_is_validated_not_simulated(zh_world_dir, tmp_path):
  logs: list[str] = []
  cfg = configs.pipeline_config(world_dir=str(zh_world_dir), stages=("world",))
  res = runner.run_pipeline(cfg, tmp_path, log=logs.append)["world"]
  assert not res.skipped
  assert not (tmp_path / "world").exists()  # nothing simulated
  assert res.marker["world_dir"] == str(zh_world_dir)
  assert any("rows skipped: 0" in line for line in logs)
  again = runner.run_pipeline(cfg, tmp_path, log=logs.append)["world"]
  assert again.skipped
