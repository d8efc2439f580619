"""model.param_blend: one moving-average step over a model's nnx.Params."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax.model import param_blend


class _Tiny(nnx.Module):
  def __init__(self, w, b, dtype=jnp.float32):
    self.w = nnx.Param(jnp.asarray(w, dtype))
    self.b = nnx.Param(jnp.asarray(b, dtype))
    self.count = nnx.Variable(jnp.asarray(7))  # not a Param: left out


def test_blend_is_the_hand_computed_average_of_the_params_only():
  avg = _Tiny([1.0, 2.0], [4.0])
  model = _Tiny([3.0, -2.0], [0.0])
  out = param_blend.blended_params(avg, model, 0.75)
  np.testing.assert_allclose(out["w"].value, [1.5, 1.0])  # 0.75*1 + 0.25*3, ...
  np.testing.assert_allclose(out["b"].value, [3.0])
  assert "count" not in out
  # Not applied: both models keep their parameters.
  np.testing.assert_array_equal(avg.w.value, [1.0, 2.0])
  np.testing.assert_array_equal(model.w.value, [3.0, -2.0])


def test_blend_keeps_the_model_dtype_and_decay_edges():
  avg = _Tiny([1.0], [1.0], jnp.bfloat16)
  model = _Tiny([5.0], [5.0], jnp.bfloat16)
  out = param_blend.blended_params(avg, model, jnp.float32(0.5))
  assert out["w"].value.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.float32(out["w"].value), [3.0])
  np.testing.assert_array_equal(
    param_blend.blended_params(avg, model, 1.0)["w"].value, avg.w.value
  )
  np.testing.assert_array_equal(
    param_blend.blended_params(avg, model, 0.0)["w"].value, model.w.value
  )
