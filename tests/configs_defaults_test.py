"""One default per setting: each configs.py factory called with no arguments
is its dataclass's default, so the numbers live in the dataclasses only.

What a factory fills itself (configs.py's docstring): world_config and
model_config pick a preset, train_config sets num_steps = 1 (a placeholder),
pipeline_config fills eval and pars (the configs the stages use for None).
"""

from __future__ import annotations

import pytest

from onesearch_jax import configs
from onesearch_jax import sharding as sh
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.khqe.build import BuildConfig
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.pars import listwise
from onesearch_jax.pars.stage import ParsStageConfig
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.train.loop import TrainConfig
from onesearch_jax.train.optimizers import OptimizerConfig
from onesearch_jax.train.sft_config import SFTConfig
from onesearch_jax.world.config import WorldConfig


@pytest.mark.parametrize(
  "factory,default",
  [
    (configs.world_config, WorldConfig.default),
    (configs.sids_config, BuildConfig),
    (configs.model_config, ModelConfig.main),
    (configs.mesh_config, sh.MeshConfig),
    (configs.optimizer_config, OptimizerConfig),
    (configs.train_config, lambda: TrainConfig(num_steps=1)),
    (configs.sft_config, SFTConfig),
    (configs.eval_config, EvalConfig),
    (configs.pars_config, ParsStageConfig),
    (
      configs.pipeline_config,
      lambda: PipelineConfig(eval=EvalConfig(), pars=ParsStageConfig()),
    ),
  ],
  ids=lambda x: getattr(x, "__name__", ""),
)
def test_factory_default_is_the_dataclass_default(factory, default):
  assert factory() == default()


def test_container_defaults_are_the_main_presets():
  assert PipelineConfig().world == WorldConfig.default()
  assert SFTConfig().model == ModelConfig.main()
  assert SFTConfig().train == configs.train_config()
  assert SFTConfig().train.optimizer == OptimizerConfig()


def test_the_main_job_values():
  """The values the main job ran with before the defaults moved into the
  dataclasses (configs.py factories and gin/runs/main.gin)."""
  opt = OptimizerConfig()
  assert (opt.learning_rate, opt.warmup_steps, opt.total_steps) == (3e-3, 10, 1000)
  t = SFTConfig().train
  assert (t.log_every, t.eval_every, t.checkpoint.save_every_steps) == (10, 200, 200)
  assert t.checkpoint.keep_last == 2
  s = SFTConfig()
  assert s.steps == (100, 100, 0) and s.phase3_passes == 1.0
  assert s.schedule == "continuous"
  assert s.lengths == ((48, 6), (48, 6), (112, 6))
  assert s.phase_tasks == (
    (("s1_title_to_sid", 1.0), ("s1_query_to_sid", 1.0)),
    (("s2_query_to_sidi", 1.0), ("s2_sidq_to_sidi", 1.0), ("s1_title_to_sid", 0.5)),
    (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.2)),
  )
  p = ParsStageConfig().pars
  assert p.reward_model.num_steps == 600 and p.data.phase1_sessions == 512
  assert p.data.phase1_rejected == "above_chosen" and p.features.use_stats
  assert (p.phase1.seed, p.phase2.seed) == (1, 2)
  assert p.phase1.num_steps == p.phase2.num_steps == 100
  assert p.phase1.optimizer.learning_rate == 1e-4
  assert p.phase1.optimizer.warmup_steps == 5
  assert p.phase1.optimizer.decay == "cosine" and p.phase1.loss.reg_weight == 5.0
  assert (p.run_phase1, p.run_phase2) == (False, False)
  assert (p.r_score.lambda_ctr, p.r_score.lambda_cvr) == (1.0, 0.0)
  assert (p.r_score.lambda_ctcvr, p.r_score.lambda_rel) == (1.0, 0.0)
  assert p.r_score.gen_weight == 0.1
  assert PipelineConfig().stages == ("world", "sids", "train", "pars", "eval")


def test_factory_arguments_still_reach_their_fields():
  t = configs.train_config(keep_last=5, z_loss=0.0, log_every=3)
  assert (t.checkpoint.keep_last, t.loss.z_loss, t.log_every) == (5, 0.0, 3)
  assert t.checkpoint.save_every_steps == 200  # the others stay default
  p = configs.pars_config(seed=3, steps=(4, 30), rm_steps=7, learning_rate=1e-3)
  assert p.pars.reward_model.num_steps == 7 and p.pars.reward_model.seed == 3
  assert p.pars.data.seed == 3 and (p.pars.phase1.seed, p.pars.phase2.seed) == (4, 5)
  ph1, ph2 = p.pars.phase1, p.pars.phase2
  assert (ph1.num_steps, ph1.log_every, ph1.optimizer.total_steps) == (4, 4, 4)
  assert (ph2.log_every, ph2.checkpoint.save_every_steps) == (10, 30)
  assert ph1.optimizer.learning_rate == 1e-3 and ph1.checkpoint.keep_last == 1
  s = configs.sft_config(steps=[10, 20, 30], phase_tasks=[[["s1_title_to_sid", 2]]] * 3)
  assert s.steps == (10, 20, 30) and s.phase_tasks[0] == (("s1_title_to_sid", 2.0),)
  assert configs.world_config("tiny", seed=5) == WorldConfig.tiny(seed=5)
  assert configs.eval_config(ks=[1], k_max=1).ks == (1,)
  assert configs.pipeline_config(stages=["world"]).stages == ("world",)
  with pytest.raises(ValueError, match="unknown TrainConfig"):
    configs._replace(TrainConfig(), {"bogus": 1}, "TrainConfig")


def test_listwise_phase_default_is_the_factory_phase():
  """pars_config derives log_every / total_steps / save_every_steps from the
  phase steps; at the default steps that is ListwiseTrainConfig()."""
  assert configs.pars_config().pars.phase1 == listwise.ListwiseTrainConfig(seed=1)
