"""Launch detection, maybe_initialize, and host rows -> global arrays (8 CPUs)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from onesearch_jax import distributed
from onesearch_jax import sharding as sh
from onesearch_jax.train import state


class FakeInit:
  def __init__(self):
    self.calls = []

  def __call__(self, **kw):
    self.calls.append(kw)


def test_single_host_is_a_no_op():
  init = FakeInit()
  launch = distributed.maybe_initialize(env={}, initialize=init)
  assert launch == distributed.Launch(False, "single host")
  assert init.calls == []
  # One TPU host (a v5e-8 is one VM) lists one worker: still single host.
  env = {"TPU_WORKER_HOSTNAMES": "t1v-n-0", "SLURM_NTASKS": "1"}
  assert not distributed.maybe_initialize(env=env, initialize=init).multihost
  assert init.calls == []


def test_explicit_arguments_are_passed_through():
  init = FakeInit()
  launch = distributed.maybe_initialize("10.0.0.2:1234", 4, 3, env={}, initialize=init)
  assert launch.source == "arguments"
  assert init.calls == [
    {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}
  ]


@pytest.mark.parametrize(
  "env,source,kw",
  [
    (
      {
        "JAX_COORDINATOR_ADDRESS": "h0:8476",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
      },
      "JAX_* env",
      {"coordinator_address": "h0:8476", "num_processes": 2, "process_id": 1},
    ),
    ({"ONESEARCH_MULTIHOST": "1"}, "ONESEARCH_MULTIHOST", None),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, "TPU pod env", None),
    ({"SLURM_NTASKS": "8"}, "SLURM env", None),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI env", None),
  ],
)
def test_multihost_env_detection(env, source, kw):
  init = FakeInit()
  launch = distributed.maybe_initialize(env=env, initialize=init)
  assert launch.multihost and launch.source == source
  auto = {"coordinator_address": None, "num_processes": None, "process_id": None}
  assert init.calls == [kw or auto]


def test_bad_launch_arguments_are_named():
  with pytest.raises(ValueError, match="together"):
    distributed.detect_launch("h:1", None, None, env={})
  with pytest.raises(ValueError, match="process_id 4"):
    distributed.detect_launch("h:1", 4, 4, env={})
  with pytest.raises(ValueError, match="SLURM_NTASKS"):
    distributed.detect_launch(env={"SLURM_NTASKS": "many"})


def _host_batch(rows):
  rng = np.random.default_rng(0)
  return {
    "encoder_input_tokens": rng.integers(0, 100, (rows, 7)).astype(np.int32),
    "decoder_loss_weights": rng.random((rows, 3)).astype(np.float32),
    "long_seq_features": rng.normal(size=(rows, 9, 4)).astype(np.float32),
  }


@pytest.mark.parametrize(
  "shape,rules",
  [((2, 4, 1), "fsdp"), ((1, 8, 1), "fsdp"), ((8, 1, 1), "dp"), ((1, 4, 2), "fsdp_tp")],
)
def test_global_array_equals_host_batch(shape, rules):
  assert jax.device_count() == 8 and jax.process_count() == 1
  cfg = sh.MeshConfig(shape=shape, rules=rules)
  mesh = sh.make_mesh(cfg)
  batch = _host_batch(16)
  bsh = state.batch_shardings(batch, mesh, cfg.logical_rules)
  out = distributed.host_batch_to_global(batch, mesh, bsh)
  ways = shape[0] * shape[1]
  for key, host in batch.items():
    arr = out[key]
    assert arr.shape == host.shape and arr.dtype == host.dtype
    np.testing.assert_array_equal(np.asarray(arr), host)
    assert arr.sharding == bsh[key]
    assert arr.sharding.spec[0] == (sh.DATA, sh.FSDP)
    # Each device holds 16 / ways consecutive rows (replicated over tensor).
    for shard in arr.addressable_shards:
      rows = shard.index[0]
      assert rows.stop - rows.start == 16 // ways
      np.testing.assert_array_equal(np.asarray(shard.data), host[rows])


def test_default_shardings_use_the_given_rules():
  mesh = sh.make_mesh(sh.MeshConfig(shape=(2, 4, 1), rules="fsdp"))
  out = distributed.host_batch_to_global(_host_batch(8), mesh, rules=sh.FSDP_RULES)
  assert distributed.batch_axis_size(out["encoder_input_tokens"].sharding) == 8


def test_bad_host_batches_are_named():
  mesh = sh.make_mesh(sh.MeshConfig(shape=(2, 4, 1), rules="fsdp"))
  batch = _host_batch(6)
  bsh = state.batch_shardings(batch, mesh, sh.FSDP_RULES)
  with pytest.raises(ValueError, match="'encoder_input_tokens' has 6 rows"):
    distributed.host_batch_to_global(batch, mesh, bsh)
  ok = _host_batch(8)
  with pytest.raises(ValueError, match=r"no sharding for \['extra'\]"):
    distributed.host_batch_to_global(
      {**ok, "extra": ok["decoder_loss_weights"]}, mesh, bsh
    )
  uneven = {**ok, "decoder_loss_weights": ok["decoder_loss_weights"][:4]}
  with pytest.raises(ValueError, match="disagree on rows"):
    distributed.host_batch_to_global(uneven, mesh, bsh)
  with pytest.raises(ValueError, match="divisible"):
    distributed.per_host_batch_size(12, mesh)
  assert distributed.per_host_batch_size(16, mesh) == 16
