"""Model FLOPs: a hand count, and forward + backward against XLA's count."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from onesearch_jax.model import ModelConfig, create_model
from onesearch_jax.model import model as model_lib
from onesearch_jax.model.flops import forward_flops_per_example, train_flops_per_batch
from onesearch_jax.train import synthetic


def test_hand_count_one_layer_each():
  cfg = ModelConfig.tiny(
    vocab_size=10, d_model=4, num_heads=1, head_dim=4, d_ff=8,
    num_encoder_layers=1, num_decoder_layers=1, qformer_layers=0,
  )  # fmt: skip
  # Multiply-adds for L=3 encoder and T=2 decoder tokens (D=4, HK=4, F=8, V=10):
  enc = 4 * 3 * 4 * 4 + 3 * 3 * 4 * 8 + 2 * 3 * 3 * 4  # q,k,v,o + MLP + scores,values
  dec = (
    4 * 2 * 4 * 4  # self q,k,v,o
    + 2 * 2 * 4 * 4  # cross q,o
    + 2 * 3 * 4 * 4  # cross k,v over the 3 encoder outputs
    + 3 * 2 * 4 * 8  # gated MLP
    + 2 * 2 * 2 * 4  # self scores + values
    + 2 * 2 * 3 * 4  # cross scores + values
  )
  logits = 2 * 4 * 10
  assert (enc, dec, logits) == (552, 560, 80)
  assert forward_flops_per_example(cfg, 3, 2) == 2 * (552 + 560 + 80)
  assert train_flops_per_batch(cfg, 5, 3, 2) == 3 * 5 * 2 * 1192


@pytest.mark.slow  # compiles a train step for XLA's cost analysis (~9 s)
def test_train_flops_match_xla_forward_plus_backward():
  # Wide enough that matmuls dominate what else XLA counts (elementwise ops).
  ranges = synthetic.sid_ranges_for(512, 256, (32, 32, 32, 32, 32))
  cfg = ModelConfig.tiny(
    vocab_size=512, d_model=128, d_ff=512, head_dim=32, sid_ranges=ranges,
    emb_placeholder_id=3, seq_feature_dim=64,
  )  # fmt: skip
  model = create_model(cfg)
  batch = synthetic.make_batch(cfg, 4, 32, seed=0)
  graphdef, params = nnx.split(model)
  loss_cfg = model_lib.LossConfig(z_loss=0.0)

  def loss(p, b):
    return model_lib.loss_fn(nnx.merge(graphdef, p), b, loss_cfg)[0]

  cost = jax.jit(jax.grad(loss)).lower(params, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  want = train_flops_per_batch(cfg, 4, 32, 6)
  # The backward pass costs 2 x forward: grads w.r.t. activations and weights.
  assert cost["flops"] == pytest.approx(want, rel=0.08), (cost["flops"], want)
