"""onesearch_jax.sharding: mesh config resolution, rules, logical -> spec."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from onesearch_jax import sharding as sh


def test_mesh_shape_resolution_and_validation():
  assert sh.MeshConfig(shape=(-1, 1, 1)).resolved_shape(8) == (8, 1, 1)
  assert sh.MeshConfig(shape=(2, -1, 2)).resolved_shape(8) == (2, 2, 2)
  with pytest.raises(ValueError, match="does not divide"):
    sh.MeshConfig(shape=(3, -1, 1)).resolved_shape(8)
  with pytest.raises(ValueError, match="needs 4 devices"):
    sh.MeshConfig(shape=(2, 2, 1)).resolved_shape(8)
  with pytest.raises(ValueError, match="at most one -1"):
    sh.MeshConfig(shape=(-1, -1, 1))
  with pytest.raises(ValueError, match="not in"):
    sh.MeshConfig(rules="zero3")
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    sh.MeshConfig(custom_rules=((sh.BATCH, "model"),))


def test_every_rule_set_covers_every_logical_axis_once():
  for name, rules in sh.RULE_SETS.items():
    names = [r[0] for r in rules]
    assert sorted(names) == sorted(sh.LOGICAL_AXES), name
    # A param spec and an activation spec never reuse a mesh axis.
    for axes in [(sh.EMBED, sh.MLP), (sh.EMBED, sh.HEADS, sh.KV), (sh.VOCAB, sh.EMBED)]:
      spec = sh.logical_to_spec(axes, rules)
      used = [a for e in spec if e for a in (e if isinstance(e, tuple) else (e,))]
      assert len(used) == len(set(used)), (name, axes, spec)


def test_logical_to_spec():
  rules = sh.FSDP_TP_RULES
  assert sh.logical_to_spec((sh.BATCH, sh.LENGTH, sh.ACT_EMBED), rules) == P(
    ("data", "fsdp"), None, None
  )
  assert sh.logical_to_spec((sh.EMBED, sh.MLP), rules) == P("fsdp", "tensor")
  assert sh.logical_to_spec((None, sh.VOCAB), rules) == P(None, "tensor")
  with pytest.raises(KeyError, match="no rule"):
    sh.logical_to_spec(("nonsense",), rules)


def test_constrain_is_noop_without_mesh_and_shards_with_one():
  x = jnp.arange(64.0).reshape(8, 8)
  assert sh.constrain(x, (sh.BATCH, sh.ACT_EMBED)) is x
  with pytest.raises(ValueError, match="rank 2"):
    sh.constrain(x, (sh.BATCH,))
  cfg = sh.MeshConfig(shape=(2, 4, 1), rules="fsdp")
  mesh = sh.make_mesh(cfg)

  @jax.jit
  def f(a):
    return sh.constrain(a * 2, (sh.BATCH, sh.ACT_EMBED))

  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.logical_rules):
    y = f(x)
  np.testing.assert_array_equal(y, np.arange(64.0).reshape(8, 8) * 2)
  assert y.sharding.is_equivalent_to(
    sh.named_sharding(mesh, (sh.BATCH, None), cfg.logical_rules), 2
  )
  assert len(y.sharding.device_set) == 8


def test_mesh_config_factory_defaults():
  assert sh.mesh_config("fsdp").shape == (1, -1, 1)
  assert sh.mesh_config("fsdp_tp", shape=(2, 2, 2)).resolved_shape(8) == (2, 2, 2)
  with pytest.raises(ValueError, match="unknown rule set"):
    sh.mesh_config("tp")
