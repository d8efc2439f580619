"""A text "thought" decoded before the SID (OneSearch-V2's direct CoT).

With ``MuSeqConfig.direct_cot`` the phase-3 target is
``kw1[SEP]kw2..[GEN_IID]<a_..><b_..>...``: the model writes its keyword
thought, closes it with a stop marker, then the SID. Decoding follows the
target: ``greedy_thought`` decodes the span greedily, unconstrained over the
text tokens (SID tokens, pad and EOS are never picked), until the stop
marker or ``max_len`` tokens (the last one is then forced to the marker);
``left_aligned_prefix`` turns each row's span into the decoder prefix the
trie beam search continues (``beam_search.search(prefix=...)``).

Why left-aligned: the decoder's only position signal is the bucketed
relative position bias, so shifting a row's whole prefix to end at the same
position P - 1 for every row, with the padding slots in front masked out as
keys, gives every real token the distances it had in training; the W beams
of a query then share one prefix cache, as they share the BOS position in
the plain search.

Shapes: B queries, L encoder positions, T = ``max_len``, P = T + 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from onesearch_jax.model import layers


@dataclasses.dataclass(frozen=True)
class ThoughtConfig:
  """How the thought before the SID is decoded.

  Attributes:
    stop_id: the token that ends the thought ([GEN_IID]).
    max_len: at most this many thought tokens, the stop marker included.
    banned: (start, end) id ranges never decoded in the thought (the SID
      ranges); pad (0) and EOS (1) are always banned.
  """

  stop_id: int
  max_len: int = 26
  banned: tuple[tuple[int, int], ...] = ()

  def __post_init__(self):
    if self.max_len < 1 or self.stop_id < 2:
      raise ValueError(
        f"ThoughtConfig: max_len must be >= 1 and stop_id >= 2, got {self}"
      )


def greedy_thought(
  model, enc_out: jax.Array, enc_mask: jax.Array, cfg: ThoughtConfig
) -> tuple[jax.Array, jax.Array]:
  """Greedy thought span of every query (traceable).

  Each step runs the teacher-forced decoder (``model.decode``) over the
  fixed [B, T + 1] token buffer and reads the logits at the current
  position (causal: later slots do not matter), so the loop has one
  compiled body; the thought is short, so the T full passes are cheap next
  to the beam search.

  Args:
    model: the EncoderDecoder.
    enc_out: [B, L, D] encoder output.
    enc_mask: [B, L] bool.
    cfg: the thought settings.

  Returns:
    (tokens [B, T] int32: the span, the stop marker included, 0 after it;
    lengths [B] int32: its number of tokens, in [1, T]).
  """
  b, t_max = enc_out.shape[0], cfg.max_len
  vocab = model.cfg.vocab_size
  ids = jnp.arange(vocab)
  ok = ids > 1
  for start, end in cfg.banned:
    ok &= (ids < start) | (ids >= end)
  ok = ok.at[cfg.stop_id].set(True)

  def step(t, state):
    buf, done, lengths = state  # buf [B, T + 1]: BOS then the span
    logits = model.decode(buf, enc_out, enc_mask)  # [B, T + 1, V]
    row = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
    tok = jnp.argmax(jnp.where(ok[None, :], row, -jnp.inf), axis=-1)
    tok = jnp.where(t == t_max - 1, cfg.stop_id, tok).astype(jnp.int32)
    tok = jnp.where(done, 0, tok)
    stop = ~done & (tok == cfg.stop_id)
    lengths = jnp.where(stop, t + 1, lengths)
    buf = jax.lax.dynamic_update_index_in_dim(buf, tok, t + 1, axis=1)
    return buf, done | stop, lengths

  init = (
    jnp.zeros((b, t_max + 1), jnp.int32),
    jnp.zeros((b,), bool),
    jnp.zeros((b,), jnp.int32),
  )
  buf, _, lengths = jax.lax.fori_loop(0, t_max, step, init)
  return buf[:, 1:], lengths


def left_aligned_prefix(
  tokens: jax.Array, lengths: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The decoder prefix ``BOS span`` of each row, right-aligned in [B, T + 1].

  Args:
    tokens: [B, T] spans (``greedy_thought``).
    lengths: [B] their lengths (0 = no span: the prefix is BOS alone).

  Returns:
    (prefix [B, T + 1] int32: padding (0) first, then BOS (0) and the span;
    mask [B, T + 1] bool: True on BOS and the span).
  """
  b, t_max = tokens.shape
  seq = jnp.concatenate([jnp.zeros((b, 1), tokens.dtype), tokens], axis=1)
  shift = t_max - lengths  # [B] padding slots in front
  src = jnp.arange(t_max + 1)[None, :] - shift[:, None]
  mask = src >= 0
  out = jnp.take_along_axis(seq, jnp.clip(src, 0, t_max), axis=1)
  return jnp.where(mask, out, 0).astype(jnp.int32), mask


def prefix_key_bias(mask: jax.Array) -> jax.Array:
  """[B, P] bool -> [B, P] float32 additive bias (0 real, NEG_INF padding)."""
  return jnp.where(mask, 0.0, layers.NEG_INF).astype(jnp.float32)
