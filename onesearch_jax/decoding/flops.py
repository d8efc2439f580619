"""Analytic matmul FLOPs of one beam search (for the FLOP-bound fraction).

Same convention as model/flops.py: 2 FLOPs per multiply-add of the matmuls
(projections, attention scores/values, logits); norms, softmax, top-k and
gathers are not counted. The encoder and the cross-attention K/V run once
per query; step 0 runs one row (the BOS beam), later steps W rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from onesearch_jax.model.configs import ModelConfig


def beam_search_flops_per_query(
  cfg: ModelConfig,
  enc_len: int,
  beam_size: int,
  level_sizes: Sequence[int],
  *,
  sliced_logits: bool | None = None,
) -> float:
  """Matmul FLOPs of decoding one query with `beam_search`.

  Args:
    cfg: the model config.
    enc_len: L, encoder tokens (Q-Former slots added when it is on).
    beam_size: W.
    level_sizes: V_l per decoded step (S steps).
    sliced_logits: logits over the level's range only (default: what the
      search does, i.e. cfg.restrict_sid_levels); else the full vocabulary.

  Returns:
    FLOPs (float).
  """
  d, f, hk = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.head_dim
  sliced = cfg.restrict_sid_levels if sliced_logits is None else sliced_logits
  n_q = cfg.num_query_tokens if cfg.use_qformer else 0
  macs = 0.0
  if cfg.use_qformer:
    m = cfg.num_seq_vectors
    macs += m * cfg.seq_feature_dim * d
    per_layer = 2 * n_q * d * hk + 2 * m * d * hk + 2 * n_q * m * hk + 3 * n_q * d * f
    macs += cfg.qformer_layers * per_layer
  length = enc_len + n_q
  macs += cfg.num_encoder_layers * (
    length * (4 * d * hk + 3 * d * f) + 2 * length * length * hk
  )
  macs += cfg.num_decoder_layers * length * 2 * d * hk  # cross K/V, once
  for step, v_l in enumerate(level_sizes):
    rows = 1 if step == 0 else beam_size
    per_row = cfg.num_decoder_layers * (
      6 * d * hk + 3 * d * f + 2 * (step + 1) * hk + 2 * length * hk
    )
    per_row += d * (v_l if sliced else cfg.vocab_size)
    macs += rows * per_row
  return 2.0 * macs
