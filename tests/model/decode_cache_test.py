"""Decode with a KV cache == the teacher-forced full forward pass.

Both incremental paths are checked position by position: `decode_step` (one
row per sequence) and `beam_decode_step` (W beams per query sharing the
query's cross-attention K/V, computed once by `cross_kv`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.model import sid_levels
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import create_model
from onesearch_jax.train import synthetic

RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _setup(restrict, tie, b, seed=0):
  cfg = ModelConfig.tiny(
    sid_ranges=RANGES,
    restrict_sid_levels=restrict,
    tie_embeddings=tie,
    emb_placeholder_id=3,
  )
  model = create_model(cfg, seed=seed)
  batch = synthetic.make_batch(cfg, b, 9, seed=seed + 1)
  full = np.asarray(nnx.jit(lambda m, x: m(x))(model, batch))  # [B, T, V]
  if restrict:  # the full pass leaves the restriction to the loss
    levels = sid_levels.decode_step_level(jnp.arange(full.shape[1]), RANGES)
    full = np.asarray(
      sid_levels.restrict_logits(
        jnp.asarray(full), jnp.broadcast_to(levels, full.shape[:2]), RANGES
      )
    )
  return model, batch, full


# transformer_test covers decode_step without the restriction (tied/untied).
@pytest.mark.parametrize("restrict,tie", [(True, True)])
def test_decode_step_logits_equal_full_forward(restrict, tie):
  model, batch, full = _setup(restrict, tie, 3)
  dec_in = batch["decoder_input_tokens"]

  @nnx.jit
  def run(m, batch):
    out, mask = m.encode(batch)
    cache = m.init_cache(dec_in.shape[0], dec_in.shape[1])
    got = []
    for t in range(dec_in.shape[1]):
      logits, cache = m.decode_step(dec_in[:, t : t + 1], cache, out, mask)
      got.append(logits)
    return jnp.stack(got, axis=1)

  got = np.asarray(run(model, batch))
  np.testing.assert_allclose(got, full, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("restrict,tie", [(False, True), (True, False)])
def test_beam_decode_step_with_shared_cross_kv_equals_full_forward(restrict, tie):
  """W beams per query, each a different sequence, one shared cross K/V."""
  b, w = 2, 3
  model, batch, _ = _setup(restrict, tie, b * w)
  cfg = model.cfg
  # Queries: the first b encoder inputs; beam (q, j) decodes sequence q*w + j
  # of the batch, against query q's encoder input.
  enc = batch["encoder_input_tokens"].reshape(b, w, -1)[:, 0]
  feats = batch["long_seq_features"].reshape(
    b, w, *batch["long_seq_features"].shape[1:]
  )
  queries = {"encoder_input_tokens": enc, "long_seq_features": feats[:, 0]}
  ref_batch = dict(
    batch,
    encoder_input_tokens=np.repeat(enc, w, axis=0),
    long_seq_features=np.repeat(feats[:, 0], w, axis=0),
  )
  full = np.asarray(nnx.jit(lambda m, x: m(x))(model, ref_batch))
  if restrict:
    levels = sid_levels.decode_step_level(jnp.arange(full.shape[1]), RANGES)
    full = np.asarray(
      sid_levels.restrict_logits(
        jnp.asarray(full), jnp.broadcast_to(levels, full.shape[:2]), RANGES
      )
    )
  dec_in = batch["decoder_input_tokens"].reshape(b, w, -1)
  t_len = dec_in.shape[-1]

  @nnx.jit
  def run(m, queries):
    out, mask = m.encode(queries)
    cross = m.cross_kv(out)
    assert cross[0][0].shape == (b, out.shape[1], cfg.num_heads, cfg.head_dim)
    cache = m.init_cache(b * w, t_len)
    got, sliced = [], []
    for t in range(t_len):
      tok = dec_in[:, :, t]
      logits, new_cache = m.beam_decode_step(tok, cache, cross, mask)
      part, _ = m.beam_decode_step(tok, cache, cross, mask, vocab_slice=(24, 32))
      got.append(logits)
      sliced.append(part)
      cache = new_cache
    return jnp.stack(got, axis=2), jnp.stack(sliced, axis=2)

  got, sliced = run(model, queries)
  got = np.asarray(got).reshape(b * w, t_len, -1)
  np.testing.assert_allclose(got, full, atol=2e-5, rtol=2e-5)
  # vocab_slice gives the raw logits' columns 24:32 (before any restriction).
  raw = np.asarray(nnx.jit(lambda m, x: m(x))(model, ref_batch))
  np.testing.assert_allclose(
    np.asarray(sliced).reshape(b * w, t_len, -1), raw[..., 24:32], atol=2e-5
  )
