"""T5-1.1-style encoder-decoder with Q-Former injection and a KV cache.

Pre-norm residual blocks (RMSNorm), bucketed relative position bias (one
table per stack, shared by its layers, as in T5), gated-GELU MLP, shared
input embedding for encoder and decoder, tied or untied output logits.

The encoder runs separately (`encode`) so decoding can reuse its output;
`decode_step` advances the decoder by one token with a functional KV cache
(a pytree `{'index': int32[], 'layers': ({'k', 'v'} [B, max_len, H, K], ...)}`
that beam search may gather along the batch axis).

Shape letters: B batch, L encoder length, T decoder length, D model, V vocab,
H heads, K head dim, N_M Q-Former queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import layers, qformer, sid_levels
from onesearch_jax.model.configs import ModelConfig

Cache = dict[str, Any]
_ACT = (sh.BATCH, sh.LENGTH, sh.ACT_EMBED)


def _dtypes(cfg: ModelConfig):
  return jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)


class EncoderLayer(nnx.Module):
  """Self-attention + MLP, each pre-norm with a residual."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dtype, pdtype = _dtypes(cfg)
    kw = dict(dtype=dtype, param_dtype=pdtype, rngs=rngs)
    self.norm_attn = layers.RMSNorm(cfg.d_model, **kw)
    self.attn = layers.Attention(
      cfg.d_model, cfg.num_heads, cfg.head_dim, dropout_rate=cfg.dropout_rate, **kw
    )
    self.norm_mlp = layers.RMSNorm(cfg.d_model, **kw)
    self.mlp = layers.MLP(cfg.d_model, cfg.d_ff, dropout_rate=cfg.dropout_rate, **kw)
    self.rate = cfg.dropout_rate

  def __call__(self, x, bias, key=None):
    """x [B, L, D], bias [B, H, L, L] -> [B, L, D]."""
    h = self.norm_attn(x)
    x = x + layers.dropout(
      self.attn(h, h, bias, layers.fold(key, 0)), self.rate, layers.fold(key, 1)
    )
    h = self.mlp(self.norm_mlp(x), layers.fold(key, 2))
    x = x + layers.dropout(h, self.rate, layers.fold(key, 3))
    return sh.constrain(x, _ACT)


class DecoderLayer(nnx.Module):
  """Causal self-attention, cross-attention, MLP; pre-norm residuals."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dtype, pdtype = _dtypes(cfg)
    kw = dict(dtype=dtype, param_dtype=pdtype, rngs=rngs)
    attn_kw = dict(dropout_rate=cfg.dropout_rate, **kw)
    self.norm_self = layers.RMSNorm(cfg.d_model, **kw)
    self.self_attn = layers.Attention(
      cfg.d_model, cfg.num_heads, cfg.head_dim, **attn_kw
    )
    self.norm_cross = layers.RMSNorm(cfg.d_model, **kw)
    self.cross_attn = layers.Attention(
      cfg.d_model, cfg.num_heads, cfg.head_dim, **attn_kw
    )
    self.norm_mlp = layers.RMSNorm(cfg.d_model, **kw)
    self.mlp = layers.MLP(cfg.d_model, cfg.d_ff, dropout_rate=cfg.dropout_rate, **kw)
    self.rate = cfg.dropout_rate

  def __call__(self, x, self_k, self_v, self_bias, enc_out, cross_bias, key=None):
    """One decoder layer given the self-attention keys/values.

    Args:
      x: [B, T, D] decoder stream.
      self_k: [B, S, H, K] self-attention keys (S = T, or max_len with a cache).
      self_v: [B, S, H, K] values.
      self_bias: [B or 1, H, T, S] causal mask + relative position bias.
      enc_out: [B, L, D] encoder output.
      cross_bias: [B, 1, 1, L] encoder padding mask.
      key: dropout key or None.

    Returns:
      [B, T, D].
    """
    h = self.norm_self(x)
    h = self.self_attn.attend(h, self_k, self_v, self_bias, layers.fold(key, 0))
    x = x + layers.dropout(h, self.rate, layers.fold(key, 1))
    h = self.cross_attn(self.norm_cross(x), enc_out, cross_bias, layers.fold(key, 2))
    x = x + layers.dropout(h, self.rate, layers.fold(key, 3))
    h = self.mlp(self.norm_mlp(x), layers.fold(key, 4))
    x = x + layers.dropout(h, self.rate, layers.fold(key, 5))
    return sh.constrain(x, _ACT)

  def beam_step(self, x, self_k, self_v, self_bias, cross_k, cross_v, cross_bias):
    """One decoder layer for W beams per query, cross-attention K/V shared.

    The W beams of a query attend to the same encoder keys/values: the beam
    axis plays the role of the query-length axis of the cross-attention, so
    the [B, L, H, K] cross K/V are never tiled per beam.

    Args:
      x: [B, W, D] decoder stream, one position per beam.
      self_k: [B*W, S, H, K] self-attention cache keys (beam-major rows).
      self_v: [B*W, S, H, K] values.
      self_bias: [1, H, 1, S] visibility mask + relative position bias.
      cross_k: [B, L, H, K] cross-attention keys (from `cross_kv`).
      cross_v: [B, L, H, K] values.
      cross_bias: [B, 1, 1, L] encoder padding mask.

    Returns:
      [B, W, D].
    """
    b, w, d = x.shape
    h = self.norm_self(x).reshape(b * w, 1, d)
    h = self.self_attn.attend(h, self_k, self_v, self_bias)
    x = x + h.reshape(b, w, d)
    x = x + self.cross_attn.attend(self.norm_cross(x), cross_k, cross_v, cross_bias)
    x = x + self.mlp(self.norm_mlp(x))
    return sh.constrain(x, _ACT)


def _padding_bias(mask: jax.Array) -> jax.Array:
  """mask [B, S] bool -> additive bias [B, 1, 1, S]."""
  return jnp.where(mask, 0.0, layers.NEG_INF).astype(jnp.float32)[:, None, None, :]


class EncoderDecoder(nnx.Module):
  """The OneSearch generator: T5-1.1 encoder-decoder + Q-Former."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype, pdtype = _dtypes(cfg)
    kw = dict(dtype=dtype, param_dtype=pdtype, rngs=rngs)
    self.embed = layers.Embed(cfg.vocab_size, cfg.d_model, **kw)
    self.qformer = qformer.QFormer(cfg, **kw) if cfg.use_qformer else None
    self.enc_rel = layers.RelativePositionBias(
      cfg.rel_buckets, cfg.rel_max_distance, cfg.num_heads,
      bidirectional=True, param_dtype=pdtype, rngs=rngs,
    )  # fmt: skip
    self.enc_layers = nnx.List(
      [EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_encoder_layers)]
    )
    self.enc_norm = layers.RMSNorm(cfg.d_model, **kw)
    self.dec_rel = layers.RelativePositionBias(
      cfg.rel_buckets, cfg.rel_max_distance, cfg.num_heads,
      bidirectional=False, param_dtype=pdtype, rngs=rngs,
    )  # fmt: skip
    self.dec_layers = nnx.List(
      [DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_decoder_layers)]
    )
    self.dec_norm = layers.RMSNorm(cfg.d_model, **kw)
    if cfg.tie_embeddings:
      self.logits_kernel = None
    else:
      init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
      self.logits_kernel = layers.param(
        rngs, init, (cfg.d_model, cfg.vocab_size), (sh.EMBED, sh.VOCAB), pdtype
      )

  # --- encoder -------------------------------------------------------------

  def embed_encoder_inputs(
    self,
    tokens: jax.Array,
    long_seq_features: jax.Array | None = None,
    key: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array]:
    """Token embeddings with the Q-Former outputs spliced in.

    Args:
      tokens: [B, L] int32 encoder tokens (0 = pad).
      long_seq_features: [B, 9, D_seq] or None (no Q-Former input).
      key: dropout key or None.

    Returns:
      (x [B, L', D], mask [B, L'] bool); L' = N_M + L with the Q-Former on.
    """
    x = self.embed(tokens)
    mask = tokens > 0
    if self.qformer is not None and long_seq_features is not None:
      q = self.qformer(long_seq_features, key)
      x, mask = qformer.splice_query_embeddings(
        x, mask, tokens, q, self.cfg.emb_placeholder_id
      )
    return x, mask

  def encode(
    self,
    batch: Mapping[str, jax.Array],
    key: jax.Array | None = None,
    input_delta: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array]:
    """Runs the encoder.

    Args:
      batch: needs 'encoder_input_tokens' [B, L]; optional
        'long_seq_features' [B, 9, D_seq].
      key: dropout key (None: deterministic).
      input_delta: optional [B, L', D] added to the input embeddings (after
        the Q-Former splice, before dropout): FGM's adversarial step.

    Returns:
      (encoder_out [B, L', D], encoder_mask [B, L'] bool).
    """
    tokens = jnp.asarray(batch["encoder_input_tokens"])
    feats = batch.get("long_seq_features")
    if feats is not None:
      feats = jnp.asarray(feats)
    x, mask = self.embed_encoder_inputs(tokens, feats, layers.fold(key, 0))
    if input_delta is not None:
      x = x + input_delta.astype(x.dtype)
    x = layers.dropout(x, self.cfg.dropout_rate, layers.fold(key, 1))
    x = sh.constrain(x, _ACT)
    pos = jnp.arange(x.shape[1])
    bias = self.enc_rel(pos, pos) + _padding_bias(mask)
    for i, layer in enumerate(self.enc_layers):
      x = layer(x, bias, layers.fold(key, 10 + i))
    x = self.enc_norm(x)
    x = layers.dropout(x, self.cfg.dropout_rate, layers.fold(key, 2))
    return sh.constrain(x, _ACT), mask

  # --- decoder -------------------------------------------------------------

  def logits(self, x: jax.Array) -> jax.Array:
    """Decoder output x [B, T, D] -> logits [B, T, V] float32."""
    if self.logits_kernel is None:
      # NOTE: T5 rescales tied logits by D**-0.5 since embeddings have std 1.
      out = self.embed.attend(x * (self.cfg.d_model**-0.5))
    else:
      out = jnp.einsum(
        "btd,dv->btv", x, self.logits_kernel[...].astype(x.dtype)
      ).astype(jnp.float32)
    return sh.constrain(out, (sh.BATCH, sh.LENGTH, sh.ACT_VOCAB))

  def decode(
    self,
    decoder_input_tokens: jax.Array,
    encoder_out: jax.Array,
    encoder_mask: jax.Array,
    key: jax.Array | None = None,
  ) -> jax.Array:
    """Teacher-forced decoder pass.

    Args:
      decoder_input_tokens: [B, T] int32 (shifted targets, 0 = BOS).
      encoder_out: [B, L, D].
      encoder_mask: [B, L] bool.
      key: dropout key or None.

    Returns:
      Raw logits [B, T, V] float32 (SID restriction is applied by the loss).
    """
    tokens = jnp.asarray(decoder_input_tokens)
    x = self.embed(tokens)
    x = layers.dropout(x, self.cfg.dropout_rate, layers.fold(key, 0))
    x = sh.constrain(x, _ACT)
    t = tokens.shape[1]
    pos = jnp.arange(t)
    causal = jnp.where(pos[None, :] <= pos[:, None], 0.0, layers.NEG_INF)
    self_bias = self.dec_rel(pos, pos) + causal[None, None]
    cross_bias = _padding_bias(encoder_mask)
    for i, layer in enumerate(self.dec_layers):
      k, v = layer.self_attn.project_kv(layer.norm_self(x))
      x = layer(x, k, v, self_bias, encoder_out, cross_bias, layers.fold(key, 10 + i))
    x = self.dec_norm(x)
    x = layers.dropout(x, self.cfg.dropout_rate, layers.fold(key, 1))
    return self.logits(x)

  def __call__(
    self,
    batch: Mapping[str, jax.Array],
    key: jax.Array | None = None,
    input_delta: jax.Array | None = None,
  ) -> jax.Array:
    """Full forward pass: batch -> raw logits [B, T, V] float32
    (``input_delta``: see ``encode``)."""
    enc_out, enc_mask = self.encode(batch, layers.fold(key, 0), input_delta)
    return self.decode(
      batch["decoder_input_tokens"], enc_out, enc_mask, layers.fold(key, 1)
    )

  # --- incremental decoding -----------------------------------------------

  def init_cache(self, batch_size: int, max_len: int) -> Cache:
    """Empty KV cache for `max_len` decoder positions.

    Returns:
      {'index': int32 scalar, 'layers': tuple of {'k', 'v'} [B, max_len, H, K]}.
    """
    shape = (batch_size, max_len, self.cfg.num_heads, self.cfg.head_dim)
    dtype = jnp.dtype(self.cfg.dtype)
    return {
      "index": jnp.zeros((), jnp.int32),
      "layers": tuple(
        {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
        for _ in self.dec_layers
      ),
    }

  def decode_step(
    self,
    tokens: jax.Array,
    cache: Cache,
    encoder_out: jax.Array,
    encoder_mask: jax.Array,
  ) -> tuple[jax.Array, Cache]:
    """Advances the decoder by one position (deterministic).

    Args:
      tokens: [B, 1] int32, the token at position cache['index'] (0 = BOS
        at the first step).
      cache: from `init_cache` or a previous step.
      encoder_out: [B, L, D].
      encoder_mask: [B, L] bool.

    Returns:
      (logits [B, V] float32 for the next token, the updated cache). With
      `restrict_sid_levels`, step t < n_levels only allows level t's range.
    """
    index = cache["index"]
    x = self.embed(jnp.asarray(tokens))
    max_len = cache["layers"][0]["k"].shape[1]
    k_pos = jnp.arange(max_len)
    visible = jnp.where(k_pos <= index, 0.0, layers.NEG_INF)
    self_bias = self.dec_rel(index[None], k_pos) + visible[None, None, None, :]
    cross_bias = _padding_bias(encoder_mask)
    new_layers = []
    for layer, lc in zip(self.dec_layers, cache["layers"], strict=True):
      k_new, v_new = layer.self_attn.project_kv(layer.norm_self(x))
      k = jax.lax.dynamic_update_slice_in_dim(
        lc["k"], k_new.astype(lc["k"].dtype), index, 1
      )
      v = jax.lax.dynamic_update_slice_in_dim(
        lc["v"], v_new.astype(lc["v"].dtype), index, 1
      )
      new_layers.append({"k": k, "v": v})
      x = layer(x, k, v, self_bias, encoder_out, cross_bias)
    logits = self.logits(self.dec_norm(x))[:, 0]
    if self.cfg.restrict_sid_levels:
      level = sid_levels.decode_step_level(index, self.cfg.sid_ranges)
      logits = sid_levels.restrict_logits(
        logits, jnp.broadcast_to(level, logits.shape[:1]), self.cfg.sid_ranges
      )
    return logits, {"index": index + 1, "layers": tuple(new_layers)}

  # --- beam decoding (encoder state shared by the beams of a query) --------

  def cross_kv(self, encoder_out: jax.Array) -> tuple[tuple[jax.Array, jax.Array]]:
    """Cross-attention keys/values of every decoder layer, computed once.

    Args:
      encoder_out: [B, L, D].

    Returns:
      One (k, v) pair per decoder layer, each [B, L, H, K].
    """
    return tuple(layer.cross_attn.project_kv(encoder_out) for layer in self.dec_layers)

  def logits_slice(self, x: jax.Array, start: int, end: int) -> jax.Array:
    """Logits of the ids [start, end) only: x [..., D] -> [..., end - start] f32.

    Equal to `logits(x)[..., start:end]` at a fraction of the cost; used when
    the softmax is restricted to one SID level's range.
    """
    if self.logits_kernel is None:
      table = self.embed.embedding[...][start:end].astype(x.dtype)
      out = jnp.einsum("...d,vd->...v", x * (self.cfg.d_model**-0.5), table)
    else:
      kernel = self.logits_kernel[...][:, start:end].astype(x.dtype)
      out = jnp.einsum("...d,dv->...v", x, kernel)
    return out.astype(jnp.float32)

  def beam_decode_step(
    self,
    tokens: jax.Array,
    cache: Cache,
    cross_kv: tuple[tuple[jax.Array, jax.Array], ...],
    encoder_mask: jax.Array,
    *,
    vocab_slice: tuple[int, int] | None = None,
  ) -> tuple[jax.Array, Cache]:
    """One decoder step for W beams per query (deterministic).

    Same function as `decode_step` on B*W rows whose encoder output is the
    query's, but the encoder side is not repeated per beam.

    Args:
      tokens: [B, W] int32, the token of each beam at position cache['index'].
      cache: self-attention cache from `init_cache(B * W, max_len)`, rows in
        beam-major order (row b * W + w).
      cross_kv: from `cross_kv(encoder_out)`, each [B, L, H, K].
      encoder_mask: [B, L] bool.
      vocab_slice: (start, end) static: return only those logits' columns.

    Returns:
      (logits [B, W, V] float32, or [B, W, end - start] with vocab_slice, and
      the updated cache). With `restrict_sid_levels` and no slice, step
      t < n_levels only allows level t's range, as in `decode_step`.
    """
    index = cache["index"]
    b, w = tokens.shape
    x = self.embed(jnp.asarray(tokens))
    max_len = cache["layers"][0]["k"].shape[1]
    k_pos = jnp.arange(max_len)
    visible = jnp.where(k_pos <= index, 0.0, layers.NEG_INF)
    self_bias = self.dec_rel(index[None], k_pos) + visible[None, None, None, :]
    cross_bias = _padding_bias(encoder_mask)
    new_layers = []
    for layer, lc, (ck, cv) in zip(
      self.dec_layers, cache["layers"], cross_kv, strict=True
    ):
      h = layer.norm_self(x).reshape(b * w, 1, -1)
      k_new, v_new = layer.self_attn.project_kv(h)
      k = jax.lax.dynamic_update_slice_in_dim(
        lc["k"], k_new.astype(lc["k"].dtype), index, 1
      )
      v = jax.lax.dynamic_update_slice_in_dim(
        lc["v"], v_new.astype(lc["v"].dtype), index, 1
      )
      new_layers.append({"k": k, "v": v})
      x = layer.beam_step(x, k, v, self_bias, ck, cv, cross_bias)
    x = self.dec_norm(x)
    new_cache = {"index": index + 1, "layers": tuple(new_layers)}
    if vocab_slice is not None:
      return self.logits_slice(x, *vocab_slice), new_cache
    logits = self.logits(x)
    if self.cfg.restrict_sid_levels:
      level = sid_levels.decode_step_level(index, self.cfg.sid_ranges)
      logits = sid_levels.restrict_logits(
        logits, jnp.broadcast_to(level, logits.shape[:2]), self.cfg.sid_ranges
      )
    return logits, new_cache


def create_model(
  cfg: ModelConfig,
  seed: int = 0,
  mesh: jax.sharding.Mesh | None = None,
  rules: sh.Rules | None = None,
) -> EncoderDecoder:
  """Builds the model with its parameters placed on `mesh` (eagerly).

  Parameters carry logical-axis metadata, so NNX needs a mesh to place them;
  by default this is one device with the dp rules (tests, notebooks, CPU).
  For training use train.state.create_train_state (jitted, sharded init).
  """
  mesh = mesh if mesh is not None else sh.single_device_mesh()
  rules = rules if rules is not None else sh.DP_RULES
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    return EncoderDecoder(cfg, rngs=nnx.Rngs(params=seed))
