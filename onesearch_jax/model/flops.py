"""Analytic model FLOPs of one training step (for MFU).

Counts matmul FLOPs only (2 per multiply-add), the convention of PaLM's MFU:
norms, softmax and elementwise ops are left out. Training = 3 x forward
(forward + backward through activations and weights).
"""

from __future__ import annotations

from onesearch_jax.model.configs import ModelConfig


def forward_flops_per_example(cfg: ModelConfig, enc_len: int, dec_len: int) -> float:
  """Matmul FLOPs of one teacher-forced forward pass for one example.

  Args:
    cfg: the model config.
    enc_len: L, encoder tokens (the N_M Q-Former slots are added here).
    dec_len: T, decoder tokens.

  Returns:
    FLOPs (float).
  """
  d, f, hk, v = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.head_dim, cfg.vocab_size
  macs = 0.0
  n_q = cfg.num_query_tokens if cfg.use_qformer else 0
  if cfg.use_qformer:
    m = cfg.num_seq_vectors
    macs += m * cfg.seq_feature_dim * d  # memory projection
    per_layer = 2 * n_q * d * hk + 2 * m * d * hk + 2 * n_q * m * hk + 3 * n_q * d * f
    macs += cfg.qformer_layers * per_layer
  length = enc_len + n_q
  enc_layer = length * (4 * d * hk + 3 * d * f) + 2 * length * length * hk
  macs += cfg.num_encoder_layers * enc_layer
  dec_layer = (
    dec_len * (4 * d * hk + 2 * d * hk + 3 * d * f)  # self q,k,v,o; cross q,o; MLP
    + length * 2 * d * hk  # cross-attention k, v over the encoder output
    + 2 * dec_len * dec_len * hk  # self-attention scores and values
    + 2 * dec_len * length * hk  # cross-attention scores and values
  )
  macs += cfg.num_decoder_layers * dec_layer
  macs += dec_len * d * v  # logits
  return 2.0 * macs


def train_flops_per_batch(
  cfg: ModelConfig, batch_size: int, enc_len: int, dec_len: int
) -> float:
  """3 x forward FLOPs for a [B, L] -> [B, T] batch."""
  return 3.0 * batch_size * forward_flops_per_example(cfg, enc_len, dec_len)
