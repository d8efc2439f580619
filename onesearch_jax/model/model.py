"""The model's objective: teacher-forced loss and eval sums on a batch.

Batch contract (seqio EncDecFeatureConverter names): encoder_input_tokens
[B, L] int32, decoder_input_tokens [B, T] int32, decoder_target_tokens
[B, T] int32, decoder_loss_weights [B, T] float32, optional
long_seq_features [B, 9, D_seq] float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from onesearch_jax.model import losses, sid_levels
from onesearch_jax.model.transformer import EncoderDecoder


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Token loss options."""

  label_smoothing: float = 0.0  # mass spread over allowed ids
  z_loss: float = 1e-4  # log(Z)^2 coefficient (t5x default)

  def __post_init__(self):
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"label_smoothing {self.label_smoothing} not in [0, 1)")
    if self.z_loss < 0:
      raise ValueError(f"z_loss {self.z_loss} < 0")


def allowed_outputs(model: EncoderDecoder, targets: jax.Array) -> jax.Array | None:
  """bool [B, T, V] SID-level restriction for the targets, or None when off."""
  cfg = model.cfg
  if not cfg.restrict_sid_levels:
    return None
  levels = sid_levels.target_sid_levels(targets, cfg.sid_ranges)
  return sid_levels.allowed_mask(levels, cfg.sid_ranges, cfg.vocab_size)


def metric_sums(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  loss_cfg: LossConfig,
  key: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Forward pass -> summed loss/accuracy terms.

  Returns:
    losses.weighted_cross_entropy's sums plus 'sid_level_violations' (count
    of weighted targets outside their SID level's range; 0 when the
    restriction is off).
  """
  return sums_of_logits(model, model(batch, key), batch, loss_cfg)


def loss_allowed(
  model: EncoderDecoder, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array | None, jax.Array]:
  """The restriction the training loss applies to a batch's targets.

  Returns:
    (allowed bool [B, T, V] or None when the restriction is off, with every
    target id let through; violations: float32 count of weighted targets
    outside their SID level's range).
  """
  targets = jnp.asarray(batch["decoder_target_tokens"])
  weights = jnp.asarray(batch["decoder_loss_weights"])
  allowed = allowed_outputs(model, targets)
  violations = jnp.zeros((), jnp.float32)
  if allowed is not None:
    # A target outside its level's range is a data error: count it (reported
    # as sid_level_violations) and let the target through so the loss stays
    # finite instead of exploding on one bad row.
    hit = jnp.take_along_axis(allowed, targets[..., None], axis=-1)[..., 0]
    violations = jnp.sum(((~hit) & (weights > 0)).astype(jnp.float32))
    allowed = allowed | jax.nn.one_hot(targets, allowed.shape[-1], dtype=bool)
  return allowed, violations


def sums_of_logits(
  model: EncoderDecoder,
  logits: jax.Array,
  batch: Mapping[str, jax.Array],
  loss_cfg: LossConfig,
) -> dict[str, jax.Array]:
  """``metric_sums`` of logits [B, T, V] already computed for ``batch``."""
  targets = jnp.asarray(batch["decoder_target_tokens"])
  weights = jnp.asarray(batch["decoder_loss_weights"])
  allowed, violations = loss_allowed(model, batch)
  sums = losses.weighted_cross_entropy(
    logits,
    targets,
    weights,
    label_smoothing=loss_cfg.label_smoothing,
    z_loss=loss_cfg.z_loss,
    allowed=allowed,
  )
  sums["sid_level_violations"] = violations
  return sums


def loss_fn(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  loss_cfg: LossConfig,
  key: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean weighted token loss (sum / weight sum) and the metric sums."""
  sums = metric_sums(model, batch, loss_cfg, key)
  loss = sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1.0)
  return loss, sums
