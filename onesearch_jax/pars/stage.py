"""PARS in the main job: the pipeline's ``pars`` stage and its eval variants.

Wires `run.run_pars` to a finished SFT run (``workdir/train``) and the SID
artefact (``workdir/sids``):

  cfg.model              the trained ModelConfig (model_config.json)
  sft_checkpoint_loader  load_params_from(train/stage3/checkpoints)
  prompt_fn              SessionPrompter(world, SIDs, the run's vocabulary,
                         its Mu-Seq config, its eval encoder length).for_sessions
  generate_fn            the trie beam search (compiled once; each call sets
                         the searcher's state from the given model), batches
                         padded to one shape

and, for the eval stage, loads the aligned models (``pars1``, ``pars2``) and
builds the RM re-rank of generated beams ("onesearch+pars2+rm").

RM re-rank without leakage: the reward model's context of a test session is
Mu-Seq features strictly before the session's time (rm_features), its heads
see only SID codes (no item id, no test-day counts), and it was trained on
train-split impressions. Its S_rel, however, looks up the world's relevance
LABELS where a (query, item) pair is labelled, and the eval's graded NDCG uses
the same labels; the eval variant therefore scores with the relevance
TOWER's prediction only (``StageConfig.rerank_label_relevance = False``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from onesearch_jax import decoding
from onesearch_jax import sharding as sh
from onesearch_jax.data import model_batches
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.session_prompts import SessionPrompter
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars import rerank
from onesearch_jax.pars import reward_model as rm_lib
from onesearch_jax.pars import run as run_lib
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec
from onesearch_jax.train import checkpoints, sft_load
from onesearch_jax.train import state as state_lib
from onesearch_jax.world import reader

PHASES = ("pars1", "pars2")


@dataclasses.dataclass(frozen=True)
class StageConfig:
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
      raise ValueError(f"StageConfig.generate_beam must be >= 2: {self.generate_beam}")


def config_to_dict(cfg: StageConfig) -> dict[str, Any]:
  """JSON-able settings (the stage's marker input)."""
  return json.loads(json.dumps(dataclasses.asdict(cfg), default=repr))


def trained_pars_config(
  cfg: StageConfig, train_dir: pathlib.Path
) -> run_lib.ParsConfig:
  """cfg.pars with the trained run's ModelConfig and MeshConfig."""
  sft_cfg = sft_load.read_config(train_dir)
  return dataclasses.replace(
    cfg.pars, model=sft_load.read_model_config(train_dir), mesh=sft_cfg.mesh
  )


def session_prompter(world_dir, sid_table, train_dir: pathlib.Path):
  """The SessionPrompter of a finished SFT run (its vocabulary, Mu-Seq
  config and eval encoder length)."""
  spec = model_batches.read_spec(train_dir)
  return SessionPrompter(
    world_dir,
    sid_table,
    vocab_lib.OneSearchVocabulary.load(spec.vocab_dir),
    sft_load.read_config(train_dir).museq,
    inputs_length=spec.eval_inputs_length,
  )


class TrieGenerator:
  """A PARS generate_fn: (model, prompts) -> (tokens [B, W, S], scores [B, W]).

  The beam search is compiled once (on the first call) for batches of
  `batch_size` rows; shorter batches are padded with copies of row 0 and the
  padding rows dropped. Each call puts the given model's state (replicated)
  on the mesh and swaps it into the searcher (no recompile: same shapes).
  """

  def __init__(self, model, trie, beam_size: int, batch_size: int, mesh, rules):
    self.batch_size = int(batch_size)
    self.mesh = mesh
    self.searcher = decoding.make_beam_search(
      model, trie, beam_size=beam_size, mesh=mesh, rules=rules
    )
    self.calls = 0

  def set_model(self, model) -> None:
    state = nnx.state(model)
    self.searcher.state = jax.device_put(
      state, NamedSharding(self.mesh, PartitionSpec())
    )

  def __call__(self, model, prompts):
    self.set_model(model)
    b = int(np.asarray(prompts["encoder_input_tokens"]).shape[0])
    if b > self.batch_size:
      raise ValueError(f"TrieGenerator: batch {b} > batch_size {self.batch_size}")
    batch = {}
    for k, v in prompts.items():
      v = np.asarray(v)
      pad = np.repeat(v[:1], self.batch_size - b, axis=0)
      batch[k] = np.concatenate([v, pad], 0) if b < self.batch_size else v
    res = self.searcher(batch)
    self.calls += 1
    return np.asarray(res.tokens)[:b], np.asarray(res.scores)[:b]


def run_stage(
  world_dir: pathlib.Path,
  sid_dir: pathlib.Path,
  train_dir: pathlib.Path,
  out_dir: pathlib.Path,
  cfg: StageConfig,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Runs PARS on a finished SFT run; returns the stage marker fields.

  Returns:
    {"output_hash": sha256 of the final params (phase 2, else phase 1, else
     SFT), "phases": names with a checkpoint, "reward_model": RM metrics,
     "examples": per-phase example counts}.
  """
  pcfg = trained_pars_config(cfg, train_dir)
  table = SIDTable.from_artefact(sid_dir)
  prompter = session_prompter(world_dir, table, train_dir)
  mesh = sh.make_mesh(pcfg.mesh)
  rules = pcfg.mesh.logical_rules
  holder: dict[str, TrieGenerator] = {}

  def generate_fn(model, prompts):
    if "gen" not in holder:  # built lazily: a resumed run may never generate
      trie = decoding.catalogue_trie(table.item_codes, pcfg.model.sid_ranges)
      holder["gen"] = TrieGenerator(
        model, trie, cfg.generate_beam, pcfg.data.generate_batch, mesh, rules
      )
    return holder["gen"](model, prompts)

  res = run_lib.run_pars(
    world_dir,
    table,
    run_lib.load_params_from(train_dir / "stage3" / "checkpoints"),
    out_dir,
    pcfg,
    generate_fn,
    log,
    prompt_fn=prompter.for_sessions,
  )
  final = res.phase2 or res.phase1
  if final is not None:
    out_hash = state_lib.params_hash(final.state)
  else:
    out_hash = hashlib.sha256(b"sft:" + str(train_dir).encode()).hexdigest()
  return {
    "output_hash": out_hash,
    "phases": existing_phases(out_dir),
    "reward_model": {k: float(v) for k, v in res.rm.metrics.items()},
    "examples": {k: len(v) for k, v in res.examples.items()},
  }


def existing_phases(pars_dir: pathlib.Path) -> list[str]:
  """The phases of pars_dir that have a checkpoint."""
  out = []
  for name in PHASES:
    d = pathlib.Path(pars_dir) / name / "checkpoints"
    if d.exists():
      ckpt = checkpoints.Checkpointer(d)
      if ckpt.latest_step() is not None:
        out.append(name)
      ckpt.close()
  return out


def load_phase_model(pars_dir: pathlib.Path, phase: str, cfg: StageConfig, model_cfg):
  """The aligned EncoderDecoder of one phase (latest checkpoint, one device)."""
  if phase not in PHASES:
    raise ValueError(f"phase {phase!r} not in {PHASES}")
  train_cfg = cfg.pars.phase1 if phase == "pars1" else cfg.pars.phase2
  ts = state_lib.create_train_state(
    model_cfg, train_cfg.optimizer, sh.single_device_mesh(), sh.DP_RULES, seed=0
  )
  ckpt = checkpoints.Checkpointer(pathlib.Path(pars_dir) / phase / "checkpoints")
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"{pars_dir}/{phase}: no checkpoint")
    ts, _ = ckpt.restore(ts)
  finally:
    ckpt.close()
  model, _ = ts.merge()
  return model


@dataclasses.dataclass
class BeamReranker:
  """RM re-rank of beams given as trie sid_index rows.

  Attributes:
    reranker: the RMReranker (session ids -> R_score of SID tokens).
    unique_codes: [U, S] the trie's SIDs (sid_index order), local codes.
  """

  reranker: rerank.RMReranker
  unique_codes: np.ndarray

  def __call__(
    self, session_ids: Sequence[str], sid_index: np.ndarray, scores: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    """(sid_index [n, W], scores [n, W]) re-ordered by R_score (invalid /
    padding beams last, generator order among ties)."""
    sid_index = np.asarray(sid_index)
    if sid_index.shape[0] == 0:
      return sid_index, np.asarray(scores)
    codes = self.unique_codes[np.maximum(sid_index, 0)]
    tokens = self.reranker.codec.tokens(codes)
    tokens = np.where((sid_index >= 0)[..., None], tokens, -1)  # -1: invalid
    rm = self.reranker.scores(list(session_ids), tokens)
    order = rerank.rerank_order(rm, scores, self.reranker.gen_weight)
    return (
      np.take_along_axis(sid_index, order, axis=1),
      np.take_along_axis(np.asarray(scores), order, axis=1),
    )


def beam_reranker(
  world_dir: pathlib.Path,
  sid_dir: pathlib.Path,
  pars_dir: pathlib.Path,
  cfg: StageConfig,
  model_cfg,
  unique_codes: np.ndarray,
  log: Callable[[str], None] = print,
) -> BeamReranker:
  """The eval's RM re-rank: the stage's trained reward model, restored."""
  table = SIDTable.from_artefact(sid_dir)
  world = reader.load_world(world_dir)
  ilog, ctx, rel, rtable = run_lib.build_reward_inputs(world, table, cfg.pars)
  rm = rm_lib.restore(pathlib.Path(pars_dir) / "reward_model", cfg.pars.reward_model,
                      ctx, ilog, rel)  # fmt: skip
  codec = SidCodec.from_ranges(model_cfg.sid_ranges, table.code_ranges)
  lookup = ItemLookup.build(
    ilog.item_codes, ilog.has_sid, rtable.counts.clicks, table.code_ranges
  )
  score_cfg = cfg.pars.r_score
  if cfg.rerank_label_relevance:
    rr = rerank.RMReranker.from_reward_model(rm, codec, lookup, score_cfg)
  else:

    def score(session, items):
      session, items = np.broadcast_arrays(np.asarray(session), np.asarray(items))
      out = rm.predict(session, items)
      r = rm_lib.r_score(out["ctr"], out["cvr"], out["ctcvr"], out["s_rel_model"],
                         score_cfg)  # fmt: skip
      return np.where(items >= 0, r, -np.inf)

    rr = rerank.RMReranker(score, ilog.session_index(), codec, lookup)
  log(f"[eval] RM re-rank: reward model of {pars_dir}, label relevance "
      f"{'on' if cfg.rerank_label_relevance else 'off'}")  # fmt: skip
  return BeamReranker(rr, np.asarray(unique_codes))
