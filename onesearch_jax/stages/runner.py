"""The main job: the pipeline stages in order, resumable by artefact.

Stages: ``world`` (simulate, or validate a real world directory), ``sids``
(the KHQE tokenizer), ``train`` (the SFT phases 1 -> 2 -> 3,
``train.sft.run_sft``, in ``workdir/train``), ``pars`` (reward model +
listwise alignment phases 1 and 2, ``pars.stage.run_stage``, in
``workdir/pars``) and ``eval`` (every generative variant and the baselines on
the test split, ``workdir/eval``). A stage list may skip a stage that no later
listed stage needs (``STAGE_NEEDS``), e.g. ("world", "sids", "train", "eval").
How a stage is skipped, redone or resumed: ``stages.resume``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from onesearch_jax.stages import eval as eval_stage
from onesearch_jax.stages import pars as pars_stage
from onesearch_jax.stages import sids as sids_stage
from onesearch_jax.stages import train as train_stage
from onesearch_jax.stages import world as world_stage
from onesearch_jax.stages.config import PipelineConfig, check_stages
from onesearch_jax.stages.resume import StageResult
from onesearch_jax.stages.workdir import Workdir


def run_pipeline(
  cfg: PipelineConfig,
  workdir: Workdir | str | os.PathLike,
  *,
  log: Callable[[str], None] = print,
) -> dict[str, StageResult]:
  """Runs the configured stages in order, resuming finished ones.

  Args:
    cfg: the pipeline configuration.
    workdir: where every artefact goes.
    log: progress printer (one line per call).

  Returns:
    stage name -> StageResult.
  """
  check_stages(tuple(cfg.stages))
  wd = Workdir.of(workdir)
  wd.root.mkdir(parents=True, exist_ok=True)
  start = time.time()
  results: dict[str, StageResult] = {}
  n = len(cfg.stages)

  def done(name: str) -> None:
    log(
      f"[pipeline] stage {len(results)}/{n} {name} finished at "
      f"{time.time() - start:.0f} s"
    )

  world_dir, results["world"] = world_stage.run(cfg, wd, log)
  done("world")
  if "sids" in cfg.stages:
    results["sids"] = sids_stage.run(cfg, wd, world_dir, results["world"], log)
    done("sids")
  if "train" in cfg.stages:
    results["train"] = train_stage.run(
      cfg, wd, world_dir, results["world"], results["sids"], log
    )
    done("train")
  if "pars" in cfg.stages:
    results["pars"] = pars_stage.run(
      cfg, wd, world_dir, results["sids"], results["train"], log
    )
    done("pars")
  if "eval" in cfg.stages:
    results["eval"] = eval_stage.run(
      cfg, wd, world_dir, results["sids"], results["train"], results.get("pars"), log
    )
    done("eval")
  total = time.time() - start
  log(f"[pipeline] all {n} stages done in {total:.1f} s; workdir {wd.root}")
  for line in stage_times(results, total):
    log(f"[pipeline] {line}")
  return results


def stage_times(results: dict[str, StageResult], total: float) -> list[str]:
  """One line per stage, its wall seconds (from ``run_stage``) or "skipped
  (done earlier)", then the total wall time of the run."""
  width = max([len(name) for name in results] + [5])
  lines = ["stage times:"]
  for name, res in results.items():
    took = "skipped (done earlier)" if res.skipped else f"{res.seconds:8.1f} s"
    lines.append(f"  {name:<{width}} {took}")
  lines.append(f"  {'total':<{width}} {total:8.1f} s")
  return lines
