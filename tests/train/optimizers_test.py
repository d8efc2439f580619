"""Schedules against hand-computed values; both optimizers update params."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from onesearch_jax.train import optimizers as opt_lib


def test_cosine_schedule_hand_values():
  cfg = opt_lib.OptimizerConfig(
    learning_rate=1.0, warmup_steps=10, total_steps=110, end_lr_fraction=0.1
  )
  s = opt_lib.make_schedule(cfg)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  # Half-way through the decay: end + (peak - end) * (1 + cos(pi/2)) / 2.
  assert float(s(60)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)
  assert float(s(110)) == pytest.approx(0.1, rel=1e-5)


def test_linear_constant_rsqrt_schedules():
  lin = opt_lib.make_schedule(
    opt_lib.OptimizerConfig(
      learning_rate=2.0,
      warmup_steps=4,
      total_steps=14,
      decay="linear",
      end_lr_fraction=0.0,
    )
  )
  assert [float(lin(t)) for t in (0, 2, 4, 9, 14)] == pytest.approx([0, 1, 2, 1, 0])
  const = opt_lib.make_schedule(
    opt_lib.OptimizerConfig(learning_rate=2.0, warmup_steps=4, decay="constant")
  )
  assert float(const(1000)) == pytest.approx(2.0)
  rs = opt_lib.make_schedule(
    opt_lib.OptimizerConfig(learning_rate=1.0, warmup_steps=100, decay="rsqrt")
  )
  assert float(rs(50)) == pytest.approx(0.5)
  assert float(rs(400)) == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_optimizers_step_and_clip(name):
  cfg = opt_lib.OptimizerConfig(
    name=name, learning_rate=0.1, warmup_steps=0, decay="constant", clip_norm=1.0
  )
  tx = opt_lib.make_optimizer(cfg)
  params = {"w": jnp.ones((4, 4)), "scale": jnp.ones((4,))}
  grads = {"w": jnp.full((4, 4), 100.0), "scale": jnp.zeros((4,))}
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  assert np.all(np.asarray(new["w"]) < 1.0)  # moved against the gradient
  # The 1-D scale gets no weight decay and has zero gradient: unchanged.
  np.testing.assert_allclose(np.asarray(new["scale"]), 1.0)


def test_bad_optimizer_configs():
  with pytest.raises(ValueError, match="not in"):
    opt_lib.OptimizerConfig(name="sgd")
  with pytest.raises(ValueError, match="warmup_steps"):
    opt_lib.OptimizerConfig(warmup_steps=100, total_steps=50)


def test_step_offset_continues_the_schedule():
  base = opt_lib.OptimizerConfig(learning_rate=1e-2, warmup_steps=10, total_steps=100)
  full = opt_lib.make_schedule(base)
  later = opt_lib.make_schedule(dataclasses.replace(base, step_offset=40))
  for s in (0, 1, 7, 30, 59):
    np.testing.assert_allclose(float(later(s)), float(full(s + 40)), rtol=1e-6)
  # No re-warming: the offset schedule starts near the peak, not at 0.
  assert float(later(0)) > 0.5 * base.learning_rate
  with pytest.raises(ValueError, match="step_offset"):
    opt_lib.OptimizerConfig(step_offset=-1)
