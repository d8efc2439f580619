"""Stage "world": simulate a world, or validate a real world directory."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.stages.resume import StageResult, config_dict, run_stage
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.world import config as world_config
from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import reader, simulator, stats


def run(
  cfg: PipelineConfig, wd: Workdir, log: Callable[[str], None]
) -> tuple[pathlib.Path, StageResult]:
  """The world the later stages read (``cfg.world_dir`` or the simulated
  ``wd.world``) and its StageResult; prints the world's statistics."""
  if cfg.world_dir:
    world_dir = pathlib.Path(cfg.world_dir)

    def validate(_: pathlib.Path) -> dict:
      log(f"[world] validating {world_dir}")
      world = reader.validate_world(world_dir)  # streamed: no table held
      log(f"{world.counts}\n{world.report.format()}")
      output_hash = manifest_lib.jsonl_content_hash(world_dir)
      return {"output_hash": output_hash, "world_dir": str(world_dir)}

    # The marker of a real world lives in the workdir, never in the user's data.
    # Its inputs include each table's size and mtime, so a rewritten world is
    # validated (and hashed) again rather than trusted from the old marker.
    stamps = {
      p.name: [p.stat().st_size, p.stat().st_mtime_ns]
      for p in sorted(world_dir.glob("*.jsonl"))
    }
    result = run_stage(
      "world",
      wd.world_check,
      {"world_dir": str(world_dir.resolve()), "files": stamps},
      validate,
      log,
    )
  else:
    world_dir = wd.world

    def simulate(out: pathlib.Path) -> dict:
      log(f"[world] simulating {cfg.world.n_items}-item world (seed {cfg.world.seed})")
      manifest = simulator.write_world(cfg.world, out, log=log)
      return {"output_hash": manifest["content_hash"]}

    result = run_stage(
      "world",
      world_dir,
      {"world": config_dict(world_config.config_dict(cfg.world))},
      simulate,
      log,
    )
  log(stats.format_stats(stats.compute_stats(world_dir)))
  return world_dir, result
