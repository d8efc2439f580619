"""NNX layers with logical-axis annotations: Embed, RMSNorm, MLP, Attention.

Every parameter is created through `nnx.with_partitioning` with logical axis
names from `onesearch_jax.sharding`, so a model built under
`jax.set_mesh(mesh)` + `nnx.logical_axis_rules(rules)` comes out sharded.
Dropout takes an explicit PRNG key (None = deterministic), so modules hold no
RNG state and stay tree-mode friendly.

Shape letters: B batch, T query length, S key length, D model, H heads,
K head dim, F MLP hidden, V vocab.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax import sharding as sh

# Large negative used instead of -inf so masked softmax rows never produce NaN.
NEG_INF = -1e30


def param(rngs: nnx.Rngs, init, shape, axes, dtype) -> nnx.Param:
  """A parameter initialised by `init` with logical axes `axes`."""
  return nnx.Param(nnx.with_partitioning(init, axes)(rngs.params(), shape, dtype))


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when key is None or rate == 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def fold(key: jax.Array | None, i: int) -> jax.Array | None:
  """fold_in that passes None through (deterministic mode)."""
  return None if key is None else jax.random.fold_in(key, i)


class RMSNorm(nnx.Module):
  """T5 layer norm: x / rms(x) * scale (no mean subtraction, no bias)."""

  def __init__(self, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs, eps=1e-6):
    self.scale = param(rngs, nnx.initializers.ones, (dim,), (sh.NORM,), param_dtype)
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., D] -> [..., D] in self.dtype (statistics in float32)."""
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    scale = self.scale[...].astype(jnp.float32).reshape((1,) * (x.ndim - 1) + (-1,))
    return (y * scale).astype(self.dtype)


class Embed(nnx.Module):
  """Token embedding [V, D]; `attend` gives tied-embedding logits."""

  def __init__(self, vocab: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    init = nnx.initializers.normal(stddev=1.0)
    self.embedding = param(rngs, init, (vocab, dim), (sh.VOCAB, sh.EMBED), param_dtype)
    self.dtype = dtype

  def __call__(self, ids: jax.Array) -> jax.Array:
    """ids [B, L] int -> [B, L, D]."""
    # NOTE: gather the table's D axis first (what FSDP does for every weight);
    # looking up rows of a D-sharded table would give a D-sharded activation
    # that XLA can only turn into a batch-sharded one by full replication.
    table = sh.constrain(self.embedding[...], (sh.VOCAB, None)).astype(self.dtype)
    return jnp.take(table, ids, axis=0)

  def attend(self, x: jax.Array) -> jax.Array:
    """x [B, T, D] -> logits [B, T, V] (float32)."""
    table = self.embedding[...].astype(self.dtype)
    return jnp.einsum("btd,vd->btv", x, table).astype(jnp.float32)


class MLP(nnx.Module):
  """T5 1.1 gated-GELU feed-forward: wo(gelu(x wi_0) * (x wi_1))."""

  def __init__(self, dim, hidden, *, dropout_rate, dtype, param_dtype, rngs):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    self.wi_0 = param(rngs, init, (dim, hidden), (sh.EMBED, sh.MLP), param_dtype)
    self.wi_1 = param(rngs, init, (dim, hidden), (sh.EMBED, sh.MLP), param_dtype)
    self.wo = param(rngs, init, (hidden, dim), (sh.MLP, sh.EMBED), param_dtype)
    self.dropout_rate = dropout_rate
    self.dtype = dtype

  def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """x [B, T, D] -> [B, T, D]."""
    d = self.dtype
    gate = jnp.einsum("btd,df->btf", x, self.wi_0[...].astype(d))
    lin = jnp.einsum("btd,df->btf", x, self.wi_1[...].astype(d))
    h = jax.nn.gelu(gate, approximate=True) * lin
    h = sh.constrain(h, (sh.BATCH, sh.LENGTH, sh.ACT_MLP))
    h = dropout(h, self.dropout_rate, key)
    return jnp.einsum("btf,fd->btd", h, self.wo[...].astype(d))


class Attention(nnx.Module):
  """Multi-head dot-product attention with separate q/k/v/o projections.

  Logits are scaled by K**-0.5; additive `bias` carries masks and the
  relative position bias. Softmax runs in float32.
  """

  def __init__(self, dim, heads, head_dim, *, dropout_rate, dtype, param_dtype, rngs):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    qkv_axes = (sh.EMBED, sh.HEADS, sh.KV)
    self.query = param(rngs, init, (dim, heads, head_dim), qkv_axes, param_dtype)
    self.key = param(rngs, init, (dim, heads, head_dim), qkv_axes, param_dtype)
    self.value = param(rngs, init, (dim, heads, head_dim), qkv_axes, param_dtype)
    out_init = nnx.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2
    )
    self.out = param(
      rngs, out_init, (heads, head_dim, dim), (sh.HEADS, sh.KV, sh.EMBED), param_dtype
    )
    self.dropout_rate = dropout_rate
    self.dtype = dtype
    self.head_dim = head_dim

  def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, S, D] -> (k, v), each [B, S, H, K]."""
    d = self.dtype
    k = jnp.einsum("bsd,dhk->bshk", x, self.key[...].astype(d))
    v = jnp.einsum("bsd,dhk->bshk", x, self.value[...].astype(d))
    return k, v

  def attend(
    self,
    x_q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array,
    key: jax.Array | None = None,
  ) -> jax.Array:
    """Attention of queries from x_q over precomputed keys/values.

    Args:
      x_q: [B, T, D] query-side input.
      k: [B, S, H, K] keys.
      v: [B, S, H, K] values.
      bias: additive, broadcastable to [B, H, T, S] (0 keep, NEG_INF mask).
      key: dropout key on the attention weights (None: deterministic).

    Returns:
      [B, T, D].
    """
    d = self.dtype
    q = jnp.einsum("btd,dhk->bthk", x_q, self.query[...].astype(d))
    q = sh.constrain(q, (sh.BATCH, sh.LENGTH, sh.ACT_HEADS, sh.ACT_KV))
    logits = jnp.einsum("bthk,bshk->bhts", q, k).astype(jnp.float32)
    logits = logits * (self.head_dim**-0.5) + bias.astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = dropout(weights, self.dropout_rate, key).astype(d)
    ctx = jnp.einsum("bhts,bshk->bthk", weights, v)
    return jnp.einsum("bthk,hkd->btd", ctx, self.out[...].astype(d))

  def __call__(self, x_q, x_kv, bias, key=None) -> jax.Array:
    """x_q [B, T, D], x_kv [B, S, D], bias ~[B, H, T, S] -> [B, T, D]."""
    k, v = self.project_kv(x_kv)
    return self.attend(x_q, k, v, bias, key)


def relative_position_bucket(
  relative_position: jax.Array,
  *,
  bidirectional: bool,
  num_buckets: int,
  max_distance: int,
) -> jax.Array:
  """T5 relative-position bucketing (exact for small, log-spaced for large).

  Args:
    relative_position: int array, key_position - query_position.
    bidirectional: encoder (True) or causal decoder (False).
    num_buckets: total buckets.
    max_distance: distances >= this share the last bucket.

  Returns:
    int32 bucket ids of the same shape.
  """
  n = -relative_position
  ret = jnp.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    ret = ret + (n < 0).astype(n.dtype) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  n_safe = jnp.maximum(n, 1).astype(jnp.float32)
  large = max_exact + (
    jnp.log(n_safe / max_exact)
    / jnp.log(max_distance / max_exact)
    * (num_buckets - max_exact)
  ).astype(n.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return (ret + jnp.where(is_small, n, large)).astype(jnp.int32)


class RelativePositionBias(nnx.Module):
  """Learned per-head bias indexed by bucketed relative position (T5)."""

  def __init__(
    self, num_buckets, max_distance, heads, *, bidirectional, param_dtype, rngs
  ):
    init = nnx.initializers.normal(stddev=1.0)
    self.embedding = param(
      rngs, init, (num_buckets, heads), (sh.REL_BUCKETS, sh.HEADS), param_dtype
    )
    self.num_buckets = num_buckets
    self.max_distance = max_distance
    self.bidirectional = bidirectional

  def __call__(self, q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
    """q_pos [T], k_pos [S] int -> bias [1, H, T, S] float32."""
    buckets = relative_position_bucket(
      k_pos[None, :] - q_pos[:, None],
      bidirectional=self.bidirectional,
      num_buckets=self.num_buckets,
      max_distance=self.max_distance,
    )
    values = jnp.take(self.embedding[...].astype(jnp.float32), buckets, axis=0)
    return jnp.transpose(values, (2, 0, 1))[None]
