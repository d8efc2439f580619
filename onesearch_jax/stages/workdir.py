"""Workdir: where the main job writes each stage's artefact, and loaders.

The directory names are part of the on-disk format (markers of existing
workdirs live in them); change none of them. The trained model:
``train.sft_load.load_trained(wd.train)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from onesearch_jax.eval import evaluate
from onesearch_jax.khqe import artefact
from onesearch_jax.stages import resume


@dataclasses.dataclass(frozen=True)
class Workdir:
  """A main job's workdir (``run.py --workdir``).

  Attributes:
    root: the directory; the stage directories are its children.
  """

  root: pathlib.Path

  def __post_init__(self):
    object.__setattr__(self, "root", pathlib.Path(self.root))

  @classmethod
  def of(cls, workdir: Workdir | str | os.PathLike) -> Workdir:
    """``workdir`` as a Workdir (a path, or already one)."""
    return workdir if isinstance(workdir, Workdir) else cls(pathlib.Path(workdir))

  @property
  def world(self) -> pathlib.Path:
    """The simulated world (stage "world" without --world_dir)."""
    return self.root / "world"

  @property
  def world_check(self) -> pathlib.Path:
    """The marker of a validated real world (stage "world" with --world_dir)."""
    return self.root / "world_check"

  @property
  def sids(self) -> pathlib.Path:
    """The KHQE SID artefact (stage "sids")."""
    return self.root / "sids"

  @property
  def train(self) -> pathlib.Path:
    """The SFT run, phases 1 -> 2 -> 3 (stage "train")."""
    return self.root / "train"

  @property
  def pars(self) -> pathlib.Path:
    """The reward model and PARS phases (stage "pars")."""
    return self.root / "pars"

  @property
  def eval(self) -> pathlib.Path:
    """The results tables, curve and example searches (stage "eval")."""
    return self.root / "eval"

  @property
  def results_json(self) -> pathlib.Path:
    """The eval stage's results (``eval.evaluate.write_results``)."""
    return self.eval / evaluate.RESULTS_JSON

  @property
  def results_md(self) -> pathlib.Path:
    """The eval stage's results tables."""
    return self.eval / evaluate.RESULTS_MD

  @property
  def jax_cache(self) -> pathlib.Path:
    """The XLA compilation cache of the command line."""
    return self.root / "jax_cache"

  @property
  def operative_config(self) -> pathlib.Path:
    """The gin config a command-line run used."""
    return self.root / "operative_config.gin"

  @property
  def infer_output(self) -> pathlib.Path:
    """--mode=infer's default output."""
    return self.root / "infer.jsonl"

  def stage_dir(self, stage: str) -> pathlib.Path:
    """The directory of a stage of ``stages.config.STAGE_ORDER`` ("world":
    the simulated world's)."""
    if stage not in ("world", "sids", "train", "pars", "eval"):
      raise ValueError(f"unknown stage {stage!r}")
    return getattr(self, stage)

  def world_source(self, world_dir: str | os.PathLike = "") -> pathlib.Path:
    """The world the stages read: ``world_dir`` (real data) when given, else
    the simulated one."""
    return pathlib.Path(world_dir) if world_dir else self.world

  def marker(self, stage_dir: pathlib.Path) -> dict | None:
    """A stage directory's finished marker (None: not finished)."""
    return resume.read_marker(stage_dir)

  def sid_artefact(self) -> artefact.SIDArtefact:
    """The SID artefact, hashes verified."""
    return artefact.load(self.sids)

  def results(self) -> dict:
    """The eval stage's results.json."""
    return json.loads(self.results_json.read_text(encoding="utf-8"))
