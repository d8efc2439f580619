"""How many XLA programs the SID build and encode compile (jax.monitoring)."""

from __future__ import annotations

import numpy as np

from onesearch_jax.khqe import opq, quantizer
from onesearch_jax.testing import compiled_programs


def _points(n, d, seed):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(6, d)) * 3.0
  return (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_fused_opq_fit_compiles_its_program_once():
  # Shapes no other test uses (D = 14, K = 8), so the process-wide jit
  # cache holds nothing for them yet.
  x = _points(700, 14, seed=0)
  kw = dict(seed=0, n_iter=3, max_train_points=500, fused=True)
  with compiled_programs() as first:
    opq.fit_opq(x, 2, 8, **kw)
  # The alternations and the final PQ fit share one program.
  assert first["jit(_fused_fit)"] == 1, first
  assert "jit(_alternation)" not in first and "jit(_procrustes)" not in first
  with compiled_programs() as again:
    opq.fit_opq(_points(900, 14, seed=1), 2, 8, rotation_init="pca", **kw)
  assert again["jit(_fused_fit)"] == 0, again


def test_encode_of_a_new_n_in_the_same_block_bucket_compiles_nothing():
  cfg = quantizer.QuantizerConfig(
    levels=(8, 4, 4),
    l3_mode="global",
    opq_subspaces=2,
    opq_codes=8,
    n_iter=4,
    opq_iter=2,
  )
  q = quantizer.fit(_points(600, 22, seed=2), cfg)
  new = _points(130, 22, seed=3)
  with compiled_programs() as first:
    codes = q.encode(new[:100])
  assert sum(first.values()) >= 1  # the fused encoder block (D = 22 is new)
  with compiled_programs() as again:
    more = q.encode(new[:120])  # 100 and 120 pad to the same block of 128
  assert sum(again.values()) == 0, again
  np.testing.assert_array_equal(more[:100], codes)
