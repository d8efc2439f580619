"""PipelineConfig and the stage list rules (which stages, in what order)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onesearch_jax.errors import UserError
from onesearch_jax.world.config import WorldConfig

if TYPE_CHECKING:  # heavy imports (jax, seqio); this module stays light to import
  from onesearch_jax.eval.config import EvalConfig
  from onesearch_jax.khqe.build import BuildConfig
  from onesearch_jax.pars.stage import ParsStageConfig
  from onesearch_jax.train.sft_config import SFTConfig


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What the main job runs."""

  # The simulated world to generate (ignored when world_dir is set).
  world: WorldConfig = dataclasses.field(default_factory=WorldConfig.default)
  # A directory already in the KuaiSearch schema (real data); "" = simulate.
  world_dir: str = ""
  # Stages to run, in STAGE_ORDER order, each with its STAGE_NEEDS.
  # The main job's: pars is left out (gin/runs/main.gin says why).
  stages: tuple[str, ...] = ("world", "sids", "train", "pars", "eval")
  # KHQE build settings; None = BuildConfig().
  sids: BuildConfig | None = None
  # SFT settings; None = configs.sft_config() (== SFTConfig()).
  train: SFTConfig | None = None
  # Eval settings; None = EvalConfig().
  eval: EvalConfig | None = None
  # PARS settings; None = configs.pars_config() (== ParsStageConfig()).
  pars: ParsStageConfig | None = None


STAGE_ORDER = ("world", "sids", "train", "pars", "eval")
# The stages each stage reads (they must be in the same stage list).
STAGE_NEEDS = {
  "world": (),
  "sids": ("world",),
  "train": ("world", "sids"),
  "pars": ("world", "sids", "train"),
  "eval": ("world", "sids", "train"),
}


def check_stages(stages: tuple[str, ...]) -> None:
  """Raises UserError unless `stages` are known, unique, in STAGE_ORDER
  order, start with "world" and contain every stage's STAGE_NEEDS."""
  stages = tuple(stages)
  unknown = [s for s in stages if s not in STAGE_ORDER]
  if unknown:
    raise UserError(f"unknown stages {unknown}; known: {STAGE_ORDER}")
  if len(set(stages)) != len(stages):
    raise UserError(f"stages {stages} repeat a stage")
  if list(stages) != sorted(stages, key=STAGE_ORDER.index):
    raise UserError(f"stages {stages} must be in the order of {STAGE_ORDER}")
  if not stages or stages[0] != "world":
    raise UserError(f"stages {stages} must start with 'world'")
  for s in stages:
    missing = [n for n in STAGE_NEEDS[s] if n not in stages]
    if missing:
      raise UserError(f"stage {s!r} needs {missing} in the stage list {stages}")
