"""Stage "train": the SFT phases 1 -> 2 -> 3 (``train.sft.run_sft``), ``wd.train``."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from onesearch_jax import configs
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.stages.resume import StageResult, run_stage
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import sft, sft_config


def run(
  cfg: PipelineConfig,
  wd: Workdir,
  world_dir: pathlib.Path,
  world: StageResult,
  sids: StageResult,
  log: Callable[[str], None],
) -> StageResult:
  """Trains (or resumes training) on the world and the SID artefact."""
  sft_cfg = cfg.train if cfg.train is not None else configs.sft_config()
  sid_hash = sids.output_hash

  def body(out: pathlib.Path) -> dict:
    res = sft.run_sft(world_dir, wd.sids, out, sft_cfg, sid_hash=sid_hash, log=log)
    if not res.finished:
      raise RuntimeError(f"training stopped before the end: {res.phases}")
    last = res.phases["phase3"].evals[-1] if res.phases["phase3"].evals else {}
    return {
      "output_hash": res.params_hash,
      "sid_hash": sid_hash,
      "final_eval": {k: v for k, v in last.items() if k != "kind"},
    }

  return run_stage(
    "train",
    wd.train,
    {
      "world_hash": world.output_hash,
      "sid_hash": sid_hash,
      "sft": sft_config.config_to_dict(sft_cfg),
    },
    body,
    log,
    resumable=True,
  )
