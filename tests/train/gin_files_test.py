"""gin/models/*.gin and gin/mesh/*.gin parse and build valid configs."""

from __future__ import annotations

import pathlib

import jax
import pytest

import gin
from onesearch_jax import sharding as sh
from onesearch_jax.model import configs as model_configs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _parse(path: pathlib.Path):
  """Parses one file with the two factories registered under their gin names."""
  gin.clear_config(clear_constants=True)
  with gin.unlock_config():
    gin.parse_config_file(str(path), skip_unknown=False)
  return gin.get_configurable("model_config"), gin.get_configurable("mesh_config")


@pytest.fixture(scope="module", autouse=True)
def _registered():
  for fn, name in (
    (model_configs.model_config, "model_config"),
    (sh.mesh_config, "mesh_config"),
  ):
    try:
      gin.external_configurable(fn, name)
    except ValueError:  # already registered by another test in this process
      pass
  yield
  gin.clear_config(clear_constants=True)


@pytest.mark.parametrize(
  "name,d_model,layers", [("tiny", 32, 2), ("small", 256, 4), ("base", 768, 6)]
)
def test_model_gin_files(name, d_model, layers):
  make, _ = _parse(ROOT / "gin" / "models" / f"{name}.gin")
  cfg = make()
  assert cfg.d_model == d_model and cfg.num_encoder_layers == layers
  assert cfg.num_decoder_layers == layers
  if name == "base":
    assert (cfg.num_heads, cfg.d_ff, cfg.dtype) == (12, 3072, "bfloat16")


@pytest.mark.parametrize("name", ["dp", "fsdp", "fsdp_tp"])
def test_mesh_gin_files_build_a_mesh_on_8_devices(name):
  _, make = _parse(ROOT / "gin" / "mesh" / f"{name}.gin")
  cfg = make()
  assert cfg.rules == name
  mesh = sh.make_mesh(cfg)
  assert mesh.size == len(jax.devices()) == 8
  assert mesh.axis_names == sh.MESH_AXES
