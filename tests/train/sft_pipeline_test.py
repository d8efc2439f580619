"""The pipeline's train stage: a killed run resumes, a finished one is skipped."""

from __future__ import annotations

import shutil

import pytest

from onesearch_jax.stages import train as train_stage
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.stages.resume import StageResult, read_marker
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import sft, sft_load


@pytest.mark.slow
def test_train_stage_resumes_then_skips(
  sft_world, sft_sids, tmp_path, tiny_sft_config, monkeypatch, fast_compile
):
  sid_dir, sid_hash = sft_sids
  wd = Workdir(tmp_path)
  shutil.copytree(sid_dir, wd.sids)
  world = StageResult("world", True, 0.0, {"output_hash": "world-hash"})
  sids = StageResult("sids", True, 0.0, {"output_hash": sid_hash})
  # The shared run's config (testing.tiny_sft_config): its train and eval
  # steps are the programs sft_run compiled, loaded from the session's
  # compile cache (tests/conftest.py) instead of compiled again.
  cfg = PipelineConfig(train=tiny_sft_config())
  logs: list[str] = []

  def run(*a):
    return train_stage.run(cfg, wd, sft_world, world, sids, *a)

  real = sft.run_sft
  monkeypatch.setattr(
    sft, "run_sft", lambda *a, **kw: real(*a, **kw, stop_after=(1, 1))
  )  # preempted after phase 2's first step
  with pytest.raises(RuntimeError, match="stopped before the end"):
    run(logs.append)
  stage_dir = wd.train
  assert read_marker(stage_dir) is None
  assert (stage_dir / "phase1" / sft_load.RESULT).exists()
  monkeypatch.setattr(sft, "run_sft", real)
  logs.clear()
  res = run(logs.append)
  assert not res.skipped
  assert any("resuming" in x for x in logs)
  assert any("phase1 finished earlier" in x for x in logs)
  assert any("phase2 resumed from step 1" in x for x in logs)
  assert res.marker["sid_hash"] == sid_hash and len(res.marker["output_hash"]) == 64
  assert 0.0 <= res.marker["final_eval"]["eval_accuracy"] <= 1.0
  logs.clear()
  again = run(logs.append)
  assert again.skipped and again.marker == res.marker
