"""Jitted beam search over SIDs, trie-constrained or free, with request masks.

One compiled program per (model shape, trie shape, beam size): the encoder
runs once per query, each decoder layer's cross-attention K/V are projected
once per query ([B, L, H, K]) and shared by the W beams, and the S SID steps
are unrolled (no while loop, no EOS logic, no host callback).

Step l (depth l -> l + 1), for every beam at trie node n with score s:

1. log-softmax of the model's logits at level l (with `restrict_sid_levels`
   only that level's range is computed and normalised, as in `decode_step`);
2. candidates: on a dense depth every level-local code c, child
   `dense_child[l][n, c]` (-1 = no such prefix); on a CSR depth the K_l
   children `indptr[l][n] + arange(K_l)` (valid below `indptr[l][n + 1]`),
   whose codes `child_code[l][child]` pick K_l log-probs;
3. invalid children, children with no allowed item (`allowed_items`) and
   codes off the per-level token masks get -inf;
4. top-W of the W * C candidate scores s + log p (sorted descending); each
   winner's parent beam is gathered from the KV cache, token history and
   node id.

Beams stay unique (distinct parents x distinct children). When fewer than W
valid continuations exist, the rest are padding: score -inf, codes -1,
sid_index -1. Unconstrained mode (trie None) takes top-W over each level's
whole SID range; its sid_index is -1 (use trie.lookup_sid_index).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from onesearch_jax import sharding as sh
from onesearch_jax.decoding.trie import TrieIndex
from onesearch_jax.model.transformer import EncoderDecoder

_BATCH_KEYS = ("encoder_input_tokens", "long_seq_features")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamResult:
  """Beam search output, beams sorted by score (best first).

  Attributes:
    tokens: [B, W, S] int32 vocabulary ids (0 on padding beams).
    codes: [B, W, S] int32 level-local codes (-1 on padding beams).
    scores: [B, W] float32 sum of the tokens' log-probs (-inf = padding).
    sid_index: [B, W] int32 row in the trie's unique_codes, -1 for padding
      beams and (unconstrained mode) always -1.
  """

  tokens: jax.Array
  codes: jax.Array
  scores: jax.Array
  sid_index: jax.Array


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


def level_log_probs(
  model: EncoderDecoder,
  tokens: jax.Array,
  cache,
  cross_kv,
  encoder_mask: jax.Array,
  level: int,
  offset: int,
  size: int,
):
  """Log-probs of level `level`'s codes for every beam, and the new cache.

  Args:
    tokens: [B, W] previous tokens (0 = BOS at level 0).
    level, offset, size: the level, its first vocabulary id and code count.

  Returns:
    (log_probs [B, W, size] float32, cache).
  """
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
    logits, cache = model.beam_decode_step(
      tokens, cache, cross_kv, encoder_mask, vocab_slice=(a, e)
    )
    lp = jax.nn.log_softmax(logits, axis=-1)
    return lp[..., offset - a : offset - a + size], cache
  logits, cache = model.beam_decode_step(tokens, cache, cross_kv, encoder_mask)
  lp = jax.nn.log_softmax(logits, axis=-1)
  return lp[..., offset : offset + size], cache


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


def _gather_beams(x: jax.Array, parent: jax.Array) -> jax.Array:
  """x [B, Wp, ...] -> [B, W, ...] rows parent [B, W] of each query."""
  return jax.vmap(lambda row, p: row[p])(x, parent)


def _candidates(trie, lvl, node, lp, size):
  """Children of every beam: (child ids or None, codes, log-probs, valid).

  Shapes [B, Wp, C]; C = V_l on dense depths / unconstrained, K_l on CSR.
  """
  b, wp = node.shape
  if trie is None:
    codes = jnp.broadcast_to(jnp.arange(size, dtype=jnp.int32), (b, wp, size))
    return None, codes, lp, jnp.ones((b, wp, size), bool)
  if lvl < trie.dense_levels:
    child = jnp.asarray(trie.dense_child[lvl])[node]  # [B, Wp, V_l]
    codes = jnp.broadcast_to(jnp.arange(size, dtype=jnp.int32), child.shape)
    return child, codes, lp, child >= 0
  k = trie.max_fanout[lvl]
  ptr = jnp.asarray(trie.indptr[lvl])
  cc = jnp.asarray(trie.child_code[lvl])
  child = ptr[node][..., None] + jnp.arange(k, dtype=jnp.int32)
  valid = child < ptr[node + 1][..., None]
  child = jnp.where(valid, child, 0)
  codes = cc[child].astype(jnp.int32)
  cand_lp = jnp.take_along_axis(lp, codes, axis=-1)
  return jnp.where(valid, child, -1), codes, cand_lp, valid


def _per_query_take(table: jax.Array, idx: jax.Array) -> jax.Array:
  """table [B, M], idx [B, ...] (clipped to [0, M)) -> table[b, idx[b, ...]]."""
  b = idx.shape[0]
  flat = jnp.clip(idx, 0, table.shape[1] - 1).reshape(b, -1)
  return jnp.take_along_axis(table, flat, axis=1).reshape(idx.shape)


def search(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex | None,
  *,
  beam_size: int,
  num_steps: int | None = None,
  allowed_items: jax.Array | None = None,
  level_masks: Sequence[jax.Array | None] | None = None,
) -> BeamResult:
  """The beam search body (traceable; `make_beam_search` jits it).

  Args:
    model: the EncoderDecoder (deterministic use).
    batch: 'encoder_input_tokens' [B, L], optional 'long_seq_features'.
    trie: the catalogue trie, or None (unconstrained).
    beam_size: W.
    num_steps: SID steps to decode (default S, all levels).
    allowed_items: optional [B, N] bool, items each request may return.
    level_masks: optional per level [B, V_l] bool (or None) allowed codes.

  Returns:
    BeamResult with S' = num_steps columns.
  """
  offsets, sizes = level_layout(model, trie)
  s = len(sizes) if num_steps is None else int(num_steps)
  if not 1 <= s <= len(sizes):
    raise ValueError(f"num_steps {num_steps} not in [1, {len(sizes)}]")
  if beam_size < 1:
    raise ValueError(f"beam_size {beam_size} < 1")
  if allowed_items is not None and trie is None:
    raise ValueError("allowed_items needs a trie (constrained mode)")
  if level_masks is not None and len(level_masks) < s:
    raise ValueError(f"level_masks has {len(level_masks)} entries for {s} steps")
  w = beam_size
  enc_out, enc_mask = model.encode(batch)
  cross = model.cross_kv(enc_out)
  b = enc_out.shape[0]
  allowed = None if allowed_items is None else node_allowance(trie, allowed_items)

  cache = model.init_cache(b, s)
  tokens_in = jnp.zeros((b, 1), jnp.int32)
  scores = jnp.zeros((b, 1), jnp.float32)
  node = jnp.zeros((b, 1), jnp.int32)
  hist = jnp.zeros((b, 1, 0), jnp.int32)
  neg_inf = jnp.float32(-jnp.inf)
  for lvl in range(s):
    wp = node.shape[1]
    lp, cache = level_log_probs(
      model, tokens_in, cache, cross, enc_mask, lvl, offsets[lvl], sizes[lvl]
    )
    child, codes, cand_lp, valid = _candidates(trie, lvl, node, lp, sizes[lvl])
    if allowed is not None:
      table = allowed[lvl + 1]  # [n_{l+1}, B]
      rows = jnp.clip(child, 0, table.shape[0] - 1)
      valid = valid & table[rows, jnp.arange(b)[:, None, None]]
    if level_masks is not None and level_masks[lvl] is not None:
      mask = jnp.asarray(level_masks[lvl])
      if mask.shape != (b, sizes[lvl]):
        raise ValueError(
          f"level_masks[{lvl}] shape {mask.shape}, expected {(b, sizes[lvl])}"
        )
      valid = valid & _per_query_take(mask, codes)
    cand = jnp.where(valid, scores[..., None] + cand_lp, neg_inf)
    c = cand.shape[-1]
    flat = cand.reshape(b, wp * c)
    if wp * c < w:
      flat = jnp.pad(flat, ((0, 0), (0, w - wp * c)), constant_values=-jnp.inf)
    top_s, top_i = jax.lax.top_k(flat, w)
    top_i = jnp.minimum(top_i, wp * c - 1)
    alive = top_s > neg_inf
    parent = top_i // c
    new_code = jnp.where(alive, jnp.take_along_axis(codes.reshape(b, -1), top_i, 1), -1)
    hist = jnp.concatenate([_gather_beams(hist, parent), new_code[..., None]], axis=-1)
    if child is not None:
      new_node = jnp.take_along_axis(child.reshape(b, -1), top_i, 1)
      node = jnp.where(alive, new_node, 0)
    else:
      node = jnp.zeros((b, w), jnp.int32)
    scores = top_s
    tokens_in = jnp.where(alive, offsets[lvl] + new_code, 0).astype(jnp.int32)
    if lvl + 1 < s:
      layers_ = []
      for lc in cache["layers"]:
        layers_.append(
          {
            name: _gather_beams(
              lc[name].reshape((b, wp) + lc[name].shape[1:]), parent
            ).reshape((b * w,) + lc[name].shape[1:])
            for name in ("k", "v")
          }
        )
      cache = {"index": cache["index"], "layers": tuple(layers_)}
  alive = scores > neg_inf
  off = jnp.asarray(offsets[:s], jnp.int32)
  tokens = jnp.where(alive[..., None], hist + off, 0).astype(jnp.int32)
  hist = jnp.where(alive[..., None], hist, -1)
  if trie is not None and s == trie.depth:
    sid_index = jnp.where(alive, node, -1).astype(jnp.int32)
  else:
    sid_index = jnp.full((b, w), -1, jnp.int32)
  return BeamResult(tokens=tokens, codes=hist, scores=scores, sid_index=sid_index)


@dataclasses.dataclass
class BeamSearcher:
  """A compiled beam search: call it with a batch (and optional masks).

  Holds the model's graphdef (static) and state, and the trie; the jitted
  function takes state and trie as arguments, so `with_trie` (same capacity)
  and `with_model` (same shapes) reuse the compiled program.
  """

  graphdef: nnx.GraphDef
  state: nnx.State
  trie: TrieIndex | None
  beam_size: int
  num_steps: int | None
  mesh: jax.sharding.Mesh | None
  rules: sh.Rules
  fn: object = None

  def __post_init__(self):
    graphdef, w, steps = self.graphdef, self.beam_size, self.num_steps

    def run(state, trie, batch, allowed_items, level_masks):
      model = nnx.merge(graphdef, state)
      return search(
        model,
        batch,
        trie,
        beam_size=w,
        num_steps=steps,
        allowed_items=allowed_items,
        level_masks=level_masks,
      )

    self.fn = jax.jit(run)

  def with_trie(self, trie: TrieIndex | None) -> BeamSearcher:
    """Same compiled search on another trie (no recompile at equal shapes)."""
    out = dataclasses.replace(self, trie=self._place(trie))
    out.fn = self.fn
    return out

  def _place(self, tree):
    if tree is None:
      return None
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)
    return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

  def _shard_batch(self, x):
    x = jnp.asarray(x) if self.mesh is None else x
    if self.mesh is None:
      return x
    spec = sh.logical_to_spec((sh.BATCH,) + (None,) * (np.ndim(x) - 1), self.rules)
    return jax.device_put(x, NamedSharding(self.mesh, spec))

  def __call__(
    self,
    batch: Mapping[str, jax.Array],
    allowed_items: jax.Array | None = None,
    level_masks: Sequence[jax.Array | None] | None = None,
  ) -> BeamResult:
    """batch: 'encoder_input_tokens' [B, L] (+ 'long_seq_features')."""
    inputs = {k: self._shard_batch(batch[k]) for k in _BATCH_KEYS if k in batch}
    if "encoder_input_tokens" not in inputs:
      raise KeyError("beam search batch needs 'encoder_input_tokens' [B, L]")
    if allowed_items is not None:
      allowed_items = self._shard_batch(allowed_items)
    if level_masks is not None:
      level_masks = tuple(
        None if m is None else self._shard_batch(m) for m in level_masks
      )
    mesh = self.mesh if self.mesh is not None else sh.single_device_mesh()
    with jax.set_mesh(mesh), nnx.logical_axis_rules(self.rules):
      return self.fn(self.state, self.trie, inputs, allowed_items, level_masks)


def make_beam_search(
  model: EncoderDecoder,
  trie: TrieIndex | None,
  *,
  beam_size: int,
  num_steps: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
  rules: sh.Rules | None = None,
) -> BeamSearcher:
  """Compiles (lazily, on the first call) a reusable beam search.

  Args:
    model: the EncoderDecoder; its state is captured now (call again or use
      `BeamSearcher.state = nnx.state(model)` after training further).
    trie: catalogue trie (constrained) or None (unconstrained).
    beam_size: W (1..512 and more; cost grows with W * K_l).
    num_steps: SID steps (default: all levels).
    mesh: optional mesh; the batch is split over its batch axes (`rules`),
      the model state and trie are replicated (dp rules).
    rules: logical axis rules (default dp).

  Returns:
    A BeamSearcher: `searcher(batch, allowed_items=None, level_masks=None)`
    -> BeamResult.
  """
  graphdef, state = nnx.split(model)
  rules = rules if rules is not None else sh.DP_RULES
  out = BeamSearcher(graphdef, state, None, beam_size, num_steps, mesh, rules)
  out.trie = out._place(trie)
  if mesh is not None:
    out.state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
  return out


def beam_search(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex | None,
  *,
  beam_size: int,
  num_steps: int | None = None,
  allowed_items: jax.Array | None = None,
  level_masks: Sequence[jax.Array | None] | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> BeamResult:
  """One-shot jitted beam search (compiles per call; reuse make_beam_search).

  Args:
    model: the EncoderDecoder.
    batch: 'encoder_input_tokens' [B, L], optional 'long_seq_features'
      [B, 9, D_seq].
    trie: TrieIndex (constrained to catalogue SIDs) or None (unconstrained).
    beam_size: W.
    num_steps: SID steps (default all S levels).
    allowed_items: optional [B, N] bool item subset per request.
    level_masks: optional per level [B, V_l] bool allowed local codes.
    mesh: optional mesh to split the batch over.

  Returns:
    BeamResult: tokens/codes [B, W, S], scores [B, W] (descending),
    sid_index [B, W] (-1 = padding / unconstrained).
  """
  searcher = make_beam_search(
    model, trie, beam_size=beam_size, num_steps=num_steps, mesh=mesh
  )
  return searcher(batch, allowed_items, level_masks)
