"""Stage "pars": reward model + listwise alignment phases 1 and 2 on the SFT
model (``pars.stage.run_stage``), ``wd.pars``."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from onesearch_jax import configs
from onesearch_jax.pars import stage as pars_stage
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.stages.resume import StageResult, run_stage
from onesearch_jax.stages.workdir import Workdir


def run(
  cfg: PipelineConfig,
  wd: Workdir,
  world_dir: pathlib.Path,
  sids: StageResult,
  train: StageResult,
  log: Callable[[str], None],
) -> StageResult:
  """Reward model + PARS phases 1 and 2 on the SFT model -> wd.pars."""
  pars_cfg = cfg.pars if cfg.pars is not None else configs.pars_config()

  def body(out: pathlib.Path) -> dict:
    return pars_stage.run_stage(world_dir, wd, out, pars_cfg, log=log)

  return run_stage(
    "pars",
    wd.pars,
    {
      "sid_hash": sids.output_hash,
      "model_hash": train.output_hash,
      "pars": pars_stage.config_to_dict(pars_cfg),
    },
    body,
    log,
    resumable=True,
  )
