"""train.state helpers that need no training run."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from onesearch_jax import configs
from onesearch_jax import sharding as sh
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train import state


def test_count_params_equals_a_built_models_parameter_sizes():
  for overrides in ({}, {"num_decoder_layers": 3, "qformer_layers": 1}):
    cfg = configs.model_config("tiny", overrides)
    with jax.set_mesh(sh.single_device_mesh()), nnx.logical_axis_rules(sh.DP_RULES):
      model = EncoderDecoder(cfg, rngs=nnx.Rngs(params=0))
    want = sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert state.count_params(cfg) == want > 0
