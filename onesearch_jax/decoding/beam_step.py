"""The per-step pieces of the trie beam search (decoding/beam_search.py):
the level layout, one cached decoder step of every beam, the level
log-probs, the trie candidates of each beam, the per-request item masks
pushed up the trie, and how many beam slots each step needs.

Shapes: B queries, W_in beams entering a step, W_out leaving it, C_l
candidates per beam at level l (the level size on a dense depth, the max
child count K_l on a CSR depth), H heads of K dims, L encoder positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from onesearch_jax import sharding as sh
from onesearch_jax.decoding.trie import TrieIndex
from onesearch_jax.model import layers, sid_levels
from onesearch_jax.model.transformer import EncoderDecoder


def level_layout(
  model: EncoderDecoder, trie: TrieIndex | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(token_offsets, level_sizes): the trie's, else the model's sid_ranges."""
  if trie is not None:
    return trie.token_offsets, trie.level_sizes
  ranges = model.cfg.sid_ranges
  if not ranges:
    raise ValueError("unconstrained beam search needs ModelConfig.sid_ranges")
  return tuple(a for a, _ in ranges), tuple(e - a for a, e in ranges)


def check_level(model: EncoderDecoder, level: int, offset: int, size: int):
  """The static vocab slice of level `level`'s logits (None: full vocabulary)."""
  cfg = model.cfg
  vocab = cfg.vocab_size
  if offset < 0 or offset + size > vocab:
    raise ValueError(f"level {level} ids [{offset}, {offset + size}) outside V={vocab}")
  if cfg.restrict_sid_levels and level < len(cfg.sid_ranges):
    a, e = cfg.sid_ranges[level]
    if not (a <= offset and offset + size <= e):
      raise ValueError(
        f"level {level} ids [{offset}, {offset + size}) outside the model's "
        f"restricted range sid_ranges[{level}] = {(a, e)}"
      )
    return (a, e)
  return None


def decoder_step(
  model, tokens, kv, cross, cross_bias, pos, vocab_slice, prefix_bias=None
):
  """One decoder step of every beam, self-attention cache per position.

  The same function as `EncoderDecoder.beam_decode_step` at position `pos`
  (static here), with a cheaper cache: it holds only the pos filled
  positions, position 0 (BOS, identical for the beams of a query) once per
  query, and the attention over the pos + 1 positions is elementwise (no
  masked slots, no [B*W, S, H, K] cache reorder or update).

  Args:
    model: the EncoderDecoder.
    tokens: [B, W_in] int32 tokens at position `pos` (W_in = 1 at pos 0:
      the BOS beam, token 0).
    kv: per decoder layer (k0, v0 [B, 1, H, K], k_prev, v_prev
      [B, W_in, pos - 1, H, K] (positions 1..pos-1, None when pos <= 1));
      ignored at pos 0.
    cross: per layer (k, v) [B, L, H, K] from `model.cross_kv`.
    cross_bias: [B, 1, 1, L] additive encoder padding mask.
    pos: the decoder position (static int).
    vocab_slice: (start, end) static logit columns, or None (all).
    prefix_bias: None, or [B, P] float32 (0 / NEG_INF): the cache's first
      part (k0, v0) is then a shared decoder prefix [B, P, H, K] of P
      positions (``prefix_pass``), whose masked slots get this bias, and
      the rest are positions P..pos (P = 1 without a prefix: BOS).

  Returns:
    (logits [B, W_in, V'] float32, per layer (k0, v0, k_rest, v_rest) where
    k_rest [B, W_in, pos, H, K] holds positions 1..pos (None at pos 0): the
    cache of the next step once its beams are gathered by parent).
  """
  x = model.embed(jnp.asarray(tokens))  # [B, W_in, D]
  bias = model.dec_rel(jnp.asarray([pos]), jnp.arange(pos + 1))  # [1, H, 1, P]
  bias = jnp.transpose(bias[0, :, 0, :])  # [P, H]
  out_kv = []
  for layer, lkv, (ck, cv) in zip(model.dec_layers, kv, cross, strict=True):
    att = layer.self_attn
    dt = att.dtype
    h = layer.norm_self(x)
    k_new, v_new = att.project_kv(h)  # [B, W_in, H, K]
    if pos == 0:
      k0, v0, k_rest, v_rest = k_new, v_new, None, None
    else:
      k0, v0, k_prev, v_prev = lkv
      k_rest, v_rest = k_new[:, :, None], v_new[:, :, None]
      if k_prev is not None:
        k_rest = jnp.concatenate([k_prev, k_rest], axis=2)
        v_rest = jnp.concatenate([v_prev, v_rest], axis=2)
    q = jnp.einsum("bwd,dhk->bwhk", h, att.query[...].astype(dt))
    q = sh.constrain(q, (sh.BATCH, sh.LENGTH, sh.ACT_HEADS, sh.ACT_KV))
    if prefix_bias is None:
      n0 = 1
      parts = [jnp.sum(q * k0, axis=-1)[:, :, None]]  # [B, W_in, 1, H]
    else:
      n0 = k0.shape[1]
      parts = [jnp.einsum("bwhk,bphk->bwph", q, k0)]  # [B, W_in, P, H]
    if k_rest is not None:
      parts.append(jnp.sum(q[:, :, None] * k_rest, axis=-1))  # [B, W_in, pos, H]
    logits = jnp.concatenate(parts, axis=2).astype(jnp.float32)
    logits = logits * (att.head_dim**-0.5) + bias
    if prefix_bias is not None:
      pad = logits.shape[2] - n0
      logits = logits + jnp.pad(prefix_bias, ((0, 0), (0, pad)))[:, None, :, None]
    weights = jax.nn.softmax(logits, axis=2).astype(dt)  # [B, W_in, P, H]
    if prefix_bias is None:
      ctx = weights[:, :, 0, :, None] * v0
    else:
      ctx = jnp.einsum("bwph,bphk->bwhk", weights[:, :, :n0], v0)
    if v_rest is not None:
      ctx = ctx + jnp.sum(weights[:, :, n0:, :, None] * v_rest, axis=2)
    x = x + jnp.einsum("bwhk,hkd->bwd", ctx, att.out[...].astype(dt))
    x = x + layer.cross_attn.attend(layer.norm_cross(x), ck, cv, cross_bias)
    x = x + layer.mlp(layer.norm_mlp(x))
    x = sh.constrain(x, (sh.BATCH, sh.LENGTH, sh.ACT_EMBED))
    out_kv.append((k0, v0, k_rest, v_rest))
  x = model.dec_norm(x)
  if vocab_slice is not None:
    return model.logits_slice(x, *vocab_slice), out_kv
  logits = model.logits(x)
  if model.cfg.restrict_sid_levels:
    level = sid_levels.decode_step_level(jnp.asarray(pos), model.cfg.sid_ranges)
    logits = sid_levels.restrict_logits(
      logits, jnp.broadcast_to(level, logits.shape[:2]), model.cfg.sid_ranges
    )
  return logits, out_kv


def level_log_probs(
  model: EncoderDecoder,
  tokens: jax.Array,
  kv,
  cross_kv,
  cross_bias: jax.Array,
  level: int,
  offset: int,
  size: int,
  prefix_bias: jax.Array | None = None,
):
  """Log-probs of level `level`'s codes for every beam, and the new cache.

  Args:
    tokens: [B, W_in] previous tokens ([B, 1] BOS = 0 at level 0).
    kv: the per-position cache (`decoder_step`).
    cross_kv: `model.cross_kv(encoder_out)`.
    cross_bias: [B, 1, 1, L] encoder padding bias.
    level, offset, size: the level, its first vocabulary id and code count.
    prefix_bias: None, or the [B, P] bias of a shared decoder prefix
      (``prefix_pass``): level l then runs at position P - 1 + l.

  Returns:
    (log_probs [B, W_in, size] float32, cache). With `restrict_sid_levels`
    only the level's range is computed and normalised (as `decode_step`).
  """
  vs = check_level(model, level, offset, size)
  pos = level if prefix_bias is None else prefix_bias.shape[1] - 1 + level
  logits, kv = decoder_step(
    model, tokens, kv, cross_kv, cross_bias, pos, vs, prefix_bias
  )
  return _level_slice(logits, vs, offset, size), kv


def _level_slice(logits, vs, offset, size):
  """Level log-probs [..., size] from logits over ``vs`` (None: all ids)."""
  lp = jax.nn.log_softmax(logits, axis=-1)
  start = offset - (vs[0] if vs is not None else 0)
  return lp[..., start : start + size]


def prefix_pass(
  model: EncoderDecoder,
  prefix: jax.Array,
  mask: jax.Array,
  cross_kv,
  cross_bias: jax.Array,
  offset: int,
  size: int,
):
  """The decoder over a shared prefix per query; level 0's log-probs after it.

  The prefix replaces the BOS position of the plain search: one causal pass
  over its P positions gives every layer's keys/values (shared by the
  query's beams, like BOS) and the logits after its last token.

  Args:
    model: the EncoderDecoder.
    prefix: [B, P] int32, left-padded (``thought.left_aligned_prefix``):
      padding, then BOS (0) and the prefix tokens, the last at P - 1.
    mask: [B, P] bool, True on BOS and the prefix tokens.
    cross_kv: `model.cross_kv(encoder_out)`.
    cross_bias: [B, 1, 1, L] encoder padding bias.
    offset, size: level 0's first vocabulary id and code count.

  Returns:
    (log_probs [B, 1, size] float32, cache: per layer (k [B, P, H, K], v,
    None, None), prefix_bias [B, P] float32 for ``level_log_probs``).
  """
  vs = check_level(model, 0, offset, size)
  key_bias = jnp.where(mask, 0.0, layers.NEG_INF).astype(jnp.float32)  # [B, P]
  p = prefix.shape[1]
  pos = jnp.arange(p)
  causal = jnp.where(pos[None, :] <= pos[:, None], 0.0, layers.NEG_INF)
  self_bias = model.dec_rel(pos, pos) + causal[None, None] + key_bias[:, None, None]
  x = model.embed(jnp.asarray(prefix))  # [B, P, D]
  out_kv = []
  for layer, (ck, cv) in zip(model.dec_layers, cross_kv, strict=True):
    h = layer.norm_self(x)
    k, v = layer.self_attn.project_kv(h)  # [B, P, H, K]
    x = x + layer.self_attn.attend(h, k, v, self_bias)
    x = x + layer.cross_attn.attend(layer.norm_cross(x), ck, cv, cross_bias)
    x = x + layer.mlp(layer.norm_mlp(x))
    x = sh.constrain(x, (sh.BATCH, sh.LENGTH, sh.ACT_EMBED))
    out_kv.append((k, v, None, None))
  x = model.dec_norm(x[:, -1:])  # [B, 1, D]
  logits = model.logits_slice(x, *vs) if vs is not None else model.logits(x)
  return _level_slice(logits, vs, offset, size), out_kv, key_bias


def node_allowance(trie: TrieIndex, allowed_items: jax.Array) -> list[jax.Array]:
  """Per-request allowance of every trie node (node-major layout).

  Bottom-up: leaves = segment-max of the items' flags over item_sid, then
  each depth = segment-max of its children over `parent` (sorted ids).

  Args:
    trie: the trie (its item_sid maps items to leaves).
    allowed_items: [B, N] bool, N = len(trie.item_sid).

  Returns:
    allowed[l] for l = 0..S: [n_l, B] bool, True where at least one allowed
    item lies below the node (l = S: the leaves, i.e. SIDs).
  """
  item_sid = jnp.asarray(trie.item_sid)
  if allowed_items.shape[1] != item_sid.shape[0]:
    raise ValueError(
      f"allowed_items has {allowed_items.shape[1]} items, the trie {item_sid.shape[0]}"
    )
  flags = jnp.asarray(allowed_items, bool).T  # [N, B]
  out = [jax.ops.segment_max(flags, item_sid, trie.num_nodes[-1])]
  for lvl in range(trie.depth - 1, -1, -1):
    out.insert(
      0,
      jax.ops.segment_max(
        out[0], jnp.asarray(trie.parent[lvl]), trie.num_nodes[lvl],
        indices_are_sorted=True,
      ),
    )  # fmt: skip
  return out


def gather_beams(x: jax.Array, parent: jax.Array) -> jax.Array:
  """x [B, W_in, ...] -> [B, W_out, ...]: rows parent [B, W_out] of each query."""
  return jax.vmap(lambda row, p: row[p])(x, parent)


def candidates(trie, lvl, node, lp, size):
  """Children of every beam: (child ids or None, codes or None, log-probs, valid).

  node [B, W_in] -> shapes [B, W_in, C]; C = V_l on dense depths and
  unconstrained (codes None: the code is the column), K_l on CSR.
  """
  if trie is None:
    return None, None, lp, None
  if lvl < trie.dense_levels:
    child = jnp.asarray(trie.dense_child[lvl])[node]  # [B, W_in, V_l]
    return child, None, lp, child >= 0
  k = trie.max_fanout[lvl]
  ptr = jnp.asarray(trie.indptr[lvl])
  cc = jnp.asarray(trie.child_code[lvl])
  child = ptr[node][..., None] + jnp.arange(k, dtype=jnp.int32)
  valid = child < ptr[node + 1][..., None]
  child = jnp.where(valid, child, 0)
  codes = cc[child].astype(jnp.int32)
  cand_lp = jnp.take_along_axis(lp, codes, axis=-1)
  return jnp.where(valid, child, -1), codes, cand_lp, valid


def per_query_take(table: jax.Array, idx: jax.Array) -> jax.Array:
  """table [B, M], idx [B, ...] (clipped to [0, M)) -> table[b, idx[b, ...]]."""
  b = idx.shape[0]
  flat = jnp.clip(idx, 0, table.shape[1] - 1).reshape(b, -1)
  return jnp.take_along_axis(table, flat, axis=1).reshape(idx.shape)


def beams_per_level(
  trie: TrieIndex | None, sizes: Sequence[int], beam_size: int, num_steps: int
) -> tuple[int, ...]:
  """Static number of beam slots entering each step and leaving the last.

  (1, W_1, ..., W_S'): W_{l+1} = min(W, W_l * C_l, n_{l+1}) where C_l is
  the candidates per beam and n_{l+1} bounds the distinct prefixes of length
  l + 1 (the trie's node count, or prod V_<=l unconstrained). Beams are
  distinct prefixes, so slots beyond it could only hold padding.
  """
  out, prefixes = [1], 1
  for lvl in range(num_steps):
    prefixes *= sizes[lvl]
    c = sizes[lvl]
    bound = prefixes
    if trie is not None:
      bound = trie.num_nodes[lvl + 1]
      if lvl >= trie.dense_levels:
        c = trie.max_fanout[lvl]
    out.append(min(beam_size, out[-1] * c, bound))
  return tuple(out)
