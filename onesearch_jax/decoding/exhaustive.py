"""Exact teacher-forced log-prob of every catalogue SID (small catalogues).

The reference for beam search: the exact top-K of a query is the top-K of
`score_all_sids`. Used by the exactness tests and the beam-search-error
metric. Cost: B x U decoder passes of S tokens (chunked over U).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax.model import sid_levels
from onesearch_jax.model.transformer import EncoderDecoder


def _chunk_scores(model, enc_out, enc_mask, tokens):
  """enc_out [B, L, D], tokens [C, S] vocab ids -> [B, C] sum of log-probs."""
  cfg = model.cfg
  b, length, d = enc_out.shape
  c, s = tokens.shape
  dec_in = jnp.concatenate([jnp.zeros((c, 1), jnp.int32), tokens[:, :-1]], axis=1)
  enc = jnp.broadcast_to(enc_out[:, None], (b, c, length, d)).reshape(b * c, length, d)
  mask = jnp.broadcast_to(enc_mask[:, None], (b, c, length)).reshape(b * c, length)
  dec_in = jnp.broadcast_to(dec_in[None], (b, c, s)).reshape(b * c, s)
  logits = model.decode(dec_in, enc, mask)  # [B*C, S, V]
  if cfg.restrict_sid_levels:
    levels = sid_levels.decode_step_level(jnp.arange(s), cfg.sid_ranges)
    logits = sid_levels.restrict_logits(
      logits, jnp.broadcast_to(levels, logits.shape[:2]), cfg.sid_ranges
    )
  lp = jax.nn.log_softmax(logits, axis=-1)
  tgt = jnp.broadcast_to(tokens[None], (b, c, s)).reshape(b * c, s)
  tok_lp = jnp.take_along_axis(lp, tgt[..., None], axis=-1)[..., 0]
  return jnp.sum(tok_lp, axis=-1).reshape(b, c)


def _chunk_scores_cached(model, cross, enc_mask, tokens):
  """As `_chunk_scores` by the incremental decoder: the encoder's cross K/V
  [B, L, H, K] are shared by the C SIDs of a query (`beam_decode_step` with
  the SIDs as beams), and each step computes only its level's logits."""
  cfg = model.cfg
  b = enc_mask.shape[0]
  c, s = tokens.shape
  cache = model.init_cache(b * c, s)
  prev = jnp.zeros((b, c), jnp.int32)
  total = jnp.zeros((b, c), jnp.float32)
  for t in range(s):
    vs = None
    if cfg.restrict_sid_levels and t < len(cfg.sid_ranges):
      vs = tuple(cfg.sid_ranges[t])
    logits, cache = model.beam_decode_step(prev, cache, cross, enc_mask, vocab_slice=vs)
    lp = jax.nn.log_softmax(logits, axis=-1)  # [B, C, V']
    tgt = jnp.broadcast_to(tokens[:, t] - (vs[0] if vs else 0), (b, c))
    total = total + jnp.take_along_axis(lp, tgt[..., None], axis=-1)[..., 0]
    prev = jnp.broadcast_to(tokens[:, t], (b, c))
  return total


def score_all_sids(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  unique_codes: np.ndarray,
  token_offsets: Sequence[int],
  *,
  chunk_size: int = 256,
  shared_cross_kv: bool = False,
) -> np.ndarray:
  """Sequence log-prob of every SID for every query.

  Args:
    model: the EncoderDecoder (deterministic).
    batch: 'encoder_input_tokens' [B, L], optional 'long_seq_features'.
    unique_codes: [U, S] level-local codes (sid_index order).
    token_offsets: (S,) vocabulary id of code 0 per level.
    chunk_size: SIDs per compiled decoder pass (the last chunk is padded).
    shared_cross_kv: score with the incremental decoder, the cross K/V
      projected once per query (`beam_decode_step`), instead of the full
      teacher-forced forward of every (query, SID) row: the same scores up
      to float rounding at a fraction of the cost (the encoder output is
      not repeated per SID). The default full forward is the reference
      the decoding tests compare the beam search against.

  Returns:
    [B, U] float32: sum over the S positions of log p(token | prefix, query),
    with the same level restriction as decoding (`restrict_sid_levels`).
  """
  codes = np.asarray(unique_codes, np.int32)
  if codes.ndim != 2 or codes.shape[1] != len(token_offsets):
    raise ValueError(
      f"score_all_sids: unique_codes {codes.shape} vs {len(token_offsets)} offsets"
    )
  tokens = codes + np.asarray(token_offsets, np.int32)[None]
  u = tokens.shape[0]
  c = max(1, min(chunk_size, u))
  pad = (-u) % c
  tokens = np.concatenate([tokens, np.repeat(tokens[:1], pad, axis=0)], axis=0)
  graphdef, state = nnx.split(model)
  inputs = {
    k: batch[k] for k in ("encoder_input_tokens", "long_seq_features") if k in batch
  }

  @jax.jit
  def encode(state, inputs):
    return nnx.merge(graphdef, state).encode(inputs)

  @jax.jit
  def chunk(state, enc_out, enc_mask, tok):
    model = nnx.merge(graphdef, state)
    if shared_cross_kv:
      return _chunk_scores_cached(model, enc_out, enc_mask, tok)
    return _chunk_scores(model, enc_out, enc_mask, tok)

  @jax.jit
  def cross_kv(state, enc_out):
    return nnx.merge(graphdef, state).cross_kv(enc_out)

  enc_out, enc_mask = encode(state, inputs)
  if shared_cross_kv:
    enc_out = cross_kv(state, enc_out)
  out = [
    np.asarray(chunk(state, enc_out, enc_mask, jnp.asarray(tokens[i : i + c])))
    for i in range(0, tokens.shape[0], c)
  ]
  return np.concatenate(out, axis=1)[:, :u].astype(np.float32)
