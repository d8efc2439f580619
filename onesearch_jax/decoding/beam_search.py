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

Decoder prefix (direct CoT, ``decoding/thought.py``): with ``prefix`` (or
``thought``, which decodes one greedily first) level 0 is predicted after a
per-query prefix instead of after BOS alone; the prefix runs once per query
(``beam_step.prefix_pass``) and its cache is shared by the query's beams.

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
from onesearch_jax.decoding import beam_step
from onesearch_jax.decoding import thought as thought_lib
from onesearch_jax.decoding.thought import ThoughtConfig
from onesearch_jax.decoding.trie import TrieIndex
from onesearch_jax.model import layers
from onesearch_jax.model.transformer import EncoderDecoder

_BATCH_KEYS = ("encoder_input_tokens", "long_seq_features")
# Queries whose beams one lax.map iteration decodes (see `search`).
DEFAULT_QUERY_BLOCK = 4


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
    thought: None, or [B, T] int32 the greedy thought decoded before the SID
      (``search(thought=...)``; its stop marker included, 0 after it).
  """

  tokens: jax.Array
  codes: jax.Array
  scores: jax.Array
  sid_index: jax.Array
  thought: jax.Array | None = None


def _beam_loop(
  model, trie, cross, enc_mask, allowed, level_masks, prefix, *, w, s, offsets, sizes
) -> BeamResult:
  """The S' unrolled steps for a block of B queries (all args batch-major).

  Step l takes W_in = slots[l] beams per query and keeps W_out = slots[l + 1]
  (`beams_per_level`): W_in = 1 at step 0 (the BOS beam, state [B, 1]), then
  up to W (state [B, W_out]). The result is padded to [B, W].

  Args:
    cross: per decoder layer (k, v) [B, L, H, K] (`model.cross_kv`).
    enc_mask: [B, L] bool, True on real encoder tokens.
    allowed: None or per depth l = 1..S' [B, n_l] bool.
    level_masks: None or per level [B, V_l] bool (or None).
    prefix: None, or (tokens [B, P] int32, mask [B, P] bool) a left-padded
      decoder prefix per query (``thought.left_aligned_prefix``).
    w, s, offsets, sizes: W, S', and each level's first vocabulary id and
      code count.

  Returns:
    BeamResult, [B, W, S'] / [B, W].
  """
  b = enc_mask.shape[0]
  slots = beam_step.beams_per_level(trie, sizes, w, s)
  cross_bias = jnp.where(enc_mask, 0.0, layers.NEG_INF).astype(jnp.float32)
  cross_bias = cross_bias[:, None, None, :]  # [B, 1, 1, L]
  kv = [None] * len(cross)
  # The beam state entering step 0: one BOS beam per query, [B, W_in = 1].
  beam_tokens = jnp.zeros((b, 1), jnp.int32)  # [B, W_in] token fed at step l
  beam_scores = jnp.zeros((b, 1), jnp.float32)  # [B, W_in] log-prob so far
  beam_node = jnp.zeros((b, 1), jnp.int32)  # [B, W_in] trie node at depth l
  beam_codes = jnp.zeros((b, 1, 0), jnp.int32)  # [B, W_in, l] codes so far
  neg_inf = jnp.float32(-jnp.inf)
  prefix_bias = None
  for lvl in range(s):
    w_in, w_out = beam_node.shape[1], slots[lvl + 1]
    if lvl == 0 and prefix is not None:
      lp, kv, prefix_bias = beam_step.prefix_pass(
        model, *prefix, cross, cross_bias, offsets[0], sizes[0]
      )  # lp [B, 1, V_0]
    else:
      lp, kv = beam_step.level_log_probs(
        model,
        beam_tokens,
        kv,
        cross,
        cross_bias,
        lvl,
        offsets[lvl],
        sizes[lvl],
        prefix_bias,
      )  # fmt: skip  (lp [B, W_in, V_l])
    # Each [B, W_in, C] (child, codes: None where the column is the code).
    child, codes, cand_lp, valid = beam_step.candidates(
      trie, lvl, beam_node, lp, sizes[lvl]
    )
    c = cand_lp.shape[-1]
    if allowed is not None:
      ok = beam_step.per_query_take(allowed[lvl], child)
      valid = ok if valid is None else valid & ok
    if level_masks is not None and level_masks[lvl] is not None:
      mask = jnp.asarray(level_masks[lvl])  # [B, V_l]
      if mask.shape != (b, sizes[lvl]):
        raise ValueError(
          f"level_masks[{lvl}] shape {mask.shape}, expected {(b, sizes[lvl])}"
        )
      if codes is None:
        ok = jnp.broadcast_to(mask[:, None, :], (b, w_in, c))
      else:
        ok = beam_step.per_query_take(mask, codes)
      valid = ok if valid is None else valid & ok
    cand = beam_scores[..., None] + cand_lp  # [B, W_in, C]
    if valid is not None:
      cand = jnp.where(valid, cand, neg_inf)
    # The W_out best of the W_in * C candidates: [B, W_out].
    top_s, top_i = jax.lax.top_k(cand.reshape(b, w_in * c), w_out)
    alive = top_s > neg_inf
    parent = top_i // c  # [B, W_out] beam (of W_in) each winner extends
    if codes is None:
      new_code = top_i % c
    else:
      new_code = jnp.take_along_axis(codes.reshape(b, -1), top_i, 1)
    new_code = jnp.where(alive, new_code, -1)  # [B, W_out]
    beam_codes = jnp.concatenate(
      [beam_step.gather_beams(beam_codes, parent), new_code[..., None]], axis=-1
    )  # [B, W_out, l + 1]
    if child is not None:
      new_node = jnp.take_along_axis(child.reshape(b, -1), top_i, 1)
      beam_node = jnp.where(alive, new_node, 0)
    else:
      beam_node = jnp.zeros((b, w_out), jnp.int32)
    beam_scores = top_s
    beam_tokens = jnp.where(alive, offsets[lvl] + new_code, 0).astype(jnp.int32)
    if lvl + 1 < s:  # the next step's cache: positions 1..l + 1 by parent
      kv = [
        (
          k0,
          v0,
          *(None if a is None else beam_step.gather_beams(a, parent) for a in (kr, vr)),
        )
        for k0, v0, kr, vr in kv
      ]
  # [B, W_S'] -> padded to [B, W] below.
  alive = beam_scores > neg_inf
  off = jnp.asarray(offsets[:s], jnp.int32)
  tokens = jnp.where(alive[..., None], beam_codes + off, 0).astype(jnp.int32)
  codes = jnp.where(alive[..., None], beam_codes, -1)
  scores = beam_scores
  if trie is not None and s == trie.depth:
    sid_index = jnp.where(alive, beam_node, -1).astype(jnp.int32)
  else:
    sid_index = jnp.full(scores.shape, -1, jnp.int32)
  pad = w - scores.shape[1]
  if pad:  # fewer distinct prefixes than beams: padding beams
    tokens = jnp.pad(tokens, ((0, 0), (0, pad), (0, 0)))
    codes = jnp.pad(codes, ((0, 0), (0, pad), (0, 0)), constant_values=-1)
    scores = jnp.pad(scores, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    sid_index = jnp.pad(sid_index, ((0, 0), (0, pad)), constant_values=-1)
  return BeamResult(tokens=tokens, codes=codes, scores=scores, sid_index=sid_index)


def _blocked(x: jax.Array, n_blocks: int) -> jax.Array:
  """[B, ...] -> [n_blocks, B / n_blocks, ...], block j = rows j, j + n_blocks,
  ... (strided: a block spreads over the shards of a sharded batch axis)."""
  b = x.shape[0]
  x = x.reshape((b // n_blocks, n_blocks) + x.shape[1:])
  return jnp.swapaxes(x, 0, 1)


def _unblocked(x: jax.Array) -> jax.Array:
  """Inverse of `_blocked`."""
  x = jnp.swapaxes(x, 0, 1)
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def num_query_blocks(batch: int, query_block: int | None, shards: int = 1) -> int:
  """Blocks the beam loop runs one after another (lax.map): the largest
  n <= batch / (query_block * shards) that divides batch / shards (1 when
  query_block is None or >= the per-shard batch)."""
  per_shard = batch // shards if shards and batch % shards == 0 else batch
  if query_block is None or query_block >= per_shard or query_block < 1:
    return 1
  n = per_shard // query_block
  while per_shard % n:
    n -= 1
  return max(n, 1)


def search(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex | None,
  *,
  beam_size: int,
  num_steps: int | None = None,
  allowed_items: jax.Array | None = None,
  level_masks: Sequence[jax.Array | None] | None = None,
  query_block: int | None = None,
  batch_shards: int = 1,
  prefix: tuple[jax.Array, jax.Array] | None = None,
  thought: ThoughtConfig | None = None,
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
    query_block: queries (per batch shard) whose beams are decoded together;
      the batch's blocks run one after another (`lax.map`), which keeps the
      [block, H, W, L] cross-attention tensors in cache (None: one block).
      The encoder always runs on the whole batch. Results do not depend on it
      beyond float rounding.
    batch_shards: how many shards the batch axis is split over (blocks take
      rows from every shard).
    prefix: None, or (tokens [B, P] int32, mask [B, P] bool): a decoder
      prefix per query, left-padded (``thought.left_aligned_prefix``); the
      SID continues it. A prefix of BOS alone ([B, 1], mask True) gives the
      plain search's beams (up to float rounding).
    thought: None, or the settings of a greedy thought decoded first
      (``thought.greedy_thought``) whose span becomes the prefix (direct
      CoT); the result's ``thought`` holds it. Not with ``prefix``.

  Returns:
    BeamResult with S' = num_steps columns.
  """
  offsets, sizes = beam_step.level_layout(model, trie)
  s = len(sizes) if num_steps is None else int(num_steps)
  if not 1 <= s <= len(sizes):
    raise ValueError(f"num_steps {num_steps} not in [1, {len(sizes)}]")
  if beam_size < 1:
    raise ValueError(f"beam_size {beam_size} < 1")
  if allowed_items is not None and trie is None:
    raise ValueError("allowed_items needs a trie (constrained mode)")
  if level_masks is not None and len(level_masks) < s:
    raise ValueError(f"level_masks has {len(level_masks)} entries for {s} steps")
  for lvl in range(s):
    beam_step.check_level(model, lvl, offsets[lvl], sizes[lvl])
  if prefix is not None and thought is not None:
    raise ValueError("search: give prefix or thought, not both")
  enc_out, enc_mask = model.encode(batch)
  cross = model.cross_kv(enc_out)
  b = enc_out.shape[0]
  span = None
  if thought is not None:
    span, lengths = thought_lib.greedy_thought(model, enc_out, enc_mask, thought)
    prefix = thought_lib.left_aligned_prefix(span, lengths)
  if prefix is not None:
    prefix = (jnp.asarray(prefix[0], jnp.int32), jnp.asarray(prefix[1], bool))
    if (
      prefix[0].ndim != 2
      or prefix[0].shape[0] != b
      or prefix[1].shape != prefix[0].shape
    ):
      raise ValueError(
        f"prefix tokens {prefix[0].shape} and mask {prefix[1].shape} must both "
        f"be [B={b}, P]"
      )
  allowed = None
  if allowed_items is not None:  # [B, n_l] per depth l = 1..S'
    allowed = [a.T for a in beam_step.node_allowance(trie, allowed_items)[1 : s + 1]]
  masks = None
  if level_masks is not None:
    masks = [None if m is None else jnp.asarray(m) for m in level_masks[:s]]
  kw = dict(w=beam_size, s=s, offsets=offsets, sizes=sizes)
  n = num_query_blocks(b, query_block, batch_shards)
  if n == 1:
    out = _beam_loop(model, trie, cross, enc_mask, allowed, masks, prefix, **kw)
  else:

    def body(args):
      return _beam_loop(model, trie, *args, **kw)

    args = (cross, enc_mask, allowed, masks, prefix)
    out = jax.tree.map(_unblocked, jax.lax.map(body, jax.tree.map(
      lambda x: _blocked(x, n), args
    )))  # fmt: skip
  return out if span is None else dataclasses.replace(out, thought=span)


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
  query_block: int | None = DEFAULT_QUERY_BLOCK
  thought: ThoughtConfig | None = None  # direct CoT: a greedy thought first

  def __post_init__(self):
    graphdef, w, steps = self.graphdef, self.beam_size, self.num_steps
    block, shards, thought = self.query_block, self.batch_shards(), self.thought

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
        query_block=block,
        batch_shards=shards,
        thought=thought,
      )

    self.fn = jax.jit(run)

  def batch_shards(self) -> int:
    """How many shards the batch axis is split over (1 without a mesh)."""
    if self.mesh is None:
      return 1
    axes = sh.logical_to_spec((sh.BATCH,), self.rules)[0]
    if axes is None:
      return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return int(np.prod([self.mesh.shape[a] for a in axes]))

  def with_trie(self, trie: TrieIndex | None) -> BeamSearcher:
    """Same compiled search on another trie (no recompile at equal shapes)."""
    out = dataclasses.replace(self, trie=self._place(trie))
    out.fn = self.fn
    return out

  def with_model(self, model: EncoderDecoder) -> BeamSearcher:
    """Same compiled search with another model of the same shapes: its state
    is placed like this one's (replicated on the mesh); no recompile."""
    out = dataclasses.replace(self, state=self._place(nnx.state(model)))
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
  query_block: int | None = DEFAULT_QUERY_BLOCK,
  thought: ThoughtConfig | None = None,
) -> BeamSearcher:
  """Compiles (lazily, on the first call) a reusable beam search.

  Args:
    model: the EncoderDecoder; its state is captured now (`with_model`
      swaps in another model of the same shapes, e.g. after training further).
    trie: catalogue trie (constrained) or None (unconstrained).
    beam_size: W (1..512 and more; cost grows with W * K_l).
    num_steps: SID steps (default: all levels).
    mesh: optional mesh; the batch is split over its batch axes (`rules`),
      the model state and trie are replicated (dp rules).
    rules: logical axis rules (default dp).
    query_block: queries per shard decoded together (see `search`); None =
      the whole batch at once.
    thought: direct CoT: decode a greedy thought before the SID (see
      `search`); None = the plain search.

  Returns:
    A BeamSearcher: `searcher(batch, allowed_items=None, level_masks=None)`
    -> BeamResult.
  """
  graphdef, state = nnx.split(model)
  rules = rules if rules is not None else sh.DP_RULES
  out = BeamSearcher(
    graphdef, state, None, beam_size, num_steps, mesh, rules,
    query_block=query_block, thought=thought,
  )  # fmt: skip
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
