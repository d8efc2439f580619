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
   + sft_weight · CE of the prompt's first ground-truth SID (+ EOS)
   [+ kl_coef · k3-KL to the reference]. π_old is the sampling policy, i.e.
   the same parameters: log π_old = stop_gradient(log π), so the ratio is 1
   in value and carries the gradient (one update per batch of rollouts, as
   the official trainer's default).

Two switches, both off by default (then the step is exactly the above):
  * ``kl_coef`` = β > 0: the per-token k3 estimator of KL(π_θ ‖ π_ref),
    exp(ref − log π) − (ref − log π) − 1, on the constrained log-probs of
    the sampled SID tokens, masked-mean'd like the policy term and added
    with weight β (``tpma.k3_kl``; SPEC §6.5's "+ β·k3-KL to ref"). π_ref
    is the policy the phase starts from (the SFT model), frozen
    (``listwise.reference_from``); its log-probs use the same temperature.
  * ``updates_per_batch`` = K > 1: K optimizer updates on each batch of
    rollouts. Update 1 is the one above (ratio 1); updates 2..K keep the
    rollouts, rewards, advantages, gates and reference log-probs, and
    use log π_old = update 1's teacher-forced log π at the sampling
    parameters (constant), so r = exp(log π_θ − log π_old) ≠ 1, unclipped
    (SPEC §6.5, as the official objective). The optimizer counts updates
    (its schedule and Adam's bias correction); the loop counts batches.

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
    kl_coef: β of the k3 KL to the frozen reference policy (the phase's
      starting model, the SFT model); 0 = off (the official default).
    updates_per_batch: optimizer updates per batch of rollouts (K); 1 =
      one update at ratio 1 (the official default).
    num_steps, log_every, seed, optimizer, checkpoint: as a PARS phase (the
      learning rate is the PARS phases' 1e-4, constant after 5 warmup steps).
      num_steps counts batches of rollouts; the optimizer's schedule counts
      updates (num_steps × updates_per_batch).
  """

  variant: str = "tpma"
  num_samples: int = 8
  temperature: float = 1.0
  batch_size: int = 8
  max_targets: int = 4
  max_judged: int = 16
  sft_weight: float = tpma.SFT_WEIGHT
  w_item: float = 0.0
  kl_coef: float = 0.0
  updates_per_batch: int = 1
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
    if self.sft_weight < 0 or self.w_item < 0 or self.kl_coef < 0:
      raise ValueError("GRPOConfig sft_weight, w_item and kl_coef must be >= 0")
    if self.updates_per_batch < 1:
      raise ValueError(
        f"GRPOConfig.updates_per_batch must be >= 1: {self.updates_per_batch}"
      )
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
  *,
  logp_old: jax.Array | None = None,
  logp_ref: jax.Array | None = None,
  with_logp: bool = False,
) -> tuple[jax.Array, Any]:
  """The GRPO / TPMA loss of sampled rollouts, and scalar metrics.

  Args:
    model: the policy (differentiated).
    rollouts: G samples per prompt (constants).
    batch: the batch contract.
    trie: the catalogue trie.
    tables: per-SID reward inputs.
    cfg: the phase's settings.
    logp_old: [B, G, S] log π_old of the rollouts (constants); None = the
      model is the sampling policy: stop_gradient(log π) (ratio 1). Given,
      the metrics add "ratio_mean" (the masked mean ratio).
    logp_ref: [B, G, S] reference log-probs; with cfg.kl_coef > 0 the
      k3 term is added and the metrics add "kl" (its masked mean).
    with_logp: the aux is (metrics, log π [B, G, S]) instead of metrics.

  Returns:
    (loss, metrics) or (loss, (metrics, log π)).
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
  old = jax.lax.stop_gradient(logp) if logp_old is None else logp_old
  kl_on = bool(cfg.kl_coef)
  if kl_on and logp_ref is None:
    raise ValueError("grpo.objective: kl_coef > 0 needs logp_ref")
  pg = tpma.tpma_objective(
    logp, old, adv, gates, mask,
    **(dict(logp_ref=logp_ref, beta=cfg.kl_coef) if kl_on else {}),
  )  # fmt: skip
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
  if kl_on:
    metrics["kl"] = tpma.masked_mean(tpma.k3_kl(logp, logp_ref), mask)
  if logp_old is not None:
    metrics["ratio_mean"] = tpma.masked_mean(tpma.importance_ratio(logp, old), mask)
  if with_logp:
    return parts["total"], (metrics, logp)
  return parts["total"], metrics


Reference = tuple[Any, nnx.State, Any]  # listwise.reference_from's


class CompiledGRPOStep:
  """jit(step) over (state, trie, tables, batch) -> (state, metrics).

  The state is donated; the trie, reward tables and the reference (with
  cfg.kl_coef > 0) are inputs only, so the reference stays bit-identical.
  With cfg.updates_per_batch = K > 1 the step makes K updates (module
  docstring); its metrics are update 1's (at the sampling parameters) plus
  "loss_last", "pg_loss_last" and "ratio_mean_last" of update K, and
  "grad_norm" is the largest of the K gradient norms (a non-finite one
  stops the run).
  """

  def __init__(
    self,
    ts: TrainState,
    batch_shardings: Mapping[str, Any],
    cfg: GRPOConfig,
    reference: Reference | None = None,
  ):
    if bool(cfg.kl_coef) != (reference is not None):
      raise ValueError("CompiledGRPOStep: a reference is needed iff kl_coef > 0")
    graphdef = ts.graphdef
    self._mesh, self._rules = ts.mesh, ts.rules
    rep = sh.replicated(ts.mesh)
    ref_graphdef, self._ref_state, ref_sh = reference or (None, {}, {})

    def step(state, ref_state, trie, tables, batch):
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
      logp_ref = None
      if cfg.kl_coef:
        ref_model = nnx.merge(ref_graphdef, jax.lax.stop_gradient(ref_state))
        logp_ref = jax.lax.stop_gradient(
          sample_lib.constrained_log_probs(
            ref_model, prompts, trie, rollouts.tokens, temperature=cfg.temperature
          )
        )

      def obj(m, logp_old=None, with_logp=False):
        return objective(
          m, rollouts, batch, trie, tables, cfg,
          logp_old=logp_old, logp_ref=logp_ref, with_logp=with_logp,
        )  # fmt: skip

      if cfg.updates_per_batch == 1:
        (_, metrics), grads = nnx.value_and_grad(obj, has_aux=True)(model)
        optimizer.update(model, grads)
        metrics["grad_norm"] = optax.global_norm(grads)
        return nnx.state((model, optimizer)), metrics
      # Update 1 at the sampling parameters (ratio 1); its log π is π_old.
      (_, (metrics, logp)), grads = nnx.value_and_grad(
        lambda m: obj(m, with_logp=True), has_aux=True
      )(model)
      optimizer.update(model, grads)
      logp_old = jax.lax.stop_gradient(logp)
      pair_def, pair = nnx.split((model, optimizer))

      def later(pair, _):
        m, o = nnx.merge(pair_def, pair)
        (_, met), g = nnx.value_and_grad(
          lambda m: obj(m, logp_old=logp_old), has_aux=True
        )(m)
        o.update(m, g)
        out = {k: met[k] for k in ("loss", "pg_loss", "ratio_mean")}
        return nnx.state((m, o)), dict(out, grad_norm=optax.global_norm(g))

      pair, rest = jax.lax.scan(later, pair, None, length=cfg.updates_per_batch - 1)
      metrics["grad_norm"] = jnp.maximum(
        optax.global_norm(grads), jnp.max(rest["grad_norm"])
      )
      for k in ("loss", "pg_loss", "ratio_mean"):
        metrics[f"{k}_last"] = rest[k][-1]
      return pair, metrics

    self._fn = jax.jit(
      step,
      in_shardings=(ts.shardings, ref_sh, rep, rep, dict(batch_shardings)),
      out_shardings=(ts.shardings, rep),
      donate_argnames=("state",),
    )

  def __call__(self, state, trie, tables, batch):
    with jax.set_mesh(self._mesh), nnx.logical_axis_rules(self._rules):
      return self._fn(state, self._ref_state, trie, tables, batch)


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

  With cfg.kl_coef > 0 the reference is a frozen copy of `ts`'s parameters,
  taken before any checkpoint is restored: it is not checkpointed, and a
  rerun passes the same starting state (the pars stage reloads the SFT
  model), so a resumed run has the same reference. Its params hash is saved
  in the checkpoint meta ("reference_hash") and a resume against another
  reference is refused (errors.UserError).

  Args:
    ts: the starting state (the policy; fresh optimizer; the reference).
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

  ts = dataclasses.replace(ts, updates_per_step=cfg.updates_per_batch)
  reference, extra_meta = None, {}
  if cfg.kl_coef:
    reference = listwise.reference_from(ts)  # before the resume: the SFT model
    extra_meta["reference_hash"] = state_lib.params_hash(ts)
  if cfg.updates_per_batch > 1:
    extra_meta["updates_per_batch"] = cfg.updates_per_batch

  def build(ts: TrainState, first: Mapping[str, np.ndarray]) -> step_loop.Steps:
    bsh = state_lib.batch_shardings(first, ts.mesh, ts.rules)
    fn = CompiledGRPOStep(ts, bsh, cfg, reference)
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
    # Absent from a checkpoint written with the switch off.
    for k, off in (("reference_hash", None), ("updates_per_batch", 1)):
      want = extra_meta.get(k, off)
      if saved.get(k, off) != want:
        raise UserError(
          f"{ckpt_dir}: checkpoint with {k} {saved.get(k, off)!r}, this run has "
          f"{want!r} (another reference model or GRPO setting); use another "
          "pars directory or delete it"
        )

  return step_loop.run(
    ts,
    build,
    batches,
    step_loop.LoopConfig.of(cfg, stop_after),
    ckpt=ckpt,
    meta={**(meta or {}), "variant": cfg.variant, **extra_meta},
    check_meta=check_meta,
    log_fn=log_fn,
  )
