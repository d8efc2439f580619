"""Stage "sids": the KHQE tokenizer's SID artefact, ``wd.sids``."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from onesearch_jax.khqe import artefact, build, stream_build
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.stages.resume import StageResult, config_dict, run_stage
from onesearch_jax.stages.workdir import Workdir


def run(
  cfg: PipelineConfig,
  wd: Workdir,
  world_dir: pathlib.Path,
  world: StageResult,
  log: Callable[[str], None],
) -> StageResult:
  """Builds the SIDs of ``world_dir`` (the world stage's ``world``)."""
  build_cfg = cfg.sids if cfg.sids is not None else build.BuildConfig()

  def body(out: pathlib.Path) -> dict:
    if build_cfg.stream:  # the world stage has validated (or simulated) it
      summary = stream_build.build_sids_streamed(
        world_dir, out, build_cfg, log=log, world_checked=True
      )
    else:
      summary = build.build_sids(world_dir, out, build_cfg, log=log)
    metrics = {k: dict(v) for k, v in summary.metrics.items()}
    return {"output_hash": summary.content_hash, "metrics": metrics}

  return run_stage(
    "sids",
    wd.sids,
    # The artefact schema is an input too: a workdir built by an older
    # khqe (other files hashed, other OPQ) is rebuilt, not silently reused.
    {
      "world_hash": world.output_hash,
      "sids": marker_config(build_cfg),
      "artefact_schema": artefact.SCHEMA_VERSION,
    },
    body,
    log,
  )


def marker_config(cfg: build.BuildConfig) -> dict:
  """The BuildConfig as hashed into the stage marker: without the streamed
  build's fields while ``stream`` is off and without ``keyword_tag_weights``
  while empty, so a workdir built before they existed keeps its up-to-date
  marker."""
  out = config_dict(cfg)
  if not cfg.stream:
    del out["stream"], out["stream_sample"]
  if not cfg.keyword_tag_weights:
    del out["keyword_tag_weights"]
  return out
