"""Q-Former: compresses the 9 long-sequence vectors into N_M embeddings.

SPEC 3.3: per sequence type (click, order, RSU) and RQ level the item
centroid embeddings are summed, giving 9 vectors M [B, 9, D_seq]. N_M learned
query tokens cross-attend to the projected M, each layer followed by a
gated-GELU FFN with RMSNorm (the OneRec-style block); the outputs are spliced
into the encoder input embeddings (see `splice_query_embeddings`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import layers
from onesearch_jax.model.configs import ModelConfig


class QFormerLayer(nnx.Module):
  """Pre-norm cross-attention (queries -> memory) then pre-norm FFN."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm_q = layers.RMSNorm(cfg.d_model, **kw)
    self.cross = layers.Attention(
      cfg.d_model, cfg.num_heads, cfg.head_dim, dropout_rate=cfg.dropout_rate, **kw
    )
    self.norm_ff = layers.RMSNorm(cfg.d_model, **kw)
    self.mlp = layers.MLP(cfg.d_model, cfg.d_ff, dropout_rate=cfg.dropout_rate, **kw)
    self.dropout_rate = cfg.dropout_rate

  def __call__(self, q, memory, key=None):
    """q [B, N_M, D], memory [B, 9, D] -> [B, N_M, D]."""
    zero_bias = jnp.zeros((1, 1, 1, 1), jnp.float32)
    h = self.cross(self.norm_q(q), memory, zero_bias, layers.fold(key, 0))
    q = q + layers.dropout(h, self.dropout_rate, layers.fold(key, 1))
    h = self.mlp(self.norm_ff(q), layers.fold(key, 2))
    return q + layers.dropout(h, self.dropout_rate, layers.fold(key, 3))


class QFormer(nnx.Module):
  """N_M learned queries over the projected long-sequence vectors."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.queries = layers.param(
      rngs,
      nnx.initializers.normal(stddev=1.0),
      (cfg.num_query_tokens, cfg.d_model),
      (sh.QUERIES, sh.EMBED),
      param_dtype,
    )
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    self.proj = layers.param(
      rngs,
      init,
      (cfg.seq_feature_dim, cfg.d_model),
      (sh.SEQ_FEATURES, sh.EMBED),
      param_dtype,
    )
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.memory_norm = layers.RMSNorm(cfg.d_model, **kw)
    self.layers = nnx.List([QFormerLayer(cfg, **kw) for _ in range(cfg.qformer_layers)])
    self.final_norm = layers.RMSNorm(cfg.d_model, **kw)
    self.dtype = dtype
    self.num_seq_vectors = cfg.num_seq_vectors

  def __call__(self, features: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """features [B, 9, D_seq] -> query embeddings [B, N_M, D]."""
    if features.ndim != 3 or features.shape[1] != self.num_seq_vectors:
      raise ValueError(
        f"long_seq_features must be [B, {self.num_seq_vectors}, D_seq], "
        f"got {features.shape}"
      )
    # NOTE: sums over up to 1e3 items can be large; RMSNorm after the
    # projection makes the memory scale-free (SPEC open question 5).
    memory = jnp.einsum(
      "bnf,fd->bnd", features.astype(self.dtype), self.proj[...].astype(self.dtype)
    )
    memory = self.memory_norm(memory)
    b = features.shape[0]
    q = jnp.broadcast_to(
      self.queries[...].astype(self.dtype)[None], (b, *self.queries.shape)
    )
    for i, layer in enumerate(self.layers):
      q = layer(q, memory, layers.fold(key, i))
    return self.final_norm(q)


def splice_query_embeddings(
  x: jax.Array,
  mask: jax.Array,
  tokens: jax.Array,
  queries: jax.Array,
  placeholder_id: int,
) -> tuple[jax.Array, jax.Array]:
  """Puts Q-Former outputs into the encoder input embeddings.

  The i-th occurrence of `placeholder_id` in a row is replaced by query i
  (occurrences beyond N_M keep the placeholder's token embedding). N_M slots
  are always prepended so shapes stay static: they are attended to (mask
  True) only in rows with no placeholder, which realises "prepend when the
  placeholder is absent" per row. With placeholder_id < 0 every row uses the
  prepended slots.

  Args:
    x: [B, L, D] token embeddings.
    mask: [B, L] bool, True for real tokens.
    tokens: [B, L] int token ids.
    queries: [B, N_M, D] Q-Former outputs.
    placeholder_id: the placeholder token id, or -1.

  Returns:
    (x [B, N_M + L, D], mask [B, N_M + L]).
  """
  b, n = queries.shape[:2]
  queries = queries.astype(x.dtype)
  if placeholder_id >= 0:
    is_ph = tokens == placeholder_id
    occurrence = jnp.cumsum(is_ph, axis=1) - 1  # [B, L]
    use = is_ph & (occurrence < n)
    idx = jnp.clip(occurrence, 0, n - 1)
    picked = jnp.take_along_axis(queries, idx[:, :, None], axis=1)  # [B, L, D]
    x = jnp.where(use[:, :, None], picked, x)
    prefix_on = ~jnp.any(is_ph, axis=1)  # [B]
  else:
    prefix_on = jnp.ones((b,), bool)
  prefix_mask = jnp.broadcast_to(prefix_on[:, None], (b, n))
  return (
    jnp.concatenate([queries, x], axis=1),
    jnp.concatenate([prefix_mask, mask], axis=1),
  )
