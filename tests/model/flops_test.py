"""Analytic matmul FLOPs agree with XLA's cost analysis of the forward pass."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from onesearch_jax.model import ModelConfig, create_model
from onesearch_jax.model.flops import forward_flops_per_example, train_flops_per_batch
from onesearch_jax.train import synthetic


def test_forward_flops_match_xla_cost_analysis():
  # Wide enough that matmuls dominate the elementwise ops XLA also counts.
  ranges = synthetic.sid_ranges_for(512, 256, (32, 32, 32, 32, 32))
  cfg = ModelConfig.tiny(
    vocab_size=512, d_model=128, d_ff=512, head_dim=32, sid_ranges=ranges,
    emb_placeholder_id=3, seq_feature_dim=64,
  )  # fmt: skip
  model = create_model(cfg)
  batch = synthetic.make_batch(cfg, 4, 32, seed=0)
  graphdef, params = nnx.split(model)
  fwd = jax.jit(lambda p, b: nnx.merge(graphdef, p)(b))
  cost = fwd.lower(params, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  want = 4 * forward_flops_per_example(cfg, 32, 6)
  assert cost["flops"] == pytest.approx(want, rel=0.05), (cost["flops"], want)
  assert train_flops_per_batch(cfg, 4, 32, 6) == pytest.approx(3 * want)
