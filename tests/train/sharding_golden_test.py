"""Parameter shardings match tests/golden/param_shardings.json; big ones are split.

If a change to the shardings is intended, regenerate the golden file with
  ONESEARCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/train/sharding_golden_test.py
and review the diff of tests/golden/param_shardings.json before committing.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from onesearch_jax import sharding as sh
from onesearch_jax.model import ModelConfig
from onesearch_jax.train import optimizers, state

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "param_shardings.json"
CASES = {
  "tiny/fsdp/1x8x1": (ModelConfig.tiny(), sh.MeshConfig(shape=(1, 8, 1), rules="fsdp")),
  "tiny/fsdp_tp/1x2x4": (
    ModelConfig.tiny(),
    sh.MeshConfig(shape=(1, 2, 4), rules="fsdp_tp"),
  ),
  "base/fsdp_tp/1x2x4": (
    ModelConfig.base(),
    sh.MeshConfig(shape=(1, 2, 4), rules="fsdp_tp"),
  ),
}


def _spec_json(spec):
  return [list(a) if isinstance(a, tuple) else a for a in spec]


def _param_specs(model_cfg, mesh_cfg):
  """{param path: (spec as JSON, shape)} for the model part of the state."""
  mesh = sh.make_mesh(mesh_cfg)
  _, abstract, shardings = state.abstract_train_state(
    model_cfg, optimizers.OptimizerConfig(), mesh, mesh_cfg.logical_rules
  )
  out = {}
  shapes = dict(jax.tree_util.tree_flatten_with_path(abstract[0])[0])
  for path, s in jax.tree_util.tree_flatten_with_path(shardings[0])[0]:
    out[jax.tree_util.keystr(path)] = (_spec_json(s.spec), shapes[path].shape)
  return out


def test_param_shardings_match_golden():
  got = {
    name: {k: v[0] for k, v in _param_specs(*case).items()}
    for name, case in CASES.items()
  }
  if os.environ.get("ONESEARCH_REGEN_GOLDEN"):
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
  want = json.loads(GOLDEN.read_text())
  for name in CASES:
    assert got[name] == want[name], (
      f"parameter shardings for {name} changed. If intended, regenerate with "
      "ONESEARCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest "
      "tests/train/sharding_golden_test.py and review the JSON diff."
    )


@pytest.mark.parametrize("rules", ["fsdp", "fsdp_tp"])
def test_large_params_are_sharded(rules):
  """Every base-model parameter over 1 MiB is split over at least 2 devices."""
  mesh_cfg = sh.MeshConfig(shape=(1, 2, 4), rules=rules)
  mesh = sh.make_mesh(mesh_cfg)
  sizes = dict(mesh.shape)
  for path, (spec, shape) in _param_specs(ModelConfig.base(), mesh_cfg).items():
    if np.prod(shape) * 4 < 2**20:
      continue
    axes = [
      a
      for entry in spec
      if entry
      for a in (entry if isinstance(entry, list) else [entry])
    ]
    ways = int(np.prod([sizes[a] for a in axes])) if axes else 1
    assert ways >= 2, f"{path} {shape} is not sharded under {rules}: {spec}"
