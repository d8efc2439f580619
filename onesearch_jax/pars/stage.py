"""PARS in the main job: the pipeline's ``pars`` stage.

Wires `run.run_pars` to a workdir's finished SFT run (``workdir/train``) and
SID artefact (``workdir/sids``):

  cfg.model              the trained ModelConfig (model_config.json)
  sft_checkpoint_loader  load_params_from(train/phase3/checkpoints)
  prompt_fn              the workdir generator's SessionPrompter (the run's
                         vocabulary, Mu-Seq config, eval encoder length)
  generate_fn            the workdir generator's trie beam search (compiled
                         once; each call swaps in the model being aligned),
                         batches padded to one shape

The eval stage loads the aligned phases with ``generator.load_phase_model``
and re-ranks beams with ``pars.beam_rerank``; with ``ParsConfig.grpo`` set it
also ranks with the GRPO phase's model (``pars/grpo/checkpoints``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Callable
from typing import Any

from onesearch_jax import generator as generator_lib
from onesearch_jax import sharding as sh
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars import run as run_lib
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import sft_load
from onesearch_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class ParsStageConfig:
  """The pars stage of the main job.

  Attributes:
    pars: run_pars settings; `model` and `mesh` are replaced by the trained
      run's ModelConfig and MeshConfig at stage time.
    generate_beam: W of the phase-1 trie beam search (candidates per session).
    rerank: add the "onesearch+pars2+rm" row to the eval.
    rerank_label_relevance: let the eval's RM re-rank use relevance labels
      for S_rel (leaks the eval's graded-NDCG labels; off by default).
  """

  pars: run_lib.ParsConfig = run_lib.ParsConfig()
  generate_beam: int = 16
  rerank: bool = True
  rerank_label_relevance: bool = False

  def __post_init__(self):
    if self.generate_beam < 2:
      raise ValueError(
        f"ParsStageConfig.generate_beam must be >= 2: {self.generate_beam}"
      )


def config_to_dict(cfg: ParsStageConfig) -> dict[str, Any]:
  """JSON-able settings (the stage's marker input). A switch added later is
  left out while it is off, so workdirs built before it keep their hash."""
  out = json.loads(json.dumps(dataclasses.asdict(cfg), default=repr))
  if not cfg.pars.features.release_stats:
    del out["pars"]["features"]["release_stats"]
  if cfg.pars.r_score.form == "linear":
    del out["pars"]["r_score"]["form"]
  for field, off in (("phase2_rejected", "levels"), ("phase1_pool", "train")):
    if getattr(cfg.pars.data, field) == off:
      del out["pars"]["data"][field]
  for phase in ("phase1", "phase2"):  # listwise-distillation fields, while off
    loss = getattr(cfg.pars, phase).loss
    if loss.kind == "dpo" and loss.temperature == 1.0:
      del out["pars"][phase]["loss"]["kind"], out["pars"][phase]["loss"]["temperature"]
    if not loss.trie_logprobs:
      del out["pars"][phase]["loss"]["trie_logprobs"]
  if cfg.pars.grpo is None:
    del out["pars"]["grpo"]
  else:  # GRPO switches added after the phase: left out while off
    for k, off in (("kl_coef", 0.0), ("updates_per_batch", 1)):
      if getattr(cfg.pars.grpo, k) == off:
        del out["pars"]["grpo"][k]
  return out


def trained_pars_config(
  cfg: ParsStageConfig, train_dir: pathlib.Path
) -> run_lib.ParsConfig:
  """cfg.pars with the trained run's ModelConfig and MeshConfig."""
  sft_cfg = sft_load.read_config(train_dir)
  return dataclasses.replace(
    cfg.pars, model=sft_load.read_model_config(train_dir), mesh=sft_cfg.mesh
  )


def run_stage(
  world_dir: pathlib.Path,
  workdir: Workdir | pathlib.Path,
  out_dir: pathlib.Path,
  cfg: ParsStageConfig,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Runs PARS on a workdir's finished SFT run; returns the marker fields.

  Args:
    world_dir: the world the workdir was built from.
    workdir: holds ``sids/`` and a finished ``train/``.
    out_dir: the stage's output (``workdir/pars`` in the main job).
    cfg: the stage's settings.
    log: progress printer.

  Returns:
    {"output_hash": sha256 of the final params (phase 2, else phase 1, else
     SFT; with the GRPO phase, combined with its params' hash), "phases": names with a checkpoint, "reward_model": RM metrics,
     "examples": per-phase example counts}.
  """
  wd = Workdir.of(workdir)
  train_dir = wd.train
  pcfg = trained_pars_config(cfg, train_dir)
  mesh = sh.make_mesh(pcfg.mesh)
  holder: dict = {}

  def generate_fn(model, prompts):
    # The workdir's generator on the run's mesh, built on the first call (a
    # resumed run may never generate); each call swaps in the model being
    # aligned (same shapes: the search compiles once).
    if "gen" not in holder:
      holder["gen"] = generator_lib.load_generator(
        wd,
        beam_size=cfg.generate_beam,
        model=model,
        batch_size=pcfg.data.generate_batch,
        mesh=mesh,
        rules=pcfg.mesh.logical_rules,
      )
    res = holder["gen"].with_model(model)(prompts)
    return res.tokens, res.scores

  table = SIDTable.from_artefact(wd.sids)

  def prompt_fn(session_ids):
    # Built on the first call (~10 s): a stage without alignment phases
    # (the main job's) never renders a prompt.
    if "prompter" not in holder:
      holder["prompter"] = generator_lib.session_prompter(world_dir, table, train_dir)
    return holder["prompter"].for_sessions(session_ids)

  res = run_lib.run_pars(
    world_dir,
    table,
    run_lib.load_params_from(train_dir / "phase3" / "checkpoints"),
    out_dir,
    pcfg,
    generate_fn,
    log,
    prompt_fn=prompt_fn,
  )
  final = res.phase2 or res.phase1
  if final is not None:
    out_hash = state_lib.params_hash(final.state)
  else:
    out_hash = hashlib.sha256(b"sft:" + str(train_dir).encode()).hexdigest()
  if res.grpo is not None:  # the GRPO branch's params join the hash
    grpo_hash = state_lib.params_hash(res.grpo.state)
    out_hash = hashlib.sha256(f"{out_hash}+grpo:{grpo_hash}".encode()).hexdigest()
  marker = {
    "output_hash": out_hash,
    "phases": generator_lib.existing_phases(out_dir),
    "reward_model": {k: float(v) for k, v in res.rm.metrics.items()},
    "examples": {k: len(v) for k, v in res.examples.items()},
  }
  if res.grpo is not None:
    marker["grpo"] = pcfg.grpo.variant
  return marker
