"""Listwise softmax-DPO (S-DPO) with reward-gap weights and a frozen reference.

SPEC §4.3, official-code form (`softmax_dpo_loss`): for one chosen SID i_w
and K rejected SIDs i_l,k of a prompt x, with sequence log-probabilities
summed over the target tokens (SID + EOS),

  Δ_k  = [log π(i_l,k|x) − log π_ref(i_l,k|x)] − [log π(i_w|x) − log π_ref(i_w|x)]
  w_k  = max(max(r_w, 1) − r_l,k, gap_floor)^(−α) + 1     (use_reward_weight)
  reg  = reg_weight · relu(log π_ref(i_w|x) − log π(i_w|x))   (reg_weight > 0)
  L    = −log σ(−log Σ_k exp(w_k · β · (reg + Δ_k)))  [+ sft_weight · (−log π(i_w|x))]

which equals softplus(logsumexp_k z_k), z_k = w_k·β·(reg + Δ_k), i.e.
log(1 + Σ_k exp z_k); that is how it is computed (stable). Absent rejected
slots (all-zero target weights) drop out of the sum. r are the calibrated
item rewards r(q, i) of rewards.py (one per slot, so w is per rejected item;
the official code has one rejected score per example, which is the K = 1 /
equal-scores case). The gap floor is our guard against a non-positive gap
(the official code would produce NaN); see rewards.py.

``ListwiseConfig.kind = "distill"`` swaps the preference term for listwise
distillation of the list's teacher order (our choice; the paper's PARS is
the DPO form above). The batch's ``rewards`` then hold teacher keys t_k (the
reward model's sort key of each slot: R_score + gen_weight · log π_SFT,
phases.PhaseDataConfig.phase1_rejected = "distill"), and with the present
slots P of a prompt,

  q    = softmax_P(t / temperature)                         (the teacher)
  p    = softmax_P(log π(i_k|x))                            (the policy,
         its sequence probabilities renormalised over the list)
  KD   = −Σ_k q_k · log p_k
  reg  = reg_weight · relu(logsumexp_P log π_ref − logsumexp_P log π)
  L    = KD + reg  [+ sft_weight · (−log π(i_0|x))]

so the policy re-orders probability inside the generated list towards the
reward model's order (a ListNet-style target) while the DPO-Positive
analogue keeps the list's total mass from falling below the reference's.

``kind = "match"`` fits the list's log-probabilities to the teacher keys up
to one constant per list (logit matching, with every slot weighted alike
instead of by the teacher's probability as in KD, so the order deep in the
list counts as much as its top), with n = |P|:

  d_k  = log π(i_k|x) − t_k / temperature
  L    = Σ_P (d_k − mean_P d)² / n  + reg  [+ sft_weight · (−log π(i_0|x))]

With t = log R + log π_SFT (reward_model.RScoreConfig.form = "log",
gen_weight 1) and log π under the trie mask (trie_logprobs, the beam
scores' form), the minimum is log π = log π_SFT + log R + c: the
generator's distribution multiplied by the reward model's probability, the
re-rank key of the `+rm` rows, inside each list.

The reference is a separate frozen copy of the model's parameters (an
`nnx.State` with the model's shardings) passed to the jitted step as an
argument that is never updated, under `jax.lax.stop_gradient`, and run
deterministically (no dropout); the policy uses the trainer's dropout key.

Batch contract (host numpy, leading axis B split over the BATCH rule):

  encoder_input_tokens [B, L] int32     the prompt (model.model contract)
  long_seq_features    [B, 9, D] f32    optional
  decoder_target_tokens [B, 1+K, T] int32   slot 0 = chosen, SID + EOS
  decoder_input_tokens  [B, 1+K, T] int32   targets shifted right (BOS 0)
  decoder_loss_weights  [B, 1+K, T] f32     0 rows = absent rejected slot
  rewards              [B, 1+K] f32     r(q, i) of each slot (distill: teacher keys)
  example_weight       [B] f32          0 = padding example
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
from onesearch_jax.model import layers
from onesearch_jax.model import model as model_lib
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train import checkpoints, step_loop
from onesearch_jax.train import state as state_lib
from onesearch_jax.train.optimizers import OptimizerConfig
from onesearch_jax.train.state import TrainState

EOS_ID = 1


LOSS_KINDS = ("dpo", "distill", "match")


@dataclasses.dataclass(frozen=True)
class ListwiseConfig:
  """Loss options (paper/code defaults where given)."""

  beta: float = 1.0  # DPO temperature (not given for OneSearch; S-DPO uses 1)
  alpha: float = 1.5  # reward-gap exponent (official default)
  use_reward_weight: bool = True  # enable_s_dpo_rw_weight
  gap_floor: float = 0.1  # lower clip of the reward gap (our NaN guard)
  reg_weight: float = 0.0  # chosen regulariser weight; 0 = off
  sft_weight: float = 0.0  # optional SFT term on the chosen sequence
  average_log_prob: bool = False  # sum (S-DPO) or mean (SimPO/CPO) over tokens
  # "dpo" (S-DPO, the paper's) or "distill" (listwise distillation of the
  # teacher keys in `rewards`; module docstring)
  kind: str = "dpo"
  temperature: float = 1.0  # distill / match: the teacher keys are divided by it
  # log π of a SID under the decoding's trie mask (each level's softmax over
  # the children of the SID's prefix: the distribution the beam search ranks
  # by, and its scores' form) instead of each level's whole range; the EOS
  # token, which decoding appends, is not scored. Needs the catalogue trie
  # (train_phase(trie=...)).
  trie_logprobs: bool = False

  def __post_init__(self):
    if self.kind not in LOSS_KINDS:
      raise ValueError(
        f"ListwiseConfig.kind must be one of {LOSS_KINDS}: {self.kind!r}"
      )
    if self.temperature <= 0:
      raise ValueError(f"ListwiseConfig.temperature must be > 0: {self.temperature}")
    if self.beta <= 0 or self.alpha < 0 or self.gap_floor <= 0:
      raise ValueError(
        f"ListwiseConfig needs beta > 0, alpha >= 0, gap_floor > 0: {self}"
      )
    if self.reg_weight < 0 or self.sft_weight < 0:
      raise ValueError("reg_weight and sft_weight must be >= 0")


def gap_weights(rewards: jax.Array, cfg: ListwiseConfig) -> jax.Array:
  """[B, 1+K] slot rewards -> [B, K] weights w_k (ones when disabled)."""
  chosen, rejected = rewards[:, :1], rewards[:, 1:]
  if not cfg.use_reward_weight:
    return jnp.ones_like(rejected)
  gap = jnp.maximum(jnp.maximum(chosen, 1.0) - rejected, cfg.gap_floor)
  return gap ** (-cfg.alpha) + 1.0


def softmax_dpo_loss(
  policy_logps: jax.Array,
  reference_logps: jax.Array,
  rewards: jax.Array,
  slot_mask: jax.Array,
  cfg: ListwiseConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-example listwise loss.

  Args:
    policy_logps: [B, 1+K] log π of each slot (slot 0 = chosen).
    reference_logps: [B, 1+K] log π_ref (treated as constants).
    rewards: [B, 1+K] r(q, i) per slot.
    slot_mask: [B, 1+K] bool, False = absent rejected slot.
    cfg: loss options.

  Returns:
    (loss [B], parts: 'dpo' [B], 'sft' [B], 'chosen_reward' [B] = β·(log π −
    log π_ref) of the chosen, 'rejected_reward' [B, K], 'accuracy' [B] =
    chosen implicit reward above every present rejected one).
  """
  reference_logps = jax.lax.stop_gradient(reference_logps)
  ratios = policy_logps - reference_logps  # [B, 1+K]
  chosen, rejected = ratios[:, :1], ratios[:, 1:]
  delta = rejected - chosen  # [B, K]
  reg = 0.0
  if cfg.reg_weight > 0:
    reg = cfg.reg_weight * jax.nn.relu(reference_logps[:, :1] - policy_logps[:, :1])
  w = jax.lax.stop_gradient(gap_weights(rewards, cfg))
  z = w * cfg.beta * (reg + delta)
  present = slot_mask[:, 1:]
  any_present = present.any(-1)
  # A row with no rejected slot gets one dummy finite entry (masked out
  # below) so neither the value nor the gradient becomes NaN.
  keep = present | (~any_present[:, None] & (jnp.arange(z.shape[1]) == 0))
  lse = jax.nn.logsumexp(jnp.where(keep, z, -jnp.inf), axis=-1)
  dpo = jnp.where(any_present, jax.nn.softplus(lse), 0.0)
  sft = -policy_logps[:, 0]
  loss = dpo + cfg.sft_weight * sft if cfg.sft_weight > 0 else dpo
  chosen_reward = cfg.beta * chosen[:, 0]
  rejected_reward = cfg.beta * rejected
  beats = jnp.where(present, chosen_reward[:, None] > rejected_reward, True)
  return loss, {
    "dpo": dpo,
    "sft": sft,
    "chosen_reward": jax.lax.stop_gradient(chosen_reward),
    "rejected_reward": jax.lax.stop_gradient(rejected_reward),
    "accuracy": beats.all(-1).astype(jnp.float32),
  }


def listwise_distill_loss(
  policy_logps: jax.Array,
  reference_logps: jax.Array,
  keys: jax.Array,
  slot_mask: jax.Array,
  cfg: ListwiseConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-example listwise distillation (module docstring, kind "distill").

  Args:
    policy_logps: [B, 1+K] log π of each slot.
    reference_logps: [B, 1+K] log π_ref (treated as constants).
    keys: [B, 1+K] teacher keys (higher = better; finite where present).
    slot_mask: [B, 1+K] bool, False = absent slot.
    cfg: loss options (temperature, reg_weight, sft_weight, beta for the
      diagnostics).

  Returns:
    (loss [B], parts as softmax_dpo_loss's; 'dpo' holds the KD term and
    'accuracy' is 1 where the policy's most likely slot is the teacher's.)
  """
  reference_logps = jax.lax.stop_gradient(reference_logps)
  keys = jax.lax.stop_gradient(keys)
  present = slot_mask & jnp.isfinite(keys)
  # A large finite floor (not -inf) keeps every value and gradient finite
  # for absent slots and rows without a present slot.
  neg = jnp.full_like(policy_logps, -1e30)
  q = jax.nn.softmax(jnp.where(present, keys / cfg.temperature, neg), axis=-1)
  log_p = jax.nn.log_softmax(jnp.where(present, policy_logps, neg), axis=-1)
  kd = -jnp.where(present, q * log_p, 0.0).sum(-1)
  return _list_loss(kd, policy_logps, reference_logps, keys, present, cfg)


def _list_loss(term, policy_logps, reference_logps, keys, present, cfg):
  """A list loss's per-example term [B] (0 for rows with < 2 present slots)
  plus the list-mass regulariser and the SFT term, and the parts
  (`listwise_distill_loss`'s returns)."""
  several = present.sum(-1) > 1
  neg = jnp.full_like(policy_logps, -1e30)
  term = jnp.where(several, term, 0.0)
  if cfg.reg_weight > 0:
    lse_ref = jax.nn.logsumexp(jnp.where(present, reference_logps, neg), axis=-1)
    lse_pol = jax.nn.logsumexp(jnp.where(present, policy_logps, neg), axis=-1)
    term = term + jnp.where(
      several, cfg.reg_weight * jax.nn.relu(lse_ref - lse_pol), 0.0
    )
  sft = -policy_logps[:, 0]
  loss = term + cfg.sft_weight * sft if cfg.sft_weight > 0 else term
  ratios = policy_logps - reference_logps
  top_teacher = jnp.argmax(jnp.where(present, keys, neg), axis=-1)
  top_policy = jnp.argmax(jnp.where(present, policy_logps, neg), axis=-1)
  return loss, {
    "dpo": term,
    "sft": sft,
    "chosen_reward": jax.lax.stop_gradient(cfg.beta * ratios[:, 0]),
    "rejected_reward": jax.lax.stop_gradient(cfg.beta * ratios[:, 1:]),
    "accuracy": (top_teacher == top_policy).astype(jnp.float32),
  }


def listwise_match_loss(
  policy_logps: jax.Array,
  reference_logps: jax.Array,
  keys: jax.Array,
  slot_mask: jax.Array,
  cfg: ListwiseConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-example logit matching to the teacher keys (module docstring, kind
  "match"); arguments and returns as `listwise_distill_loss`."""
  reference_logps = jax.lax.stop_gradient(reference_logps)
  keys = jax.lax.stop_gradient(keys)
  present = slot_mask & jnp.isfinite(keys)
  n = present.sum(-1)
  d = jnp.where(
    present, policy_logps - jnp.where(present, keys, 0.0) / cfg.temperature, 0.0
  )
  centred = jnp.where(
    present, d - d.sum(-1, keepdims=True) / jnp.maximum(n, 1)[:, None], 0.0
  )
  match = (centred**2).sum(-1) / jnp.maximum(n, 1)
  return _list_loss(match, policy_logps, reference_logps, keys, present, cfg)


def sequence_logprobs(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  key: jax.Array | None = None,
  average: bool = False,
  trie: TrieIndex | None = None,
) -> jax.Array:
  """Teacher-forced log π(target | prompt) of every slot.

  With `trie` the SID tokens are scored under the trie mask
  (``decoding.sample.constrained_log_probs``: the beam search's policy, EOS
  not scored) instead of the level-restricted softmax below.

  The encoder runs once per prompt; its output is repeated for the 1+K
  targets. With `restrict_sid_levels` the softmax is over each level's range
  (as in SFT and constrained decoding); a target outside its range is let
  through (as model.metric_sums does) so the log-prob stays finite.

  Args:
    model: the encoder-decoder.
    batch: the listwise batch contract (module docstring).
    key: dropout key or None.
    average: mean instead of sum over weighted tokens.
    trie: the catalogue trie, or None.

  Returns:
    [B, 1+K] float32.
  """
  targets = jnp.asarray(batch["decoder_target_tokens"])
  if trie is not None:
    lp = sample_lib.constrained_log_probs(
      model, batch, trie, targets[..., : trie.depth], key=key
    )
    # padded (absent) slots hold no catalogue SID: 0 instead of -inf
    present = jnp.asarray(batch["decoder_loss_weights"]).sum(-1) > 0
    total = jnp.where(present, lp.sum(-1), 0.0)
    return total / trie.depth if average else total
  b, k1, t = targets.shape
  weights = jnp.asarray(batch["decoder_loss_weights"]).astype(jnp.float32)
  enc_out, enc_mask = model.encode(batch, layers.fold(key, 0))
  enc_out = jnp.repeat(enc_out, k1, axis=0)
  enc_mask = jnp.repeat(enc_mask, k1, axis=0)
  flat_t = targets.reshape(b * k1, t)
  dec_in = jnp.asarray(batch["decoder_input_tokens"]).reshape(b * k1, t)
  logits = model.decode(dec_in, enc_out, enc_mask, layers.fold(key, 1))
  allowed = model_lib.allowed_outputs(model, flat_t)
  if allowed is not None:
    allowed = allowed | jax.nn.one_hot(flat_t, allowed.shape[-1], dtype=bool)
    logits = jnp.where(allowed, logits, layers.NEG_INF)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  tok = jnp.take_along_axis(logp, flat_t[..., None], -1)[..., 0].reshape(b, k1, t)
  total = (tok * weights).sum(-1)
  if average:
    return total / jnp.maximum(weights.sum(-1), 1.0)
  return total


def objective(
  model: EncoderDecoder,
  ref_model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  cfg: ListwiseConfig,
  key: jax.Array | None = None,
  trie: TrieIndex | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean listwise loss over weighted examples, and scalar metrics.

  The reference's log-probs go through stop_gradient: its gradient is zero.
  `trie` (needed iff cfg.trie_logprobs) scores the SIDs under the trie mask.
  """
  if cfg.trie_logprobs != (trie is not None):
    raise ValueError("listwise objective: a trie is needed iff cfg.trie_logprobs")
  ref_lp = jax.lax.stop_gradient(
    sequence_logprobs(ref_model, batch, None, cfg.average_log_prob, trie)
  )
  pol_lp = sequence_logprobs(model, batch, key, cfg.average_log_prob, trie)
  weights = jnp.asarray(batch["decoder_loss_weights"])
  slot_mask = weights.sum(-1) > 0
  ex_w = jnp.asarray(batch["example_weight"]).astype(jnp.float32)
  loss_fn = {
    "dpo": softmax_dpo_loss,
    "distill": listwise_distill_loss,
    "match": listwise_match_loss,
  }[cfg.kind]
  loss, parts = loss_fn(
    pol_lp, ref_lp, jnp.asarray(batch["rewards"]).astype(jnp.float32), slot_mask, cfg
  )
  denom = jnp.maximum(ex_w.sum(), 1.0)

  def mean(x):
    return (x * ex_w).sum() / denom

  rej = parts["rejected_reward"]
  present = slot_mask[:, 1:]
  margin = jnp.where(present, parts["chosen_reward"][:, None] - rej, 0.0).sum(-1) / (
    jnp.maximum(present.sum(-1), 1)
  )
  metrics = {
    "loss": mean(loss),
    "dpo_loss": mean(parts["dpo"]),
    "sft_loss": mean(parts["sft"]),
    "reward_accuracy": mean(parts["accuracy"]),
    "reward_margin": mean(margin),
    "chosen_logp": mean(pol_lp[:, 0]),
    "rejected_logp": mean(
      jnp.where(present, pol_lp[:, 1:], 0.0).sum(-1) / jnp.maximum(present.sum(-1), 1)
    ),
    "examples": ex_w.sum(),
  }
  return metrics["loss"], metrics


# ---------------------------------------------------------------- the trainer


@dataclasses.dataclass(frozen=True)
class ListwiseTrainConfig:
  """One PARS phase; the defaults are a main-job phase (``configs.pars_config``
  sets log_every, total_steps and save_every_steps from num_steps)."""

  num_steps: int = 100
  log_every: int = 10
  seed: int = 0
  # DPO-Positive: the chosen log-probability may not fall below the
  # reference's without a penalty (docs/PARS.md).
  loss: ListwiseConfig = ListwiseConfig(reg_weight=5.0)
  optimizer: OptimizerConfig = OptimizerConfig(
    learning_rate=1e-4, warmup_steps=5, total_steps=100, decay="cosine"
  )
  checkpoint: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(
    save_every_steps=100, keep_last=1
  )

  def __post_init__(self):
    if self.num_steps <= 0 or self.log_every <= 0:
      raise ValueError("num_steps and log_every must be > 0")


def reference_from(ts: TrainState) -> tuple[Any, nnx.State, Any]:
  """A frozen copy of ts's model parameters.

  Returns:
    (model graphdef, reference state: fresh device copies with the model's
    shardings, those shardings).
  """
  model, _ = ts.merge()
  graphdef, _ = nnx.split(model)
  ref = jax.tree.map(lambda x: x.copy(), ts.state[0])
  return graphdef, ref, ts.shardings[0]


def listwise_batch_shardings(
  batch: Mapping[str, Any], mesh: jax.sharding.Mesh, rules: sh.Rules
):
  """Leading (example) axis over the BATCH rule, as the trainer's batches."""
  return state_lib.batch_shardings(batch, mesh, rules)


class CompiledListwiseStep:
  """jit(step) over (state, reference, batch) -> (state, metrics).

  The train state is donated; the reference is an input only (never
  returned), so it stays bit-identical across steps.
  """

  def __init__(
    self,
    ts: TrainState,
    ref_graphdef,
    ref_shardings,
    batch_shardings: Mapping[str, Any],
    cfg: ListwiseConfig,
    seed: int = 0,
    trie: TrieIndex | None = None,
  ):
    graphdef = ts.graphdef
    self._mesh, self._rules = ts.mesh, ts.rules
    self._trie = trie

    def step(state, ref_state, trie, batch):
      model, optimizer = nnx.merge(graphdef, state)
      ref_model = nnx.merge(ref_graphdef, jax.lax.stop_gradient(ref_state))
      key = jax.random.fold_in(jax.random.key(seed), optimizer.step[...])

      def obj(m):
        return objective(m, ref_model, batch, cfg, key, trie)

      (_, metrics), grads = nnx.value_and_grad(obj, has_aux=True)(model)
      optimizer.update(model, grads)
      metrics["grad_norm"] = optax.global_norm(grads)
      return nnx.state((model, optimizer)), metrics

    self._fn = jax.jit(
      step,
      in_shardings=(
        ts.shardings,
        ref_shardings,
        sh.replicated(ts.mesh),
        dict(batch_shardings),
      ),
      out_shardings=(ts.shardings, sh.replicated(ts.mesh)),
      donate_argnames=("state",),
    )

  def __call__(self, state, ref_state, batch):
    with jax.set_mesh(self._mesh), nnx.logical_axis_rules(self._rules):
      return self._fn(state, ref_state, self._trie, batch)


PhaseResult = step_loop.LoopResult  # state, history, resumed_from, steps_run, ...


def _seconds_since_start(host: dict[str, float], p: step_loop.Progress) -> None:
  """A phase's log record carries 'seconds' since the call's first step."""
  host["seconds"] = p.total_seconds


def train_phase(
  ts: TrainState,
  ref: tuple[Any, nnx.State, Any],
  batches: Callable[[int], Iterator[Mapping[str, np.ndarray]]],
  cfg: ListwiseTrainConfig,
  ckpt_dir: str | pathlib.Path,
  *,
  meta: Mapping[str, Any] | None = None,
  stop_after: int | None = None,
  log_fn: Callable[[int, dict[str, float]], None] | None = None,
  trie: TrieIndex | None = None,
) -> PhaseResult:
  """Runs one listwise phase, resuming from ckpt_dir's latest checkpoint.

  The loop is train/step_loop's (as SFT's): one batch per step, the data
  position after step s is s and is stored in the checkpoint meta;
  `batches(position)` must restart the stream there. A NaN/Inf loss or
  gradient norm raises step_loop.NonFiniteMetricsError before that state is
  checkpointed. A log record is the step's metrics plus 'step' and
  'seconds' (since this call's first step).

  Args:
    ts: the starting train state (the policy; fresh optimizer).
    ref: from `reference_from` (graphdef, frozen state, shardings).
    batches: position -> iterator of host listwise batches.
    cfg: steps, loss, optimizer, checkpoint cadence.
    ckpt_dir: checkpoints of this phase.
    meta: extra JSON meta saved with every checkpoint (e.g. hashes).
    stop_after: stop after this many steps of this call (forced save).
    log_fn: (step, metrics) every log_every steps.
    trie: the catalogue trie (needed iff cfg.loss.trie_logprobs).
  """
  ref_graphdef, ref_state, ref_sh = ref

  def build(ts: TrainState, first: Mapping[str, np.ndarray]) -> step_loop.Steps:
    bsh = listwise_batch_shardings(first, ts.mesh, ts.rules)
    fn = CompiledListwiseStep(
      ts, ref_graphdef, ref_sh, bsh, cfg.loss, cfg.seed, trie=trie
    )
    return step_loop.Steps(
      train=lambda st, batch: fn(st, ref_state, state_lib.shard_batch(batch, bsh)),
      annotate=_seconds_since_start,
    )

  return step_loop.run(
    ts,
    build,
    batches,
    step_loop.LoopConfig.of(cfg, stop_after),
    ckpt=checkpoints.Checkpointer(ckpt_dir, cfg.checkpoint),
    meta=meta,
    log_fn=log_fn,
  )


# ---------------------------------------------------------------- batches


def make_batch(
  prompts: Mapping[str, np.ndarray],
  chosen: np.ndarray,
  rejected: np.ndarray,
  rewards: np.ndarray,
  rejected_mask: np.ndarray | None = None,
  example_weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """Host listwise batch from prompts and SID token rows.

  Args:
    prompts: 'encoder_input_tokens' [B, L] (+ optional 'long_seq_features').
    chosen: [B, S] SID token ids of the chosen item.
    rejected: [B, K, S] SID token ids of the rejected items.
    rewards: [B, 1+K] r(q, i) per slot.
    rejected_mask: [B, K] bool, False = absent slot (default all present).
    example_weight: [B] (default ones).

  Returns:
    The batch contract of the module docstring (targets = SID + EOS).
  """
  chosen = np.asarray(chosen, np.int32)
  rejected = np.asarray(rejected, np.int32)
  b, k, s = rejected.shape
  if chosen.shape != (b, s):
    raise ValueError(f"make_batch: chosen {chosen.shape} vs rejected {rejected.shape}")
  if np.asarray(rewards).shape != (b, k + 1):
    raise ValueError(f"make_batch: rewards {np.asarray(rewards).shape} != {(b, k + 1)}")
  sids = np.concatenate([chosen[:, None], rejected], axis=1)  # [B, 1+K, S]
  targets = np.concatenate([sids, np.full((b, k + 1, 1), EOS_ID, np.int32)], -1)
  dec_in = np.concatenate([np.zeros((b, k + 1, 1), np.int32), targets[..., :-1]], -1)
  mask = np.ones((b, k), bool) if rejected_mask is None else np.asarray(rejected_mask)
  slot = np.concatenate([np.ones((b, 1), bool), mask], axis=1)
  weights = np.broadcast_to(slot[..., None], targets.shape).astype(np.float32)
  out = {k_: np.asarray(v) for k_, v in prompts.items()}
  if out["encoder_input_tokens"].shape[0] != b:
    raise ValueError("make_batch: prompts and SIDs disagree on B")
  out.update(
    decoder_target_tokens=targets,
    decoder_input_tokens=dec_in,
    decoder_loss_weights=weights,
    rewards=np.asarray(rewards, np.float32),
    example_weight=(
      np.ones(b, np.float32)
      if example_weight is None
      else np.asarray(example_weight, np.float32)
    ),
  )
  return out
