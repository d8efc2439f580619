"""Config factories: the gin-free Python path to every stage's config.

gin binds these functions at the edge (run.py registers them as
configurables named ``world_config``, ``sids_config`` and ``pipeline_config``);
tests and notebooks call them directly. No gin import here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from onesearch_jax.pipeline import STAGE_ORDER, PipelineConfig
from onesearch_jax.world.config import WorldConfig

WORLD_PRESETS = ("tiny", "default", "large")


def world_config(
  preset: str = "default", seed: int = 0, overrides: dict[str, Any] | None = None
) -> WorldConfig:
  """A WorldConfig preset with field overrides.

  Args:
    preset: tiny (CI, seconds), default (the main job) or large (>= 1M items).
    seed: the world's seed; the same seed writes identical files.
    overrides: WorldConfig field -> value.
  """
  if preset not in WORLD_PRESETS:
    raise ValueError(f"world preset {preset!r} not in {WORLD_PRESETS}")
  cfg = getattr(WorldConfig, preset)(seed=seed)
  if overrides:
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - names)
    if bad:
      raise ValueError(f"unknown WorldConfig fields {bad}; known: {sorted(names)}")
    cfg = dataclasses.replace(cfg, **overrides)
  return cfg


def sids_config(overrides: dict[str, Any] | None = None):
  """The KHQE BuildConfig with field overrides."""
  from onesearch_jax.khqe.build import BuildConfig

  cfg = BuildConfig()
  if overrides:
    cfg = dataclasses.replace(cfg, **overrides)
  return cfg


def pipeline_config(
  world: WorldConfig | None = None,
  sids: Any = None,
  world_dir: str = "",
  stages: tuple[str, ...] = STAGE_ORDER,
) -> PipelineConfig:
  """The main job's config."""
  return PipelineConfig(
    world=world if world is not None else world_config(),
    world_dir=world_dir,
    stages=tuple(stages),
    sids=sids,
  )
