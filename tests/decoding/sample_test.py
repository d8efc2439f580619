"""Trie-constrained sampling against a brute-force masked softmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.decoding import build_trie, sample, unique_sids
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import create_model
from onesearch_jax.train import synthetic

SIZES = (4, 3, 5)
RANGES = synthetic.sid_ranges_for(64, 30, SIZES)
OFFSETS = tuple(a for a, _ in RANGES)


def _model(restrict: bool = True, seed: int = 0):
  cfg = ModelConfig.tiny(
    sid_ranges=RANGES, restrict_sid_levels=restrict, emb_placeholder_id=3
  )
  return create_model(cfg, seed=seed)


def _codes(seed: int, n: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, v, size=n) for v in SIZES], axis=1)


def _prompts(batch) -> dict:
  """The encoder inputs of a synthetic batch (tokens and Mu-Seq features)."""
  keys = ("encoder_input_tokens", "long_seq_features")
  return {k: jnp.asarray(batch[k]) for k in keys if k in batch}


def _decode_all(model, batch, tokens: np.ndarray) -> np.ndarray:
  """Teacher-forced logits [B, U, S, V] of every prompt x SID row (jitted)."""
  graphdef, state = nnx.split(model)
  u, s = tokens.shape
  dec_in = np.concatenate([np.zeros((u, 1), np.int32), tokens[:, :-1]], axis=1)

  @jax.jit
  def run(state, prompts, dec_in):
    m = nnx.merge(graphdef, state)
    enc, mask = m.encode(prompts)
    b = enc.shape[0]
    logits = m.decode(
      jnp.tile(dec_in, (b, 1)), jnp.repeat(enc, u, 0), jnp.repeat(mask, u, 0)
    )
    return logits.reshape(b, u, s, -1)

  return np.asarray(run(state, _prompts(batch), dec_in))


def _brute_policy(model, batch, unique: np.ndarray, temperature: float):
  """log q of every SID of `unique`, per level, by numpy over full decodes.

  Returns:
    [B, U, S] log q_l(code_l | prefix): the level's logits / T, softmaxed
    over the codes that continue the prefix in `unique`.
  """
  u, s = unique.shape
  logits = _decode_all(model, batch, unique + np.asarray(OFFSETS))
  out = np.zeros(logits.shape[:3])
  for x in range(u):
    for lvl in range(s):
      prefix = tuple(unique[x, :lvl])
      kids = sorted({int(r[lvl]) for r in unique if tuple(r[:lvl]) == prefix})
      row = logits[:, x, lvl, OFFSETS[lvl] : OFFSETS[lvl] + SIZES[lvl]] / temperature
      top = row[:, kids].max(-1)
      z = np.log(np.sum(np.exp(row[:, kids] - top[:, None]), -1)) + top
      out[:, x, lvl] = row[:, unique[x, lvl]] - z
  return out


def _score(model, batch, trie, tokens, temperature: float = 1.0) -> np.ndarray:
  """Jitted `sample.constrained_log_probs`."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, prompts, trie, tokens):
    m = nnx.merge(graphdef, state)
    return sample.constrained_log_probs(
      m, prompts, trie, tokens, temperature=temperature
    )

  trie = jax.tree.map(jnp.asarray, trie)
  return np.asarray(run(state, _prompts(batch), trie, tokens))


@pytest.mark.parametrize("dense", [0, 1, 2])
def test_every_sample_is_a_catalogue_sid(dense):
  model = _model()
  codes = _codes(0, 25)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=dense)
  unique = unique_sids(codes)
  batch = synthetic.make_batch(model.cfg, 3, 7, seed=1)
  res = sample.sample_sids(model, batch, trie, jax.random.key(0), num_samples=64)
  got = np.asarray(res.codes)
  assert got.shape == (3, 64, 3)
  rows = {tuple(r) for r in unique}
  assert all(tuple(r) in rows for r in got.reshape(-1, 3))  # valid-SID rate 1.0
  np.testing.assert_array_equal(np.asarray(res.tokens), got + np.asarray(OFFSETS))
  # sid_index is the row of the SID in unique_codes.
  np.testing.assert_array_equal(unique[np.asarray(res.sid_index)], got)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_empirical_distribution_matches_masked_softmax(temperature):
  model = _model(seed=3)
  codes = _codes(4, 9)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  unique = unique_sids(codes)
  batch = synthetic.make_batch(model.cfg, 2, 7, seed=5)
  n = 4000
  res = sample.sample_sids(
    model, batch, trie, jax.random.key(7), num_samples=n, temperature=temperature
  )
  p = np.exp(_brute_policy(model, batch, unique, temperature).sum(-1))  # [B, U]
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
  for b in range(2):
    counts = np.bincount(np.asarray(res.sid_index[b]), minlength=len(unique))
    expected = n * p[b]
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    df = len(unique) - 1
    # mean df, std sqrt(2 df): 6 std above the mean fails a correct sampler
    # with probability < 1e-6.
    assert chi2 < df + 6 * np.sqrt(2 * df), (chi2, counts, expected)


def test_log_probs_match_brute_force_and_teacher_forced_scoring():
  model = _model(seed=1)
  codes = _codes(2, 20)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  unique = unique_sids(codes)
  batch = synthetic.make_batch(model.cfg, 2, 7, seed=2)
  t = 0.8
  res = sample.sample_sids(
    model, batch, trie, jax.random.key(1), num_samples=16, temperature=t
  )
  brute = _brute_policy(model, batch, unique, t)  # [B, U, S]
  want = np.take_along_axis(brute, np.asarray(res.sid_index)[..., None], axis=1)
  np.testing.assert_allclose(np.asarray(res.log_probs), want, atol=1e-4)
  tf = _score(model, batch, trie, res.tokens, t)
  np.testing.assert_allclose(tf, np.asarray(res.log_probs), atol=1e-4)


def test_zero_temperature_is_the_greedy_path():
  model = _model(seed=2)
  codes = _codes(6, 30)
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=0)
  unique = unique_sids(codes)
  batch = synthetic.make_batch(model.cfg, 3, 7, seed=4)
  brute = _brute_policy(model, batch, unique, 1.0)
  for t in (0.0, 1e-4):
    res = sample.sample_sids(
      model, batch, trie, jax.random.key(3), num_samples=5, temperature=t
    )
    for b in range(3):
      # Greedy: at each level the best child of the greedy prefix.
      alive = np.ones(len(unique), bool)
      for lvl in range(3):
        best = max(np.flatnonzero(alive), key=lambda x: brute[b, x, lvl])
        alive &= unique[:, lvl] == unique[best, lvl]
      (greedy,) = np.flatnonzero(alive)
      assert np.all(np.asarray(res.sid_index[b]) == greedy), (t, b)


def test_off_trie_path_scores_minus_inf_from_the_missing_level():
  model = _model()
  codes = np.asarray([[0, 0, 0], [0, 1, 2], [1, 2, 4]])
  trie = build_trie(codes, SIZES, OFFSETS, dense_levels=1)
  batch = synthetic.make_batch(model.cfg, 1, 7)
  tok = jnp.asarray([[[0, 2, 0], [1, 2, 4]]]) + jnp.asarray(OFFSETS)
  lp = _score(model, batch, trie, tok)
  assert np.isfinite(lp[0, 0, 0]) and np.all(np.isneginf(lp[0, 0, 1:]))
  # [1, 2, 4] is the only SID under code 1: levels 1 and 2 are certain.
  assert np.all(np.isfinite(lp[0, 1])) and np.allclose(lp[0, 1, 1:], 0.0, atol=1e-6)


def test_bad_arguments():
  model = _model()
  trie = build_trie(_codes(0, 5), SIZES, OFFSETS)
  batch = synthetic.make_batch(model.cfg, 1, 7)
  with pytest.raises(ValueError, match="num_samples"):
    sample.sample_sids(model, batch, trie, jax.random.key(0), num_samples=0)
  with pytest.raises(ValueError, match="temperature"):
    sample.sample_sids(
      model, batch, trie, jax.random.key(0), num_samples=2, temperature=-1
    )
