"""Trie-constrained sampling of SIDs, and teacher-forced scoring of them.

The rollouts of GRPO (SPEC §6.5, pars/grpo.py): G completions per prompt,
each a catalogue SID drawn level by level from the model's distribution
restricted to the trie.

At SID level l, a rollout at trie node n draws its code from

  q_l(c | n) = softmax over the valid children c of n of (log p_l(c) / T)

where log p_l is the model's log-softmax at level l (`beam_step.level_log_probs`,
the same numbers the beam search scores) and T the temperature. Since the
softmax is taken over the children only, the level-range normalisation of
p_l cancels: q_l is the model's logits at level l, divided by T, masked to
the children and renormalised. T = 0 is greedy (argmax of p_l over the
children); the log-probs then reported are those of q_l at T = 1.

`sample` reuses the beam search's pieces (`beam_step.level_log_probs` and its
per-position KV cache, `beam_step.candidates` for the children of a node):
the encoder and the cross-attention K/V run once per prompt, position 0 (BOS)
is decoded once per prompt, and from level 1 on the G rollouts of a prompt are
G independent beams (no reordering of the cache: rollout g extends rollout g).

`constrained_log_probs` scores given SIDs teacher-forced (one full decoder
pass, differentiable) under the same q_l: the GRPO loss's log π.

Shapes: B prompts, G rollouts, S SID levels, V_l codes of level l.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.decoding import beam_step
from onesearch_jax.decoding.trie import TrieIndex
from onesearch_jax.model import layers
from onesearch_jax.model.transformer import EncoderDecoder


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampleResult:
  """G sampled SIDs per prompt.

  Attributes:
    tokens: [B, G, S] int32 vocabulary ids.
    codes: [B, G, S] int32 level-local codes.
    log_probs: [B, G, S] float32 log q_l of each drawn code (the sampling
      policy; at T = 0 the T = 1 policy's).
    sid_index: [B, G] int32 trie leaf (row of the trie's unique codes); a
      sample is always a catalogue SID, so never -1.
  """

  tokens: jax.Array
  codes: jax.Array
  log_probs: jax.Array
  sid_index: jax.Array


def _masked_log_q(cand: jax.Array, valid: jax.Array, temperature: float):
  """log q over the candidates: log_softmax(cand / T) on the valid ones.

  Args:
    cand: [..., C] level log-probs (or logits) of the candidates.
    valid: [..., C] bool.
    temperature: T > 0 (T = 0 uses 1 here).

  Returns:
    [..., C] float32, -inf on invalid candidates.
  """
  t = temperature if temperature > 0 else 1.0
  scaled = jnp.where(valid, cand.astype(jnp.float32) / t, -jnp.inf)
  return jax.nn.log_softmax(scaled, axis=-1)


def _chosen_child(child, codes, valid, code):
  """The child id of each row's code (-1 if the code is not a child).

  child / codes / valid: [..., C] from `beam_step.candidates` (codes None on a
  dense depth: the column is the code); code: [...] int32.
  """
  if codes is None:
    return jnp.take_along_axis(child, code[..., None], axis=-1)[..., 0]
  hit = valid & (codes == code[..., None])
  return jnp.where(hit.any(-1), jnp.sum(jnp.where(hit, child, 0), axis=-1), -1)


def sample(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex,
  key: jax.Array,
  *,
  num_samples: int,
  temperature: float = 1.0,
) -> SampleResult:
  """G trie-constrained samples per prompt (traceable; `sample_sids` jits it).

  Args:
    model: the EncoderDecoder (deterministic use: no dropout).
    batch: 'encoder_input_tokens' [B, L], optional 'long_seq_features'.
    trie: the catalogue trie (a sample is always one of its SIDs).
    key: PRNG key; level l draws with fold_in(key, l).
    num_samples: G.
    temperature: T >= 0 (0 = greedy: the G samples are equal).

  Returns:
    SampleResult with [B, G, S] tokens, codes and log-probs.
  """
  if num_samples < 1:
    raise ValueError(f"sample: num_samples must be >= 1, got {num_samples}")
  if temperature < 0:
    raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
  offsets, sizes = trie.token_offsets, trie.level_sizes
  enc_out, enc_mask = model.encode(batch)
  cross = model.cross_kv(enc_out)
  b, g = enc_out.shape[0], num_samples
  cross_bias = jnp.where(enc_mask, 0.0, layers.NEG_INF).astype(jnp.float32)
  cross_bias = cross_bias[:, None, None, :]  # [B, 1, 1, L]
  kv = [None] * len(cross)
  tokens = jnp.zeros((b, 1), jnp.int32)  # BOS, decoded once per prompt
  node = jnp.zeros((b, g), jnp.int32)
  out_codes, out_lp = [], []
  for lvl in range(trie.depth):
    lp, kv = beam_step.level_log_probs(
      model, tokens, kv, cross, cross_bias, lvl, offsets[lvl], sizes[lvl]
    )  # [B, 1 or G, V_l]
    lp = jnp.broadcast_to(lp, (b, g, lp.shape[-1]))
    child, codes, cand, valid = beam_step.candidates(trie, lvl, node, lp, sizes[lvl])
    log_q = _masked_log_q(cand, valid, temperature)  # [B, G, C]
    if temperature > 0:
      pick = jax.random.categorical(jax.random.fold_in(key, lvl), log_q, axis=-1)
    else:
      pick = jnp.argmax(log_q, axis=-1)
    pick = pick.astype(jnp.int32)  # [B, G] candidate column
    code = (
      pick if codes is None else jnp.take_along_axis(codes, pick[..., None], -1)[..., 0]
    )
    out_lp.append(jnp.take_along_axis(log_q, pick[..., None], -1)[..., 0])
    out_codes.append(code.astype(jnp.int32))
    node = jnp.take_along_axis(child, pick[..., None], -1)[..., 0]
    tokens = (offsets[lvl] + code).astype(jnp.int32)
  codes = jnp.stack(out_codes, axis=-1)
  off = jnp.asarray(offsets, jnp.int32)
  return SampleResult(
    tokens=codes + off,
    codes=codes,
    log_probs=jnp.stack(out_lp, axis=-1),
    sid_index=node.astype(jnp.int32),
  )


def constrained_log_probs(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex,
  tokens: jax.Array,
  *,
  temperature: float = 1.0,
  key: jax.Array | None = None,
) -> jax.Array:
  """Teacher-forced log q_l of given SIDs (differentiable).

  The encoder runs once per prompt and its output is repeated for the G
  SIDs; one decoder pass scores all S positions. Level l's logits are the
  level's vocabulary slice, divided by T, masked to the children of the SID's
  prefix node and renormalised (the sampling policy of `sample`).

  Args:
    model: the EncoderDecoder.
    batch: 'encoder_input_tokens' [B, L], optional 'long_seq_features'.
    trie: the catalogue trie.
    tokens: [B, G, S] int32 vocabulary ids of catalogue SIDs (a path off the
      trie gets -inf at its first missing level and after).
    temperature: T (0 scores as 1, as `sample` reports).
    key: dropout key (None: deterministic).

  Returns:
    [B, G, S] float32 log-probs.
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  b, g, s = tokens.shape
  if s != trie.depth:
    raise ValueError(
      f"constrained_log_probs: {s} tokens per SID, trie depth {trie.depth}"
    )
  enc_out, enc_mask = model.encode(batch, layers.fold(key, 0))
  enc_out = jnp.repeat(enc_out, g, axis=0)
  enc_mask = jnp.repeat(enc_mask, g, axis=0)
  flat = tokens.reshape(b * g, s)
  dec_in = jnp.concatenate([jnp.zeros((b * g, 1), jnp.int32), flat[:, :-1]], axis=1)
  all_logits = model.decode(dec_in, enc_out, enc_mask, layers.fold(key, 1))
  node = jnp.zeros((b * g,), jnp.int32)
  out = []
  for lvl in range(s):
    off, size = trie.token_offsets[lvl], trie.level_sizes[lvl]
    logits = all_logits[:, lvl, off : off + size]  # [BG, V_l]
    code = flat[:, lvl] - off
    on_trie = node >= 0
    safe = jnp.where(on_trie, node, 0)
    child, codes, cand, valid = beam_step.candidates(trie, lvl, safe, logits, size)
    log_q = _masked_log_q(cand, valid, temperature)  # [BG, C]
    if codes is None:
      col = jnp.clip(code, 0, size - 1)
    else:
      col = jnp.argmax(valid & (codes == code[:, None]), axis=-1)
    lq = jnp.take_along_axis(log_q, col[:, None], -1)[:, 0]
    nxt = _chosen_child(child, codes, valid, jnp.clip(code, 0, size - 1))
    node = jnp.where(on_trie & (code >= 0) & (code < size), nxt, -1)
    out.append(jnp.where(node >= 0, lq, -jnp.inf))
  return jnp.stack(out, axis=-1).reshape(b, g, s)


def sample_sids(
  model: EncoderDecoder,
  batch: Mapping[str, jax.Array],
  trie: TrieIndex,
  key: jax.Array,
  *,
  num_samples: int,
  temperature: float = 1.0,
  mesh: jax.sharding.Mesh | None = None,
) -> SampleResult:
  """One-shot jitted `sample` (compiles per call; tests and notebooks).

  Args:
    model, batch, trie, key, num_samples, temperature: as `sample`.
    mesh: optional mesh (default one device); model and trie replicated.
  """
  graphdef, state = nnx.split(model)
  inputs = {
    k: jnp.asarray(batch[k])
    for k in ("encoder_input_tokens", "long_seq_features")
    if k in batch
  }

  @jax.jit
  def run(state, trie, inputs, key):
    return sample(
      nnx.merge(graphdef, state),
      inputs,
      trie,
      key,
      num_samples=num_samples,
      temperature=temperature,
    )

  trie = jax.tree.map(jnp.asarray, trie)
  with jax.set_mesh(mesh if mesh is not None else sh.single_device_mesh()):
    return run(state, trie, inputs, key)
