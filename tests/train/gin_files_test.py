"""Every gin file parses with the CLI's registrations; model and mesh files train.

``onesearch_jax.main.register_configurables`` + ``build_config`` are exactly
what ``run.py`` does.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import jax
import numpy as np
import pytest

import gin
from onesearch_jax import main as cli
from onesearch_jax import sharding as sh
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.khqe.build import BuildConfig
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.model import LossConfig
from onesearch_jax.pars.stage import ParsStageConfig
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.train import optimizers, state, steps, synthetic
from onesearch_jax.train.sft_config import SFTConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
GIN_FILES = sorted(
  p.relative_to(ROOT).as_posix() for p in (ROOT / "gin").rglob("*.gin")
)


@pytest.fixture(scope="module")
def run_module():
  mod = cli
  made = mod.register_configurables()
  yield mod, made
  gin.clear_config(clear_constants=True)


def _build(run_module, path: str) -> PipelineConfig:
  mod, made = run_module
  gin.clear_config(clear_constants=True)
  gin.add_config_file_search_path(str(ROOT))
  with gin.unlock_config():
    gin.parse_config_files_and_bindings([str(ROOT / path)], [], skip_unknown=False)
  return mod.build_config(made)


def test_there_are_gin_files():
  assert {"gin/runs/main.gin", "gin/worlds/tiny.gin", "gin/models/main.gin"} <= set(
    GIN_FILES
  )


@pytest.mark.parametrize("path", GIN_FILES)
def test_every_gin_file_parses_into_a_pipeline_config(run_module, path):
  cfg = _build(run_module, path)
  assert isinstance(cfg, PipelineConfig) and isinstance(cfg.train, SFTConfig)
  assert isinstance(cfg.train.model, ModelConfig)


def test_main_gin_is_the_factory_default(run_module):
  main = _build(run_module, "gin/runs/main.gin")
  gin.clear_config(clear_constants=True)
  default = run_module[0].build_config(run_module[1])
  assert main == default  # `python run.py` == `--gin_file=gin/runs/main.gin`
  assert main.stages == ("world", "sids", "train", "pars", "eval")
  assert main.train.steps == (100, 100, 0) and main.train.phase3_passes == 1.0
  assert main.train.schedule == "continuous"
  assert main.pars.pars.phase1.num_steps == 100 and main.pars.generate_beam == 16
  assert main.eval.beam_size == 350 and main.eval.ks == (10, 50, 350)
  assert main.train.model.d_model == 64 and main.world.n_items == 10_000


def test_main_gin_is_the_dataclass_defaults(run_module):
  """gin/runs/main.gin spells the main job out; the values are the dataclass
  defaults (one default per setting)."""
  main = _build(run_module, "gin/runs/main.gin")
  assert main == PipelineConfig(
    sids=BuildConfig(), train=SFTConfig(), eval=EvalConfig(), pars=ParsStageConfig()
  )


def test_complex_world_gin_is_the_default_world_with_a_third_complex(run_module):
  """gin/worlds/complex.gin after a run's file changes the world's share of
  complex queries and nothing else."""
  mod, made = run_module
  main = _build(run_module, "gin/runs/main.gin")
  gin.clear_config(clear_constants=True)
  files = [str(ROOT / "gin/runs/main.gin"), str(ROOT / "gin/worlds/complex.gin")]
  with gin.unlock_config():
    gin.parse_config_files_and_bindings(files, [], skip_unknown=False)
  cfg = mod.build_config(made)
  assert main.world.complex_query_share == 0.0
  assert cfg.world == dataclasses.replace(main.world, complex_query_share=1 / 3)
  assert dataclasses.replace(cfg, world=main.world) == main


def _dataclass_default(selector: str, param: str):
  """The dataclass default a main.gin factory binding stands for."""
  sft, pars = SFTConfig(), ParsStageConfig()
  if selector in ("sft_config", "eval_config", "pipeline_config"):
    obj = {
      "sft_config": sft,
      "eval_config": EvalConfig(),
      "pipeline_config": PipelineConfig(),
    }
    value = getattr(obj[selector], param)
    if dataclasses.is_dataclass(value):  # a nested config given as a dict in gin
      return dataclasses.asdict(value)
    return value
  if selector == "train_config":
    names = {f.name for f in dataclasses.fields(sft.train.checkpoint)}
    return getattr(sft.train.checkpoint if param in names else sft.train, param)
  if selector == "optimizer_config":
    return getattr(sft.train.optimizer, param)
  assert selector == "pars_config", selector
  p = pars.pars
  return {
    "rm_steps": p.reward_model.num_steps,
    "phase1_sessions": p.data.phase1_sessions,
    "generate_batch": p.data.generate_batch,
    "num_negatives": p.data.num_negatives,
    "steps": (p.phase1.num_steps, p.phase2.num_steps),
    "batch_size": p.batch_size,
    "learning_rate": p.phase1.optimizer.learning_rate,
    "warmup_steps": p.phase1.optimizer.warmup_steps,
    "beta": p.phase1.loss.beta,
    "run_phase1": p.run_phase1,
    "rm_stats": p.features.use_stats,
    "phase1_rejected": p.data.phase1_rejected,
    "decay": p.phase1.optimizer.decay,
    "reg_weight": p.phase1.loss.reg_weight,
    "gen_weight": p.r_score.gen_weight,
    "run_phase2": p.run_phase2,
    "generate_beam": pars.generate_beam,
    "rerank": pars.rerank,
    "rerank_label_relevance": pars.rerank_label_relevance,
  }[param]


def _tuples(x):
  return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def test_every_main_gin_binding_is_its_dataclass_default(run_module):
  text = (ROOT / "gin/runs/main.gin").read_text()
  bindings = re.findall(r"^(\w+)\.(\w+) =", text, flags=re.M)
  assert len(bindings) >= 30  # main.gin spells the main job out
  _build(run_module, "gin/runs/main.gin")
  for selector, param in bindings:
    value = gin.query_parameter(f"{selector}.{param}")
    if selector == "sids_config":  # a dict of BuildConfig fields, each its default
      assert param == "overrides" and value
      assert value == {k: getattr(BuildConfig(), k) for k in value}, value
      continue
    want = _dataclass_default(selector, param)
    assert _tuples(value) == want, f"gin/runs/main.gin {selector}.{param}"


def test_tiny_gin_shrinks_world_and_training(run_module):
  cfg = _build(run_module, "gin/worlds/tiny.gin")
  assert cfg.world.n_items < 2_000 and cfg.train.model.d_model == 32
  assert sum(cfg.train.steps) <= 60 and cfg.train.batch_size == 16
  assert cfg.pars.pars.reward_model.num_steps <= 100
  assert cfg.pars.pars.phase1.num_steps + cfg.pars.pars.phase2.num_steps <= 10


@pytest.mark.parametrize(
  "name,d_model,layers,dec_layers",
  [("tiny", 32, 2, 2), ("main", 64, 2, 4), ("small", 256, 4, 4), ("base", 768, 6, 6)],
)
def test_model_gin_files(run_module, name, d_model, layers, dec_layers):
  cfg = _build(run_module, f"gin/models/{name}.gin").train.model
  assert cfg.d_model == d_model and cfg.num_encoder_layers == layers
  assert cfg.num_decoder_layers == dec_layers
  if name == "base":
    assert (cfg.num_heads, cfg.d_ff, cfg.dtype) == (12, 3072, "bfloat16")


def _two_steps(model_cfg: ModelConfig, mesh_cfg: sh.MeshConfig) -> list[float]:
  """Two jitted train steps on the mesh; the vocabulary is a small data one."""
  ranges = synthetic.sid_ranges_for(96, 40, (8, 8, 8, 8, 8))
  cfg = dataclasses.replace(
    model_cfg,
    vocab_size=96,
    sid_ranges=ranges,
    emb_placeholder_id=3,
    seq_feature_dim=8,
    restrict_sid_levels=True,
  )
  opt = optimizers.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=10)
  mesh = sh.make_mesh(mesh_cfg)
  rules = mesh_cfg.logical_rules
  ts = state.create_train_state(cfg, opt, mesh, rules)
  batches = [synthetic.make_batch(cfg, 8, 12, seed=s) for s in (0, 1)]
  bsh = state.batch_shardings(batches[0], mesh, rules)
  fn = steps.compile_train_step(ts, bsh, LossConfig(), opt)
  st, losses = ts.state, []
  for b in batches:
    st, m = fn(st, state.shard_batch(b, bsh))
    losses.append(float(m["loss"]))
  assert all(np.isfinite(losses))
  return losses


@pytest.fixture()
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


# ~20 s each on 2 busy cores: one of each kind stays in the quick set.
@pytest.mark.parametrize(
  "name", ["dp", pytest.param("fsdp", marks=pytest.mark.slow),
           pytest.param("fsdp_tp", marks=pytest.mark.slow)],
)  # fmt: skip
def test_mesh_gin_files_train_two_steps_on_8_devices(run_module, name, _fast_compile):
  sft_cfg = _build(run_module, f"gin/mesh/{name}.gin").train
  mesh = sh.make_mesh(sft_cfg.mesh)
  assert sft_cfg.mesh.rules == name and mesh.size == len(jax.devices()) == 8
  assert mesh.axis_names == sh.MESH_AXES
  tiny = ModelConfig.tiny(qformer_layers=1)
  _two_steps(tiny, sft_cfg.mesh)


# Slow: the quick set trains two 8-device steps in the dp mesh test above and
# in tests/train/steps_test.py; test_model_gin_files checks every model
# file's shapes.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "main", "small", "base"])
def test_model_gin_files_train_two_steps_on_8_devices(run_module, name, _fast_compile):
  model_cfg = _build(run_module, f"gin/models/{name}.gin").train.model
  if name in ("small", "base"):
    # The file's full width (base: 768 wide, 12 heads, d_ff 3072, bf16) and
    # one layer per stack: every layer is the same sharded block, so more of
    # them multiply the time (base: ~50 s on 2 cores), not what is checked.
    model_cfg = dataclasses.replace(
      model_cfg, num_encoder_layers=1, num_decoder_layers=1
    )
  if name == "base":  # bf16 activations; keep CPU memory small
    model_cfg = dataclasses.replace(model_cfg, dropout_rate=0.0)
    # XLA's full pipeline here (restored by _fast_compile): on ~145M
    # parameters its fusions save more in the init and the steps (~1 min
    # on 2 cores) than the longer compile costs.
    jax.config.update("jax_disable_most_optimizations", False)
  _two_steps(model_cfg, sh.MeshConfig(shape=(2, 4, 1), rules="fsdp"))
