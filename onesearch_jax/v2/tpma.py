"""TPMA-GRPO: token-position marginal advantages (SPEC §6.5), pure functions.

For each prompt, G rollouts o_i (SIDs of L tokens) are compared with the
ground-truth set T (clicked ∪ ordered SIDs), position by position (l is
1-based in the formulas, 0-based in the arrays):

  match[i,t,l] = 1[o_{i,l} == t_l]
  w_l          = 2 if l ∈ {1, 2};  1 if 3 ≤ l < L;  0 if l = L  (L=5: 2,2,1,1,0)
  R_{i,l}      = max_t Σ_{k≤l} w_k·match[i,t,k]        (weighted prefix reward)
  ΔR_{i,l}     = R_{i,l} − R_{i,l−1},  R_{i,0} = 0
  Â_{i,l}      = (ΔR_{i,l} − mean_j ΔR_{j,l}) / (std_j ΔR_{j,l} + 1e-8)
  Â^final      = Â + w_item·z-norm_i(R_item)           (w_item default 0)
  g_{i,1} = 1;  g_{i,l} = clamp(max_t Σ_{k<l} match[i,t,k] / (l−1), 0, 1)
  L_TPMA       = −mean_{i,l} g_{i,l}·r_{i,l}·Â^final_{i,l},
                 r = exp(logπ − logπ_old)  (no clipping)
  total        = L_TPMA + 0.1·CE_SFT(first ground-truth SID) [+ β·k3-KL]

The weighted prefix reward R and the unweighted gate numerator each take
their own max over t (they may pick different ground truths), the match
is position-wise (not conditional on the prefix), and the last position
gets zero positional reward, all as in the official ``rlhf/tpma.py``.

Where SPEC's formula leaves it open, the official code decides (choices):
  * std_j is the unbiased (n − 1) standard deviation (``torch.std``), so a
    group needs G ≥ 2 rollouts (checked).
  * The objective is the mean over the valid (mask) tokens of every rollout
    of every prompt (the trainer's masked mean); with a full mask this is
    SPEC's −(1/(G·L))·Σ, averaged over the prompts.
  * log(π/π_old) is clamped to [−20, 20] before exp, as in the trainer.
  * The optional KL to the reference is the per-token k3 estimator
    exp(ref − cur) − (ref − cur) − 1, weight β (0 by default).
  * A prompt with no ground truth has ΔR = 0 (so Â = 0) and gates (1, 0, ...).
  * A group whose G values are all equal normalises to exactly 0 (the
    formula's value; the float rounding of its mean, e.g. of eight equal
    rewards 0.3, divided by std + 1e-8 = 1e-8, would be O(1) noise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

STD_EPS = 1e-8
LOG_RATIO_CLAMP = 20.0
SFT_WEIGHT = 0.1


def position_weights(length: int) -> np.ndarray:
  """w_l for l = 1..L: 2 for l < 3, 1 for 3 ≤ l < L, 0 for l = L ≥ 3.

  The "l < 3" test comes first, as in the official code (L = 2: [2, 2]).

  Returns:
    [L] float32 (L = 5: [2, 2, 1, 1, 0]).
  """
  if length < 1:
    raise ValueError(f"position_weights: length must be >= 1, got {length}")
  ell = np.arange(1, length + 1)
  w = np.where(ell < 3, 2.0, np.where(ell < length, 1.0, 0.0))
  return w.astype(np.float32)


def position_match(
  completions: jax.Array, targets: jax.Array, target_mask: jax.Array
) -> jax.Array:
  """match[b,i,t,l] = 1[o_{b,i,l} == t_{b,t,l}] for the real ground truths.

  Args:
    completions: [B, G, L] int SID tokens of the G rollouts per prompt.
    targets: [B, T, L] int ground-truth SID tokens (padded to T per prompt).
    target_mask: [B, T] bool, False on padding ground truths (never match).

  Returns:
    [B, G, T, L] float32.
  """
  eq = completions[:, :, None, :] == targets[:, None, :, :]
  return (eq & target_mask[:, None, :, None]).astype(jnp.float32)


def prefix_rewards(match: jax.Array, weights: jax.Array) -> jax.Array:
  """R_{i,l} = max_t Σ_{k≤l} w_k·match[i,t,k].

  Args:
    match: [B, G, T, L] from ``position_match``.
    weights: [L] position weights.

  Returns:
    [B, G, L] float32 (0 where T has no real ground truth).
  """
  return jnp.max(jnp.cumsum(match * weights, axis=-1), axis=2, initial=0.0)


def marginal_rewards(prefix: jax.Array) -> jax.Array:
  """ΔR_{i,l} = R_{i,l} − R_{i,l−1} with R_{i,0} = 0; [..., L] -> [..., L]."""
  return jnp.diff(prefix, axis=-1, prepend=0.0)


def prefix_gates(match: jax.Array) -> jax.Array:
  """g_{i,1} = 1, g_{i,l} = clamp(max_t Σ_{k<l} match[i,t,k] / (l − 1), 0, 1).

  Args:
    match: [B, G, T, L].

  Returns:
    [B, G, L] float32 in [0, 1].
  """
  counts = jnp.max(jnp.cumsum(match, axis=-1), axis=2, initial=0.0)  # [B, G, L]
  length = match.shape[-1]
  before = counts[..., :-1] / jnp.arange(1, length, dtype=jnp.float32)
  first = jnp.ones(counts.shape[:-1] + (1,), jnp.float32)
  return jnp.concatenate([first, jnp.clip(before, 0.0, 1.0)], axis=-1)


def group_normalise(x: jax.Array, axis: int = 1) -> jax.Array:
  """(x − mean) / (std + 1e-8) over the G rollouts of a prompt.

  Args:
    x: [B, G, ...] values per rollout.
    axis: the group axis (G ≥ 2; std is the unbiased one).

  Returns:
    Same shape, float32.
  """
  if x.shape[axis] < 2:
    raise ValueError(
      f"group_normalise: needs >= 2 rollouts per prompt, got {x.shape[axis]}"
    )
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=axis, keepdims=True)
  std = jnp.std(x, axis=axis, keepdims=True, ddof=1)
  # A group of equal values is exactly 0 (the formula's value): the float
  # rounding of its mean would otherwise be divided by 1e-8.
  flat = jnp.max(x, axis=axis, keepdims=True) == jnp.min(x, axis=axis, keepdims=True)
  return jnp.where(flat, 0.0, (x - mean) / (std + STD_EPS))


def tpma_advantages(
  completions: jax.Array,
  targets: jax.Array,
  target_mask: jax.Array,
  *,
  item_rewards: jax.Array | None = None,
  w_item: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Per-position group-normalised advantages Â^final and prefix gates.

  Args:
    completions: [B, G, L] rollout SID tokens.
    targets: [B, T, L] ground-truth SID tokens (clicked ∪ ordered).
    target_mask: [B, T] bool.
    item_rewards: optional [B, G] R_item per rollout.
    w_item: weight of z-norm(R_item) added to every position (default 0,
      as the official trainer; then ``item_rewards`` is unused).

  Returns:
    (advantages [B, G, L], gates [B, G, L]) float32.
  """
  match = position_match(completions, targets, target_mask)
  w = jnp.asarray(position_weights(completions.shape[-1]))
  adv = group_normalise(marginal_rewards(prefix_rewards(match, w)), axis=1)
  if w_item:
    if item_rewards is None:
      raise ValueError("tpma_advantages: w_item > 0 needs item_rewards")
    adv = adv + w_item * group_normalise(item_rewards, axis=1)[..., None]
  return adv, prefix_gates(match)


def grpo_advantages(rewards: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
  """Plain GRPO (the "+GRPO" row before TPMA): the group-normalised sequence
  reward on every position, every gate 1.

  Args:
    rewards: [B, G] sequence rewards (e.g. R_item).
    length: L.

  Returns:
    (advantages [B, G, L], gates [B, G, L] of ones).
  """
  adv = jnp.broadcast_to(
    group_normalise(rewards, axis=1)[..., None], rewards.shape + (length,)
  )
  return adv, jnp.ones_like(adv)


def tpma_objective(
  logp: jax.Array,
  logp_old: jax.Array,
  advantages: jax.Array,
  gates: jax.Array,
  mask: jax.Array,
  *,
  logp_ref: jax.Array | None = None,
  beta: float = 0.0,
) -> jax.Array:
  """L_TPMA = −masked mean of g·r·Â (+ β·k3-KL to the reference), no clipping.

  Args:
    logp: [B, G, L] log π_θ of the rollout tokens (differentiated).
    logp_old: [B, G, L] log π_old (the policy that sampled; held constant).
    advantages: [B, G, L] Â^final.
    gates: [B, G, L] prefix gates.
    mask: [B, G, L] 1 on real rollout tokens.
    logp_ref: [B, G, L] reference log-probs (needed when beta != 0).
    beta: KL weight.

  Returns:
    Scalar float32.
  """
  per_token = -(gates * importance_ratio(logp, logp_old) * advantages)
  if beta:
    if logp_ref is None:
      raise ValueError("tpma_objective: beta != 0 needs logp_ref")
    per_token = per_token + beta * k3_kl(logp, logp_ref)
  return masked_mean(per_token, mask)


def importance_ratio(logp: jax.Array, logp_old: jax.Array) -> jax.Array:
  """r = exp(clamp(log π − stop_gradient(log π_old), ±20)), no clipping of r.

  Args:
    logp: [...] log π_θ (differentiated).
    logp_old: [...] log π_old (the policy that sampled; held constant).

  Returns:
    [...] float32 (exactly 1 where logp_old is logp's value).
  """
  log_ratio = jnp.clip(
    logp - jax.lax.stop_gradient(logp_old), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP
  )
  return jnp.exp(log_ratio)


def k3_kl(logp: jax.Array, logp_ref: jax.Array) -> jax.Array:
  """The k3 estimator of KL(π_θ ‖ π_ref) per sampled token,
  exp(ref − logp) − (ref − logp) − 1 (≥ 0, 0 where π_θ = π_ref; its
  expectation over tokens drawn from π_θ is the KL). The reference is held
  constant.

  Args:
    logp: [...] log π_θ of the sampled tokens (differentiated).
    logp_ref: [...] log π_ref of the same tokens.

  Returns:
    [...] float32.
  """
  d = jax.lax.stop_gradient(logp_ref) - logp
  return jnp.exp(d) - d - 1.0


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ x·mask / max(Σ mask, 1): the trainer's mean over valid tokens."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def tpma_grpo_loss(
  tpma: jax.Array, sft_loss: jax.Array, sft_weight: float = SFT_WEIGHT
) -> dict[str, jax.Array]:
  """total = L_TPMA + sft_weight·CE_SFT.

  Args:
    tpma: scalar from ``tpma_objective``.
    sft_loss: scalar mean token CE of the prompt's first ground-truth SID
      (``model.losses.weighted_cross_entropy``: loss_sum / weight_sum).
    sft_weight: SPEC's 0.1.

  Returns:
    {"tpma", "sft", "total"} scalars.
  """
  return {"tpma": tpma, "sft": sft_loss, "total": tpma + sft_weight * sft_loss}
