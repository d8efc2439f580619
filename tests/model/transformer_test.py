"""Encoder-decoder: KV-cache decoding, Q-Former splicing, SID restriction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import layers, qformer
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train import synthetic

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
PLACEHOLDER = 3


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _cfg(**kw) -> ModelConfig:
  base = dict(sid_ranges=SID_RANGES, emb_placeholder_id=PLACEHOLDER)
  base.update(kw)
  return ModelConfig.tiny(**base)


def _model(cfg: ModelConfig, seed: int = 0) -> EncoderDecoder:
  with jax.set_mesh(sh.single_device_mesh()), nnx.logical_axis_rules(sh.DP_RULES):
    return EncoderDecoder(cfg, rngs=nnx.Rngs(seed))


def _greedy_cached_logits(model, batch, steps):
  """Feeds the teacher tokens step by step through decode_step (jitted)."""

  @nnx.jit
  def enc(m, b):
    return m.encode(b)

  @nnx.jit
  def step(m, tok, cache, out, mask):
    return m.decode_step(tok, cache, out, mask)

  out, mask = enc(model, batch)
  cache = model.init_cache(batch["decoder_input_tokens"].shape[0], steps + 2)
  got = []
  for t in range(steps):
    logits, cache = step(
      model, batch["decoder_input_tokens"][:, t : t + 1], cache, out, mask
    )
    got.append(logits)
  assert int(cache["index"]) == steps
  return np.stack(got, axis=1)


@pytest.mark.parametrize("tie", [False, True])
def test_decode_with_cache_matches_full_forward(tie):
  cfg = _cfg(tie_embeddings=tie)
  model = _model(cfg)
  batch = synthetic.make_batch(cfg, 4, 9, seed=1)
  full = np.asarray(nnx.jit(lambda m, b: m(b))(model, batch))
  cached = _greedy_cached_logits(model, batch, full.shape[1])
  assert full.shape == (4, 6, cfg.vocab_size)
  np.testing.assert_allclose(cached, full, atol=2e-5, rtol=2e-5)


def test_dropout_changes_output_only_with_key():
  cfg = _cfg(dropout_rate=0.3)
  model = _model(cfg)
  batch = synthetic.make_batch(cfg, 2, 7, seed=2)
  fwd = nnx.jit(lambda m, b, k: m(b, k))
  a = np.asarray(fwd(model, batch, jax.random.key(0)))
  b = np.asarray(fwd(model, batch, jax.random.key(1)))
  det = np.asarray(nnx.jit(lambda m, b: m(b))(model, batch))
  det2 = np.asarray(nnx.jit(lambda m, b: m(b))(model, batch))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(det, det2)


def test_qformer_outputs_replace_placeholders():
  cfg = _cfg()
  model = _model(cfg)
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 24, size=(3, 6)).astype(np.int32)
  tokens[0, 2] = PLACEHOLDER  # one placeholder -> query 0
  tokens[1, 1] = tokens[1, 4] = PLACEHOLDER  # two -> queries 0 and 1
  tokens[2, 5] = 0  # no placeholder, one pad -> prepended slots used
  feats = rng.normal(size=(3, 9, cfg.seq_feature_dim)).astype(np.float32)
  x, mask = model.embed_encoder_inputs(jnp.asarray(tokens), jnp.asarray(feats))
  q = np.asarray(model.qformer(jnp.asarray(feats)))
  emb = np.asarray(model.embed(jnp.asarray(tokens)))
  x, mask = np.asarray(x), np.asarray(mask)
  n = cfg.num_query_tokens
  assert x.shape == (3, n + 6, cfg.d_model)
  np.testing.assert_allclose(x[:, :n], q, atol=1e-6)  # prepended slots
  np.testing.assert_array_equal(mask[:, :n], [[False] * n, [False] * n, [True] * n])
  np.testing.assert_allclose(x[0, n + 2], q[0, 0], atol=1e-6)
  np.testing.assert_allclose(x[1, n + 1], q[1, 0], atol=1e-6)
  np.testing.assert_allclose(x[1, n + 4], q[1, 1], atol=1e-6)
  keep = tokens != PLACEHOLDER
  np.testing.assert_allclose(x[:, n:][keep], emb[keep], atol=1e-6)
  np.testing.assert_array_equal(mask[:, n:], tokens > 0)
  # The queries depend on the features, row by row.
  q2 = np.asarray(model.qformer(jnp.asarray(feats[::-1].copy())))
  assert not np.allclose(q2[0], q[0])
  np.testing.assert_allclose(q2[0], q[2], atol=1e-6)


def test_splice_without_placeholder_id_always_prepends():
  x = jnp.ones((2, 4, 8))
  mask = jnp.asarray([[True, True, False, False], [True] * 4])
  q = jnp.full((2, 3, 8), 7.0)
  out, m = qformer.splice_query_embeddings(x, mask, jnp.ones((2, 4), jnp.int32), q, -1)
  assert out.shape == (2, 7, 8)
  np.testing.assert_array_equal(np.asarray(m[:, :3]), True)
  np.testing.assert_array_equal(np.asarray(m[:, 3:]), np.asarray(mask))
  np.testing.assert_array_equal(np.asarray(out[:, :3]), 7.0)


def test_encoder_output_ignores_trailing_padding():
  """Real positions' encodings equal those of the same rows without the pads."""
  cfg = _cfg()
  model = _model(cfg)
  batch = synthetic.make_batch(cfg, 2, 8, seed=3, placeholder_rows=1.0)
  batch["encoder_input_tokens"][:, -2:] = 0
  short = dict(batch, encoder_input_tokens=batch["encoder_input_tokens"][:, :-2])
  enc = nnx.jit(lambda m, b: m.encode(b))
  out_long, mask_long = enc(model, batch)
  out_short, mask_short = enc(model, short)
  n = cfg.num_query_tokens
  assert not np.asarray(mask_long)[:, :n].any()  # placeholder rows: prefix off
  np.testing.assert_array_equal(np.asarray(mask_long)[:, :-2], np.asarray(mask_short))
  np.testing.assert_allclose(
    np.asarray(out_long)[:, n:-2], np.asarray(out_short)[:, n:], atol=2e-5
  )


def test_decode_step_restricts_each_sid_level():
  cfg = _cfg(restrict_sid_levels=True)
  model = _model(cfg)
  batch = synthetic.make_batch(cfg, 3, 7, seed=4)
  cached = _greedy_cached_logits(model, batch, 6)
  probs = np.asarray(jax.nn.softmax(jnp.asarray(cached), axis=-1))
  ids = np.arange(cfg.vocab_size)
  for level, (start, end) in enumerate(SID_RANGES):
    outside = (ids < start) | (ids >= end)
    assert np.all(probs[:, level][:, outside] == 0.0), level
    np.testing.assert_allclose(probs[:, level].sum(-1), 1.0, rtol=1e-5)
  # Step 5 (EOS position) is unrestricted.
  assert np.all(probs[:, 5] > 0.0)


def test_relative_position_bucket_matches_reference_formula():
  import math

  def ref(rel, bidirectional, nb=32, md=128):
    n, ret = -rel, 0
    if bidirectional:
      nb //= 2
      ret += nb if n < 0 else 0
      n = abs(n)
    else:
      n = max(n, 0)
    exact = nb // 2
    if n < exact:
      return ret + n
    val = exact + int(math.log(n / exact) / math.log(md / exact) * (nb - exact))
    return ret + min(val, nb - 1)

  rel = np.arange(-300, 301)
  for bidi in (True, False):
    got = np.asarray(
      layers.relative_position_bucket(
        jnp.asarray(rel), bidirectional=bidi, num_buckets=32, max_distance=128
      )
    )
    want = [ref(int(r), bidi) for r in rel]
    np.testing.assert_array_equal(got, want)


def test_bf16_forward_is_close_to_float32():
  cfg32 = _cfg()
  cfg16 = _cfg(dtype="bfloat16")
  batch = synthetic.make_batch(cfg32, 2, 7, seed=5)
  a = np.asarray(nnx.jit(lambda m, b: m(b))(_model(cfg32), batch))
  b16 = nnx.jit(lambda m, b: m(b))(_model(cfg16), batch)
  assert b16.dtype == jnp.float32  # logits stay float32
  np.testing.assert_allclose(np.asarray(b16), a, atol=0.15 * np.abs(a).max())
