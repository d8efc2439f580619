"""SID embeddings from the KHQE codebooks, against hand-built codebooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onesearch_jax import sharding as sh
from onesearch_jax import testing
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.train import sid_init, state
from onesearch_jax.train.optimizers import OptimizerConfig

D = 8
K1, K2, K3, OPQ = 4, 3, 2, 5


def _write_codebooks(path, rng):
  rot, _ = np.linalg.qr(rng.normal(size=(D, D)))
  np.savez(
    path / "codebooks.npz",
    rq_l1=rng.normal(size=(K1, D)),
    rq_l2=rng.normal(size=(K2, D)),
    rq_l3=rng.normal(size=(K1 * K2, K3, D)),
    opq_mean=np.zeros(D),
    opq_rotation=rot,
    opq_codebooks=rng.normal(size=(2, OPQ, D // 2)),
  )
  return rot


def _cfg(**kw):
  start = 20
  ranges = []
  for n in (K1, K2, K3, OPQ, OPQ):
    ranges.append((start, start + n))
    start += n
  return ModelConfig(
    vocab_size=start + 3,
    d_model=D,
    num_heads=2,
    head_dim=4,
    d_ff=16,
    qformer_layers=0,
    sid_ranges=tuple(ranges),
    **kw,
  )


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  with testing.fast_compile():
    yield


@pytest.mark.parametrize("tied", [False, True])
def test_codebook_rows_and_columns(tmp_path, tied):
  rng = np.random.default_rng(0)
  rot = _write_codebooks(tmp_path, rng)
  cfg = _cfg(tie_embeddings=tied)
  ts = state.create_train_state(
    cfg, OptimizerConfig(), sh.single_device_mesh(), sh.DP_RULES, seed=0
  )
  model, _ = ts.merge()
  before = np.asarray(model.embed.embedding[...]).copy()
  sid_init.codebook_init(tmp_path, cfg)(model)
  emb = np.asarray(model.embed.embedding[...])
  z = np.load(tmp_path / "codebooks.npz")

  def unit(x):
    return x / np.linalg.norm(x)

  (a0, _), (b0, _), (c0, c1), (d0, _), (e0, _) = cfg.sid_ranges
  for i in range(K1):
    np.testing.assert_allclose(emb[a0 + i], unit(z["rq_l1"][i]) * np.sqrt(D), rtol=1e-5)
  for j in range(K2):
    np.testing.assert_allclose(emb[b0 + j], unit(z["rq_l2"][j]) * np.sqrt(D), rtol=1e-5)
  # OPQ code m of sub-quantiser s: [0.., c_m, ..0] mapped back through R^T.
  y = np.zeros(D)
  y[D // 2 :] = z["opq_codebooks"][1, 3]
  np.testing.assert_allclose(
    emb[e0 + 3], unit(y @ rot.T) * np.sqrt(D), rtol=1e-5, atol=1e-6
  )
  y = np.zeros(D)
  y[: D // 2] = z["opq_codebooks"][0, 2]
  np.testing.assert_allclose(
    emb[d0 + 2], unit(y @ rot.T) * np.sqrt(D), rtol=1e-5, atol=1e-6
  )
  # Level-3 and text rows keep their random init.
  np.testing.assert_array_equal(emb[c0:c1], before[c0:c1])
  np.testing.assert_array_equal(emb[:a0], before[:a0])
  if not tied:
    kern = np.asarray(model.logits_kernel[...])
    np.testing.assert_allclose(kern[:, a0 + 1], unit(z["rq_l1"][1]), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(kern[:, b0 + 2]), 1.0, rtol=1e-5)
  else:
    assert model.logits_kernel is None


def test_width_mismatch_is_a_clear_error(tmp_path):
  _write_codebooks(tmp_path, np.random.default_rng(1))
  cfg = dataclasses.replace(_cfg(), d_model=16, head_dim=8)
  with pytest.raises(ValueError, match="d_model 16"):
    sid_init.codebook_init(tmp_path, cfg)
