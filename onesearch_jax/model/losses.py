"""Weighted cross-entropy with z-loss and label smoothing (pure functions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from onesearch_jax.model.layers import NEG_INF


def cross_entropy_with_logits(
  logits: jax.Array,
  targets: jax.Array,
  *,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
  allowed: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Per-token cross-entropy against smoothed one-hot targets.

  The smoothed target puts 1 - label_smoothing on the target id and spreads
  label_smoothing uniformly over the allowed ids (all ids without `allowed`).
  The constant entropy of the smoothed target is subtracted, so a perfect
  prediction of the smoothed distribution has loss 0 (as in t5x).

  Args:
    logits: [..., V] float.
    targets: [...] int target ids.
    label_smoothing: in [0, 1).
    z_loss: coefficient of log(Z)**2 (PaLM/t5x auxiliary loss).
    allowed: optional bool [..., V]; logits outside are masked (the SID
      level restriction) and receive no smoothing mass.

  Returns:
    (loss [...] including the z-loss term, z_loss term [...]).
  """
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  if allowed is not None:
    logits = jnp.where(allowed, logits, NEG_INF)
    n_allowed = jnp.sum(allowed, axis=-1, keepdims=True).astype(jnp.float32)
  else:
    allowed = jnp.ones(logits.shape, bool)
    n_allowed = jnp.full(logits.shape[:-1] + (1,), float(vocab))
  log_z = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  log_p = logits - log_z
  onehot = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)
  if label_smoothing > 0.0:
    uniform = allowed.astype(jnp.float32) / n_allowed
    soft = (1.0 - label_smoothing) * onehot + label_smoothing * uniform
    # Entropy of the soft target, so the minimum loss is 0.
    entropy = -jnp.sum(
      jnp.where(soft > 0, soft * jnp.log(jnp.maximum(soft, 1e-30)), 0.0), -1
    )
  else:
    soft = onehot
    entropy = jnp.zeros(logits.shape[:-1])
  # Masked entries have soft == 0 and finite log_p, so the product is 0.
  loss = -jnp.sum(jnp.where(soft > 0, soft * log_p, 0.0), axis=-1) - entropy
  z_term = z_loss * jnp.square(log_z[..., 0])
  return loss + z_term, z_term


def weighted_cross_entropy(
  logits: jax.Array,
  targets: jax.Array,
  weights: jax.Array,
  *,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
  allowed: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Summed weighted token cross-entropy and accuracy (sums, not means).

  Args:
    logits: [B, T, V] float.
    targets: [B, T] int.
    weights: [B, T] float loss weights (0 on padding).
    label_smoothing: see `cross_entropy_with_logits`.
    z_loss: see `cross_entropy_with_logits`.
    allowed: optional bool [B, T, V] output restriction.

  Returns:
    {'loss_sum', 'z_loss_sum', 'weight_sum', 'correct_sum'} float32 scalars;
    accuracy compares the argmax of the (restricted) logits with the target.
  """
  weights = weights.astype(jnp.float32)
  loss, z_term = cross_entropy_with_logits(
    logits, targets, label_smoothing=label_smoothing, z_loss=z_loss, allowed=allowed
  )
  masked = logits if allowed is None else jnp.where(allowed, logits, NEG_INF)
  correct = (jnp.argmax(masked, axis=-1) == targets).astype(jnp.float32)
  return {
    "loss_sum": jnp.sum(loss * weights),
    "z_loss_sum": jnp.sum(z_term * weights),
    "weight_sum": jnp.sum(weights),
    "correct_sum": jnp.sum(correct * weights),
  }
