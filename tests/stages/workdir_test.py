"""Workdir: the stage directory names are the on-disk format of workdirs."""

from __future__ import annotations

import json
import pathlib

import pytest

from onesearch_jax.stages import config, resume
from onesearch_jax.stages.workdir import Workdir


def test_paths_are_the_existing_workdir_layout(tmp_path):
  wd = Workdir(str(tmp_path))  # a str root becomes a Path
  assert wd.root == tmp_path
  assert (wd.world, wd.world_check, wd.sids, wd.train, wd.pars, wd.eval) == tuple(
    tmp_path / n for n in ("world", "world_check", "sids", "train", "pars", "eval")
  )
  assert wd.results_json == tmp_path / "eval" / "results.json"
  assert wd.results_md == tmp_path / "eval" / "results.md"
  assert wd.jax_cache == tmp_path / "jax_cache"
  assert wd.operative_config == tmp_path / "operative_config.gin"
  assert wd.infer_output == tmp_path / "infer.jsonl"
  assert [wd.stage_dir(s) for s in config.STAGE_ORDER] == [
    tmp_path / s for s in config.STAGE_ORDER
  ]
  with pytest.raises(ValueError, match="rank"):
    wd.stage_dir("rank")
  assert Workdir.of(wd) is wd and Workdir.of(tmp_path) == wd


def test_world_source_is_the_real_world_when_given(tmp_path):
  wd = Workdir(tmp_path)
  assert wd.world_source() == tmp_path / "world"
  assert wd.world_source("/data/kuaisearch") == pathlib.Path("/data/kuaisearch")


def test_marker_and_results_loaders(tmp_path):
  wd = Workdir(tmp_path)
  assert wd.marker(wd.sids) is None
  res = resume.run_stage(
    "sids", wd.sids, {"a": 1}, lambda out: {"output_hash": "h"}, lambda _: None
  )
  assert wd.marker(wd.sids) == res.marker and res.output_hash == "h"
  (wd.sids / resume.MARKER).write_text("{torn")
  assert wd.marker(wd.sids) is None  # a torn marker is unfinished
  wd.eval.mkdir()
  wd.results_json.write_text(json.dumps({"systems": {"bm25": {}}}))
  assert wd.results() == {"systems": {"bm25": {}}}
