"""GRPO / TPMA-GRPO with trie-constrained rollouts (SPEC §6.5), one jitted step.

Each step, for B prompts:

1. G rollouts per prompt are sampled from the current policy
   (`decoding.sample.sample`: trie-masked softmax at temperature T, PRNG key
   fold_in(key(seed), data position)), without gradient;
2. rewards: the composite item reward of every rollout (`item_rewards`) and,
   for TPMA, the position-wise match with the prompt's ground-truth SIDs;
3. advantages: "grpo" = the group-normalised item reward on every position
   with gates 1 (`v2.tpma.grpo_advantages`); "tpma" = the token-position
   marginal advantages and prefix gates (`v2.tpma.tpma_advantages`, plus
   w_item times the normalised item reward);
4. loss = `v2.tpma.tpma_objective` (unclipped ratio exp(log π − log π_old))
   + sft_weight · CE of the prompt's first ground-truth SID (+ EOS). π_old is
   the sampling policy, i.e. the same parameters: log π_old =
   stop_gradient(log π), so the ratio is 1 in value and carries the gradient
   (one update per batch of rollouts, as the official trainer's default).

Composite item reward R_item = R_C&O + R_CTR + R_Rel (`v2.grpo_rewards`):
  * R_C&O: 4 if the rollout's SID is one of the session's ordered items'
    SIDs, else 3 if a clicked item's, else 0;
  * R_CTR: the calibrated CTR of the SID's item (`pars.rewards.RewardTable.ctr`
    of `ItemLookup`'s item of the SID; the same Ctr the PARS item reward
    uses), a per-SID table passed to the step;
  * R_Rel: the relevance tier (0..3) of the SID's item for the session's query
    where the world has a judgement of that pair (the mean grade of its
    labels, rounded), else 0, as the official code.

Batch contract (host numpy, leading axis B over the BATCH rule):

  encoder_input_tokens [B, L] int32    the prompt (+ long_seq_features)
  gt_tokens     [B, T, S] int32   ground-truth SIDs (ordered first, then
                                  clicked); padding rows 0
  gt_mask       [B, T] bool       False = padding
  gt_order      [B, T] bool       the item was ordered (else clicked)
  rel_tokens    [B, J, S] int32   judged SIDs of the session's query
  rel_tier      [B, J] int32      their tiers (0 on padding)
  position      [B] int32         the batch's data position (rollout key)
  example_weight [B] f32          0 = padding prompt

Choices (the paper is silent):
  * No dropout in the GRPO phase: sampling and scoring are deterministic,
    so log π_old = log π exactly at the sampled parameters.
  * The rollout log-probs are those of the constrained policy (the trie-masked
    softmax at temperature T), the distribution that was sampled.
  * The SFT term is the model's level-restricted token CE of the first
    ground truth (the mean over its S + 1 tokens), on prompts with one.
  * A prompt whose G rollouts all get the same reward has zero advantages
    (the group std is 0; 1e-8 keeps it finite): only the SFT term moves it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.decoding import sample as sample_lib
from onesearch_jax.decoding.trie import TrieIndex
from onesearch_jax.errors import UserError
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.pars import listwise
from onesearch_jax.train import checkpoints, step_loop
from onesearch_jax.train import state as state_lib
from onesearch_jax.train.optimizers import OptimizerConfig
from onesearch_jax.train.state import TrainState
from onesearch_jax.v2 import grpo_rewards, tpma

VARIANTS = ("grpo", "tpma")
PROMPT_KEYS = ("encoder_input_tokens", "long_seq_features")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """The GRPO phase of the PARS stage (off unless ``ParsConfig.grpo`` is set).

  Attributes:
    variant: "grpo" (sequence-level advantages) or "tpma" (token-position
      marginal advantages with prefix gates).
    num_samples: G rollouts per prompt (>= 2: the group std).
    temperature: T of the sampling policy (> 0).
    batch_size: prompts per step.
    max_targets: T ground-truth SIDs per prompt at most.
    max_judged: J judged SIDs per prompt at most (highest tiers kept).
    sft_weight: weight of the ground-truth CE (SPEC's 0.1).
    w_item: TPMA only: weight of the normalised item reward added to every
      position (0 as the official trainer: then TPMA uses the match rewards
      alone).
    num_steps, log_every, seed, optimizer, checkpoint: as a PARS phase (the
      learning rate is the PARS phases' 1e-4, constant after 5 warmup steps).
  """

  variant: str = "tpma"
  num_samples: int = 8
  temperature: float = 1.0
  batch_size: int = 8
  max_targets: int = 4
  max_judged: int = 16
  sft_weight: float = tpma.SFT_WEIGHT
  w_item: float = 0.0
  num_steps: int = 100
  log_every: int = 10
  seed: int = 3
  optimizer: OptimizerConfig = OptimizerConfig(
    learning_rate=1e-4, warmup_steps=5, total_steps=100, decay="constant"
  )
  checkpoint: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(
    save_every_steps=100, keep_last=1
  )

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(
        f"GRPOConfig.variant must be one of {VARIANTS}: {self.variant!r}"
      )
    if self.num_samples < 2:
      raise ValueError(f"GRPOConfig.num_samples must be >= 2: {self.num_samples}")
    if self.temperature <= 0:
      raise ValueError(f"GRPOConfig.temperature must be > 0: {self.temperature}")
    if min(self.batch_size, self.max_targets, self.max_judged) < 1:
      raise ValueError(
        f"GRPOConfig batch_size, max_targets, max_judged must be >= 1: {self}"
      )
    if self.sft_weight < 0 or self.w_item < 0:
      raise ValueError("GRPOConfig sft_weight and w_item must be >= 0")
    if self.num_steps <= 0 or self.log_every <= 0:
      raise ValueError("GRPOConfig num_steps and log_every must be > 0")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RolloutTables:
  """Per-SID reward inputs, indexed by the trie's sid_index.

  Attributes:
    sid_ctr: [U] float32 calibrated CTR of each SID's item.
  """

  sid_ctr: jax.Array | np.ndarray


def _full_match(tokens: jax.Array, table: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, G, S] rollouts vs [B, M, S] SIDs (mask [B, M]) -> [B, G, M] bool."""
  eq = jnp.all(tokens[:, :, None, :] == table[:, None, :, :], axis=-1)
  return eq & mask[:, None, :]


def item_rewards(
  tokens: jax.Array,
  sid_index: jax.Array,
  batch: Mapping[str, jax.Array],
  tables: RolloutTables,
) -> dict[str, jax.Array]:
  """R_item = R_C&O + clip(CTR, 0, 1) + R_Rel of every rollout (jnp twin of
  ``grpo_rewards.composite_item_reward``).

  Args:
    tokens: [B, G, S] rollout SIDs.
    sid_index: [B, G] their trie leaves.
    batch: gt_tokens, gt_mask, gt_order, rel_tokens, rel_tier (the contract).
    tables: per-SID CTR.

  Returns:
    {"item": [B, G] R_item, "co": R_C&O, "ctr": R_CTR, "rel": R_Rel,
     "hit": [B, G] the rollout is a ground truth} float32.
  """
  gt = _full_match(tokens, batch["gt_tokens"], batch["gt_mask"])  # [B, G, T]
  is_order = jnp.any(gt & batch["gt_order"][:, None, :], axis=-1)
  is_click = jnp.any(gt, axis=-1)
  co = jnp.where(
    is_order, grpo_rewards.V_ORDER, jnp.where(is_click, grpo_rewards.V_CLICK, 0.0)
  )
  ctr = jnp.clip(jnp.asarray(tables.sid_ctr)[jnp.maximum(sid_index, 0)], 0.0, 1.0)
  ctr = jnp.where(sid_index >= 0, ctr, 0.0)
  judged = _full_match(tokens, batch["rel_tokens"], batch["rel_tier"] > 0)
  rel = jnp.max(
    jnp.where(judged, batch["rel_tier"][:, None, :], 0), axis=-1, initial=0
  ).astype(jnp.float32)
  return {
    "item": co + ctr + rel,
    "co": co.astype(jnp.float32),
    "ctr": ctr.astype(jnp.float32),
    "rel": rel,
    "hit": is_click.astype(jnp.float32),
  }


def advantages(
  cfg: GRPOConfig, tokens: jax.Array, batch: Mapping[str, jax.Array], r_item: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(advantages, gates) [B, G, S] of the configured variant."""
  if cfg.variant == "grpo":
    return tpma.grpo_advantages(r_item, tokens.shape[-1])
  return tpma.tpma_advantages(
    tokens,
    batch["gt_tokens"],
    batch["gt_mask"],
    item_rewards=r_item,
    w_item=cfg.w_item,
  )


def sft_log_prob(model: EncoderDecoder, batch: Mapping[str, jax.Array]) -> jax.Array:
  """[B] mean token log-prob of the first ground-truth SID + EOS (teacher
  forced, the model's level restriction; 0 where a prompt has none)."""
  first = batch["gt_tokens"][:, :1]  # [B, 1, S]
  b = first.shape[0]
  eos = jnp.full((b, 1, 1), listwise.EOS_ID, jnp.int32)
  targets = jnp.concatenate([first, eos], axis=-1)
  dec_in = jnp.concatenate([jnp.zeros((b, 1, 1), jnp.int32), targets[..., :-1]], -1)
  has = batch["gt_mask"][:, :1, None].astype(jnp.float32)
  weights = jnp.broadcast_to(has, targets.shape)
  prompts = {k: batch[k] for k in PROMPT_KEYS if k in batch}
  lp = listwise.sequence_logprobs(
    model,
    {
      **prompts,
      "decoder_target_tokens": targets,
      "decoder_input_tokens": dec_in,
      "decoder_loss_weights": weights,
    },
    average=True,
  )
  return lp[:, 0]


def objective(
  model: EncoderDecoder,
  rollouts: sample_lib.SampleResult,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex,
  tables: RolloutTables,
  cfg: GRPOConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The GRPO / TPMA loss of sampled rollouts, and scalar metrics.

  Args:
    model: the policy (differentiated).
    rollouts: G samples per prompt of the same parameters (constants).
    batch: the batch contract.
    trie: the catalogue trie.
    tables: per-SID reward inputs.
    cfg: the phase's settings.

  Returns:
    (loss, metrics).
  """
  tokens = jax.lax.stop_gradient(rollouts.tokens)
  prompts = {k: batch[k] for k in PROMPT_KEYS if k in batch}
  ex_w = batch["example_weight"].astype(jnp.float32)  # [B]
  rw = item_rewards(tokens, rollouts.sid_index, batch, tables)
  adv, gates = advantages(cfg, tokens, batch, rw["item"])
  adv = jax.lax.stop_gradient(adv)
  logp = sample_lib.constrained_log_probs(
    model, prompts, trie, tokens, temperature=cfg.temperature
  )  # [B, G, S]
  mask = jnp.broadcast_to(ex_w[:, None, None], logp.shape)
  pg = tpma.tpma_objective(logp, jax.lax.stop_gradient(logp), adv, gates, mask)
  has_gt = batch["gt_mask"][:, 0].astype(jnp.float32) * ex_w
  sft = -jnp.sum(sft_log_prob(model, batch) * has_gt) / jnp.maximum(has_gt.sum(), 1.0)
  parts = tpma.tpma_grpo_loss(pg, sft, cfg.sft_weight)
  denom = jnp.maximum(ex_w.sum(), 1.0)

  def mean(x):  # over the G rollouts and the weighted prompts
    return jnp.sum(x.mean(axis=1) * ex_w) / denom

  match = tpma.position_match(tokens, batch["gt_tokens"], batch["gt_mask"])
  w = jnp.asarray(tpma.position_weights(tokens.shape[-1]))
  prefix = tpma.prefix_rewards(match, w)[..., -1]  # [B, G] R_{i,L}
  valid = (rollouts.sid_index >= 0).astype(jnp.float32)
  metrics = {
    "loss": parts["total"],
    "pg_loss": parts["tpma"],
    "sft_loss": parts["sft"],
    "reward_mean": mean(rw["item"]),
    "reward_co": mean(rw["co"]),
    "reward_ctr": mean(rw["ctr"]),
    "reward_rel": mean(rw["rel"]),
    "prefix_reward": mean(prefix),
    "hit_rate": mean(rw["hit"]),
    "valid_rate": mean(valid),
    "gate_mean": mean(gates.mean(-1)),
    "adv_abs": mean(jnp.abs(adv).mean(-1)),
    # |log π (teacher forced) − log π_old (the sampler's)|: float noise only.
    "logp_gap": jnp.max(jnp.abs(logp - rollouts.log_probs) * mask),
    "prompts": ex_w.sum(),
  }
  return parts["total"], metrics


class CompiledGRPOStep:
  """jit(step) over (state, trie, tables, batch) -> (state, metrics).

  The state is donated; the trie and reward tables are inputs only.
  """

  def __init__(
    self, ts: TrainState, batch_shardings: Mapping[str, Any], cfg: GRPOConfig
  ):
    graphdef = ts.graphdef
    self._mesh, self._rules = ts.mesh, ts.rules
    rep = sh.replicated(ts.mesh)

    def step(state, trie, tables, batch):
      model, optimizer = nnx.merge(graphdef, state)
      key = jax.random.fold_in(jax.random.key(cfg.seed), batch["position"][0])
      prompts = {k: batch[k] for k in PROMPT_KEYS if k in batch}
      rollouts = jax.lax.stop_gradient(
        sample_lib.sample(
          model,
          prompts,
          trie,
          key,
          num_samples=cfg.num_samples,
          temperature=cfg.temperature,
        )
      )

      def obj(m):
        return objective(m, rollouts, batch, trie, tables, cfg)

      (_, metrics), grads = nnx.value_and_grad(obj, has_aux=True)(model)
      optimizer.update(model, grads)
      metrics["grad_norm"] = optax.global_norm(grads)
      return nnx.state((model, optimizer)), metrics

    self._fn = jax.jit(
      step,
      in_shardings=(ts.shardings, rep, rep, dict(batch_shardings)),
      out_shardings=(ts.shardings, rep),
      donate_argnames=("state",),
    )

  def __call__(self, state, trie, tables, batch):
    with jax.set_mesh(self._mesh), nnx.logical_axis_rules(self._rules):
      return self._fn(state, trie, tables, batch)


def _seconds_since_start(host: dict[str, float], p: step_loop.Progress) -> None:
  host["seconds"] = p.total_seconds


def train_phase(
  ts: TrainState,
  trie: TrieIndex,
  tables: RolloutTables,
  batches: Callable[[int], Iterator[Mapping[str, np.ndarray]]],
  cfg: GRPOConfig,
  ckpt_dir: str | pathlib.Path,
  *,
  meta: Mapping[str, Any] | None = None,
  stop_after: int | None = None,
  log_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> step_loop.LoopResult:
  """Runs the GRPO phase in train/step_loop's resumable, NaN-guarded loop.

  One batch per step; `batches(position)` restarts the stream at a data
  position (its batches carry it in 'position', which seeds the rollouts),
  so a resumed run samples the same rollouts as an uninterrupted one. A
  checkpoint of the other variant is refused (errors.UserError).

  Args:
    ts: the starting state (the policy; fresh optimizer).
    trie: the catalogue trie (rollouts are its SIDs).
    tables: per-SID reward inputs (`RolloutTables`).
    batches: position -> iterator of host batches (module docstring).
    cfg: the phase's settings.
    ckpt_dir: checkpoints of this phase.
    meta: extra JSON meta saved with every checkpoint.
    stop_after: stop after this many steps of this call (forced save).
    log_fn: (step, metrics) every log_every steps.
  """
  trie = jax.device_put(jax.tree.map(jnp.asarray, trie), sh.replicated(ts.mesh))
  tables = jax.device_put(
    jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tables), sh.replicated(ts.mesh)
  )

  def build(ts: TrainState, first: Mapping[str, np.ndarray]) -> step_loop.Steps:
    bsh = state_lib.batch_shardings(first, ts.mesh, ts.rules)
    fn = CompiledGRPOStep(ts, bsh, cfg)
    return step_loop.Steps(
      train=lambda st, batch: fn(st, trie, tables, state_lib.shard_batch(batch, bsh)),
      annotate=_seconds_since_start,
    )

  ckpt = checkpoints.Checkpointer(ckpt_dir, cfg.checkpoint)

  def check_meta(saved: dict[str, Any]) -> None:
    if saved.get("variant", cfg.variant) != cfg.variant:
      raise UserError(
        f"{ckpt_dir}: checkpoint of GRPO variant {saved['variant']!r}, this run "
        f"is {cfg.variant!r}; use another pars directory or delete it"
      )

  return step_loop.run(
    ts,
    build,
    batches,
    step_loop.LoopConfig.of(cfg, stop_after),
    ckpt=ckpt,
    meta={**(meta or {}), "variant": cfg.variant},
    check_meta=check_meta,
    log_fn=log_fn,
  )
