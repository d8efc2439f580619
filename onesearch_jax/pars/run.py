"""The PARS stage, gin-free: reward model -> phase 1 -> phase 2.

`run_pars` writes

  out_dir/reward_model/   params (orbax) + metrics.json (AUC / logloss)
  out_dir/pars1/          examples.npz + checkpoints/ (orbax, resumable)
  out_dir/pars2/          examples.npz + checkpoints/
  out_dir/grpo/           checkpoints/ (only with ParsConfig.grpo set)
  out_dir/summary.json    RM metrics, example stats, phase histories

and resumes: a finished RM is restored, saved examples are reloaded, and
each phase continues from its latest checkpoint (train_phase). Phase 1's
reference is the SFT model; phase 2 starts from phase 1's parameters (fresh
optimizer) and uses them as its reference. The optional GRPO phase
(`ParsConfig.grpo`, pars/grpo.py) starts from the SFT model, as the paper's
V2 runs it after SFT; it is a separate branch, not stacked on phases 1-2.

Injected dependencies (the lead wires the real ones):
  sft_checkpoint_loader(ts) -> ts   fills a fresh TrainState's model params
                                     (e.g. `load_params_from(dir)` below)
  prompt_fn(session_ids) -> {'encoder_input_tokens' [B, L], optional
                             'long_seq_features' [B, 9, D]}
  generate_fn(model, prompts) -> (tokens [B, W, S], scores [B, W])
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable

import jax
from flax import nnx

from onesearch_jax import decoding
from onesearch_jax import sharding as sh
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.pars import (
  grpo,
  grpo_data,
  listwise,
  phases,
  reward_training,
  rewards,
  rm_features,
)
from onesearch_jax.pars import reward_model as rm_lib
from onesearch_jax.pars.grpo import GRPOConfig
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec
from onesearch_jax.train import checkpoints
from onesearch_jax.train import state as state_lib
from onesearch_jax.world import reader


@dataclasses.dataclass(frozen=True)
class ParsConfig:
  """Everything run_pars needs besides the injected callables; the defaults
  are the main job's (``configs.pars_config()``)."""

  model: ModelConfig = ModelConfig()
  mesh: sh.MeshConfig = sh.MeshConfig()
  features: rm_features.FeatureConfig = rm_features.FeatureConfig()
  reward_model: rm_lib.RewardModelConfig = rm_lib.RewardModelConfig()
  r_score: rm_lib.RScoreConfig = rm_lib.RScoreConfig()
  data: phases.PhaseDataConfig = phases.PhaseDataConfig()
  phase1: listwise.ListwiseTrainConfig = listwise.ListwiseTrainConfig(seed=1)
  phase2: listwise.ListwiseTrainConfig = listwise.ListwiseTrainConfig(seed=2)
  batch_size: int = 16  # listwise examples per step (multiple of the batch mesh)
  # Both phases are off in the main job: on the validation day neither raised
  # the generator (docs/PARS.md); the stage then trains the reward model for
  # the re-rank rows. Switch them on to align.
  run_phase1: bool = False
  run_phase2: bool = False
  # OneSearch-V2 GRPO / TPMA-GRPO from the SFT model (pars/grpo.py); None =
  # off (the main job).
  grpo: GRPOConfig | None = None

  def phase(self, name: str) -> listwise.ListwiseTrainConfig:
    """The training settings of a PARS phase by its workdir name ("pars1",
    "pars2": ``generator.PARS_PHASES``)."""
    phases_by_name = {"pars1": self.phase1, "pars2": self.phase2}
    if name not in phases_by_name:
      raise ValueError(f"PARS phase {name!r} not in {sorted(phases_by_name)}")
    return phases_by_name[name]


@dataclasses.dataclass
class ParsResult:
  rm: rm_lib.TrainedRewardModel
  codec: SidCodec
  lookup: ItemLookup
  table: rewards.RewardTable
  phase1: listwise.PhaseResult | None
  phase2: listwise.PhaseResult | None
  grpo: listwise.PhaseResult | None
  examples: dict[str, phases.PreferenceExamples]
  summary: dict


def load_params_from(directory: str | os.PathLike) -> Callable:
  """An sft_checkpoint_loader: params of `directory`'s latest checkpoint into
  a fresh TrainState (its optimizer stays fresh)."""

  def load(ts: state_lib.TrainState) -> state_lib.TrainState:
    ckpt = checkpoints.Checkpointer(directory)
    # The newest step exactly (no fallback to an older one if it is damaged).
    restored, _ = ckpt.restore(ts, step=ckpt.latest_step())
    ckpt.close()
    model, _ = restored.merge()
    _, opt = ts.merge()
    return state_lib.with_state(ts, nnx.state((model, opt)))

  return load


def _with_params(ts: state_lib.TrainState, params_from: state_lib.TrainState):
  model, _ = params_from.merge()
  _, opt = ts.merge()
  st = nnx.state((model, opt))
  st = jax.device_put(st, ts.shardings)
  return state_lib.with_state(ts, st)


def build_reward_inputs(world, table: SIDTable, cfg: ParsConfig):
  """(interactions, context, relevance rows, reward table) of a world + SID
  table."""
  interactions = InteractionLog.build(world, table)
  ctx = rm_features.build_context(world, interactions, table, cfg.features)
  rel = rm_features.relevance_rows(world, interactions, table, cfg.features)
  return interactions, ctx, rel, rewards.RewardTable.build(interactions)


_INPUTS_CACHE: dict = {}


def reward_inputs_of(world_dir: str | os.PathLike, table: SIDTable, cfg: ParsConfig):
  """``build_reward_inputs`` of a world directory, memoised per process (the
  main job's pars and eval stages share one build: ~15 s on the default
  world). The key is the directory, its files' sizes and mtimes, the SID
  table's content hash and the feature settings; one entry is kept."""
  world_dir = pathlib.Path(world_dir)
  files = sorted(
    (p.name, p.stat().st_size, p.stat().st_mtime_ns)
    for p in world_dir.iterdir()
    if p.is_file()
  )
  key = (str(world_dir.resolve()), tuple(files), table.content_hash, repr(cfg.features))
  if key not in _INPUTS_CACHE:
    _INPUTS_CACHE.clear()
    # The ranking table (most of the world's bytes) only feeds release_stats.
    skip = () if cfg.features.release_stats else ("ranking",)
    world = reader.load_world(world_dir, skip_tables=skip)
    _INPUTS_CACHE[key] = build_reward_inputs(world, table, cfg)
  return _INPUTS_CACHE[key]


def run_pars(
  world_dir: str | os.PathLike,
  sid_dir: str | os.PathLike | SIDTable,
  sft_checkpoint_loader: Callable[[state_lib.TrainState], state_lib.TrainState],
  out_dir: str | os.PathLike,
  cfg: ParsConfig,
  generate_fn: Callable,
  log: Callable[[str], None] | None = None,
  *,
  prompt_fn: phases.PromptFn,
  stop_after: int | None = None,
) -> ParsResult:
  """RM training -> phase 1 (RM-guided) -> phase 2 (logged interactions).

  Args:
    world_dir: the world directory (KuaiSearch schema).
    sid_dir: the KHQE SID artefact directory, or a SIDTable (tests).
    sft_checkpoint_loader: fills the policy's params (the SFT model).
    out_dir: where reward_model/, pars1/, pars2/ go.
    cfg: configuration.
    generate_fn: (model, prompts) -> (tokens [B, W, S], scores [B, W]).
    log: progress lines.
    prompt_fn: session ids -> prompt arrays.
    stop_after: stop each phase after this many steps (tests / preemption).
  """
  sink = log or (lambda _m: None)
  t0 = time.perf_counter()

  def log(message: str) -> None:  # every line carries the stage's elapsed time
    sink(f"{message} (+{time.perf_counter() - t0:.1f} s)")

  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  table = sid_dir if isinstance(sid_dir, SIDTable) else SIDTable.from_artefact(sid_dir)
  interactions, ctx, rel, rtable = reward_inputs_of(world_dir, table, cfg)
  log(
    f"[pars] interaction log: {interactions.n_sessions} sessions, "
    f"{interactions.imp_session.size} impressions, skips {dict(interactions.skips)}; "
    f"relevance rows {rel.item.size} (skipped {rel.skipped})"
  )
  rm_dir = out / "reward_model"
  if (rm_dir / "metrics.json").exists():
    rm = rm_lib.restore(rm_dir, cfg.reward_model, ctx, interactions, rel)
    log(f"[pars] reward model restored from {rm_dir}")
  else:
    n = cfg.reward_model.num_steps
    rm = reward_training.train_reward_model(
      ctx, interactions, rel, cfg.reward_model,
      log_fn=lambda s, m: log(f"[rm] step {s}/{n} " + " ".join(
        f"{k}={v:.4f}" for k, v in m.items() if k != "step")),
    )  # fmt: skip
    rm_lib.save(rm, rm_dir)
  log("[pars] reward model: " + ", ".join(
    f"{k}={v:.4f}" for k, v in sorted(rm.metrics.items()) if "auc" in k or "logloss" in k))  # fmt: skip
  codec = SidCodec.from_ranges(cfg.model.sid_ranges, table.code_ranges)
  lookup = ItemLookup.build(
    interactions.item_codes,
    interactions.has_sid,
    rtable.counts.clicks,
    table.code_ranges,
  )

  def score_fn(session, items):
    return rm.score(session, items, cfg.r_score)["r_score"]

  mesh = sh.make_mesh(cfg.mesh)
  rules = cfg.mesh.logical_rules
  summary: dict = {"reward_model": rm.metrics}
  examples: dict[str, phases.PreferenceExamples] = {}
  result1 = result2 = None
  current = None

  def trie_for(phase: listwise.ListwiseTrainConfig):
    """The catalogue trie where the phase scores SIDs under the trie mask."""
    if not phase.loss.trie_logprobs:
      return None
    return decoding.catalogue_trie(table.item_codes, cfg.model.sid_ranges)

  if cfg.run_phase1 or cfg.run_phase2:  # the SFT model, only for a phase
    ts1 = state_lib.create_train_state(
      cfg.model, cfg.phase1.optimizer, mesh, rules, seed=cfg.phase1.seed
    )
    ts1 = sft_checkpoint_loader(ts1)
    current = ts1
  if cfg.run_phase1:
    path = out / "pars1" / "examples.npz"
    if path.exists():
      ex1 = phases.PreferenceExamples.load(path)
    else:
      sft_model, _ = ts1.merge()
      with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        ex1 = phases.rm_guided_examples(
          interactions, rtable, codec, lookup, score_fn, prompt_fn,
          lambda b: generate_fn(sft_model, b), cfg.data, cfg.r_score.gen_weight,
        )  # fmt: skip
      path.parent.mkdir(parents=True, exist_ok=True)
      ex1.save(path)
    examples["pars1"] = ex1
    summary["pars1_examples"] = ex1.stats
    log(f"[pars] phase 1 examples: {ex1.stats}")
    if len(ex1):
      ref1 = listwise.reference_from(ts1)
      result1 = listwise.train_phase(
        ts1, ref1,
        phases.batch_stream(
          ex1, interactions, prompt_fn, cfg.batch_size, cfg.data.seed
        ),
        cfg.phase1, out / "pars1" / "checkpoints",
        meta={"phase": 1, "sid_hash": table.content_hash},
        stop_after=stop_after,
        log_fn=lambda s, m: log(f"[pars1] step {s} " + _fmt(m)),
        trie=trie_for(cfg.phase1),
      )  # fmt: skip
      current = result1.state
      summary["pars1_history"] = result1.history
  if cfg.run_phase2:
    path = out / "pars2" / "examples.npz"
    if path.exists():
      ex2 = phases.PreferenceExamples.load(path)
    else:
      ex2 = phases.logged_examples(interactions, rtable, codec, cfg.data)
      path.parent.mkdir(parents=True, exist_ok=True)
      ex2.save(path)
    examples["pars2"] = ex2
    summary["pars2_examples"] = ex2.stats
    log(f"[pars] phase 2 examples: {ex2.stats}")
    if len(ex2):
      ts2 = state_lib.create_train_state(
        cfg.model, cfg.phase2.optimizer, mesh, rules, seed=cfg.phase2.seed
      )
      ts2 = _with_params(ts2, current)
      ref2 = listwise.reference_from(ts2)
      result2 = listwise.train_phase(
        ts2, ref2,
        phases.batch_stream(
          ex2, interactions, prompt_fn, cfg.batch_size, cfg.data.seed + 1
        ),
        cfg.phase2, out / "pars2" / "checkpoints",
        meta={"phase": 2, "sid_hash": table.content_hash},
        stop_after=stop_after,
        log_fn=lambda s, m: log(f"[pars2] step {s} " + _fmt(m)),
        trie=trie_for(cfg.phase2),
      )  # fmt: skip
      summary["pars2_history"] = result2.history
  result_grpo = None
  if cfg.grpo is not None:
    result_grpo = _run_grpo(
      cfg, table, interactions, rel, rtable, codec, lookup, sft_checkpoint_loader,
      prompt_fn, out, mesh, rules, stop_after, log, summary,
    )  # fmt: skip
  (out / "summary.json").write_text(
    json.dumps(summary, indent=2, sort_keys=True, default=float)
  )
  return ParsResult(
    rm, codec, lookup, rtable, result1, result2, result_grpo, examples, summary
  )


def _run_grpo(
  cfg, table, interactions, rel, rtable, codec, lookup, sft_checkpoint_loader,
  prompt_fn, out, mesh, rules, stop_after, log, summary,
):  # fmt: skip
  """The GRPO phase from the SFT model: out/grpo/checkpoints (resumable)."""
  gcfg = cfg.grpo
  prompts = grpo_data.build_prompts(interactions, rel, codec, gcfg)
  summary["grpo_prompts"] = prompts.stats
  log(f"[grpo] {gcfg.variant}: prompts {prompts.stats}")
  if not len(prompts):
    return None
  trie = decoding.catalogue_trie(table.item_codes, cfg.model.sid_ranges)
  tables = grpo_data.rollout_tables(
    decoding.unique_sids(table.item_codes), lookup, rtable
  )
  ts = state_lib.create_train_state(
    cfg.model, gcfg.optimizer, mesh, rules, seed=gcfg.seed
  )
  ts = sft_checkpoint_loader(ts)
  result = grpo.train_phase(
    ts, trie, tables,
    grpo_data.batch_stream(prompts, interactions, prompt_fn, gcfg.batch_size, gcfg.seed),
    gcfg, out / "grpo" / "checkpoints",
    meta={"phase": "grpo", "variant": gcfg.variant, "sid_hash": table.content_hash},
    stop_after=stop_after,
    log_fn=lambda s, m: log(f"[grpo] step {s}/{gcfg.num_steps} " + _fmt(m)),
  )  # fmt: skip
  summary["grpo_history"] = result.history
  return result


def _fmt(m: dict) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in m.items() if k != "step")
