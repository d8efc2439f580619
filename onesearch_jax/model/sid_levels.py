"""Per-level SID output restriction: softmax over the current level's range.

An item SID is 5 tokens <a><b><c><d><d'>; level k may only emit ids in
`sid_ranges[k] = (start, end)` (half-open). Ranges may overlap (the last two
levels can share the d range), so a target position's level is found by
counting SID tokens, not by looking the id up:

- teacher forcing: level of target t = (number of SID tokens in targets[:t])
  mod n_levels where targets[t] is a SID token, else -1 (unrestricted);
- decoding: level of step t = t for t < n_levels, else -1 (EOS etc.).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from onesearch_jax.model.configs import SidRanges
from onesearch_jax.model.layers import NEG_INF


def is_sid_token(tokens: jax.Array, sid_ranges: SidRanges) -> jax.Array:
  """tokens [...] int -> bool [...]: inside any SID range."""
  out = jnp.zeros(tokens.shape, bool)
  for start, end in sid_ranges:
    out = out | ((tokens >= start) & (tokens < end))
  return out


def target_sid_levels(targets: jax.Array, sid_ranges: SidRanges) -> jax.Array:
  """SID level of each target position (teacher forcing).

  Args:
    targets: [B, T] int target tokens.
    sid_ranges: per-level (start, end).

  Returns:
    [B, T] int32 level in [0, n_levels) at SID positions, -1 elsewhere.
  """
  sid = is_sid_token(targets, sid_ranges)
  count_before = jnp.cumsum(sid, axis=1) - sid.astype(jnp.int32)
  return jnp.where(sid, count_before % len(sid_ranges), -1).astype(jnp.int32)


def decode_step_level(step: jax.Array, sid_ranges: SidRanges) -> jax.Array:
  """Level for decode step `step` (scalar int): step if < n_levels else -1."""
  return jnp.where(step < len(sid_ranges), step, -1).astype(jnp.int32)


def allowed_mask(
  levels: jax.Array, sid_ranges: SidRanges, vocab_size: int
) -> jax.Array:
  """Allowed output ids per position.

  Args:
    levels: [...] int32 levels (-1 = unrestricted).
    sid_ranges: per-level (start, end).
    vocab_size: V.

  Returns:
    bool [..., V]: for level k only sid_ranges[k]; for -1 everything.
  """
  starts = jnp.asarray([s for s, _ in sid_ranges], jnp.int32)
  ends = jnp.asarray([e for _, e in sid_ranges], jnp.int32)
  safe = jnp.clip(levels, 0, len(sid_ranges) - 1)
  ids = jnp.arange(vocab_size, dtype=jnp.int32).reshape((1,) * levels.ndim + (-1,))
  in_range = (ids >= starts[safe][..., None]) & (ids < ends[safe][..., None])
  return jnp.where((levels >= 0)[..., None], in_range, True)


def restrict_logits(
  logits: jax.Array, levels: jax.Array, sid_ranges: SidRanges
) -> jax.Array:
  """Sets logits outside each position's level range to NEG_INF.

  Args:
    logits: [..., V] float.
    levels: [...] int32 (-1 = leave the row unchanged).
    sid_ranges: per-level (start, end).

  Returns:
    [..., V] masked logits (softmax gives exactly 0 outside the range).
  """
  mask = allowed_mask(levels, sid_ranges, logits.shape[-1])
  return jnp.where(mask, logits, jnp.asarray(NEG_INF, logits.dtype))
