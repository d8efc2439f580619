"""Phase 3's length in passes over its data (SFTConfig.phase3_passes with
steps[2] = 0): the step arithmetic, validation, the JSON form, and the
rate-weighted example count it is made from."""

from __future__ import annotations

import json
import types

import pytest

from onesearch_jax import configs
from onesearch_jax.train import sft, sft_config, sft_load
from onesearch_jax.train.sft_config import SFTConfig, config_from_dict, config_to_dict


def test_steps_from_passes_by_hand():
  cfg = SFTConfig()  # the main job: steps[2] = 0, one pass, batch 32
  assert cfg.steps == (100, 100, 0) and cfg.phase3_passes == 1.0
  # World seed 0's test regime: 27,195 + 44,299 personal/window rows and
  # 0.2 x 10,000 titles = 73,494 rate-weighted rows: 2,296.7 -> 2,297 steps.
  assert cfg.with_phase3_rows(73_494).steps == (100, 100, 2297)
  # An exact multiple is not rounded up a step.
  assert cfg.with_phase3_rows(64 * 32).steps[2] == 64
  half = SFTConfig(phase3_passes=2.5, batch_size=8)
  assert half.with_phase3_rows(100).steps[2] == 32  # 31.25 -> 32
  assert SFTConfig(phase3_passes=1e-6).with_phase3_rows(10).steps[2] == 1
  # A positive steps[2] wins over the passes: the config comes back as it is.
  fixed = SFTConfig(steps=(100, 100, 300), phase3_passes=7.0)
  assert fixed.with_phase3_rows(10_000) is fixed
  with pytest.raises(ValueError, match="no examples"):
    cfg.with_phase3_rows(0)


def test_validation_and_the_unresolved_schedule():
  with pytest.raises(ValueError, match="phase3_passes must be > 0"):
    SFTConfig(phase3_passes=0.0)
  SFTConfig(steps=(100, 100, 5), phase3_passes=0.0)  # unused: no error
  with pytest.raises(ValueError, match="phase 3 >= 0"):
    SFTConfig(steps=(1, 1, -1))
  with pytest.raises(ValueError, match="phases 1 and 2 > 0"):
    SFTConfig(steps=(0, 1, 0))
  # The continuous LR schedule spans all three phases: phase 1 needs phase 3's
  # steps; per-phase schedules need them in phase 3 only.
  cont = SFTConfig()
  with pytest.raises(ValueError, match="with_phase3_rows"):
    cont.phase_train_config(0)
  per = SFTConfig(schedule="per_phase")
  assert per.phase_train_config(0).num_steps == 100
  with pytest.raises(ValueError, match="with_phase3_rows"):
    per.phase_train_config(2)
  done = cont.with_phase3_rows(73_494).phase_train_config(2)
  assert done.num_steps == 2297
  assert done.optimizer.total_steps == 2497 and done.optimizer.step_offset == 200


def test_json_form_keeps_passes_only_when_used():
  main = SFTConfig()
  d = config_to_dict(main)
  assert d["phase3_passes"] == 1.0 and d["steps"] == [100, 100, 0]
  assert config_from_dict(json.loads(json.dumps(d))) == main
  fixed = SFTConfig(steps=(100, 100, 2100))
  d = config_to_dict(fixed)
  assert "phase3_passes" not in d  # unused: the form from before the field
  assert config_from_dict(json.loads(json.dumps(d))) == fixed
  assert configs.sft_config(phase3_passes=2).phase3_passes == 2.0


def test_weighted_rows_of_a_task_list_and_of_a_mixture(monkeypatch):
  reg = types.SimpleNamespace(
    tasks={"s3_personal": "p_s3_personal", "s1_title_to_sid": "p_s1_title_to_sid"},
    counts={"s3_personal": 100, "s1_title_to_sid": 40},
    mixtures={"phase3": "p_phase3"},
  )
  cfg = SFTConfig(
    phase_tasks=(
      (),
      (),
      (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.5)),
    )
  )
  # s3_window has no examples here: 100 x 1 + 40 x 0.5.
  assert sft.phase3_weighted_rows(cfg, reg) == 120.0
  # An empty phase_tasks[2]: the seqio mixture's own rates.
  rates = {"t1": 30.0, "t2": 12.5}
  fake = types.SimpleNamespace(tasks=list(rates), get_rate=rates.__getitem__)
  monkeypatch.setattr(
    sft.seqio, "get_mixture_or_task", lambda name: {"p_phase3": fake}[name]
  )
  mixture_cfg = SFTConfig(phase_tasks=((), (), ()))
  assert sft.phase3_weighted_rows(mixture_cfg, reg) == 42.5


def test_resolve_phase3_steps_uses_the_passes_unless_steps_are_fixed():
  reg = types.SimpleNamespace(
    tasks={"s3_personal": "p_s3_personal"},
    counts={"s3_personal": 100},
    mixtures={"phase3": "p_phase3"},
  )
  tasks = ((), (), (("s3_personal", 1.0),))
  # 1.5 passes x 100 examples / batch 32 = 4.69 -> 5 steps.
  cfg = SFTConfig(phase_tasks=tasks, batch_size=32, phase3_passes=1.5)
  assert sft.resolve_phase3_steps(cfg, reg).steps == (cfg.steps[0], cfg.steps[1], 5)
  fixed = SFTConfig(phase_tasks=tasks, steps=(10, 20, 70), phase3_passes=1.5)
  assert sft.resolve_phase3_steps(fixed, reg) is fixed


def test_read_config_fills_phase3_steps_from_the_run(tmp_path):
  cfg = SFTConfig()
  (tmp_path / "sft_config.json").write_text(json.dumps(config_to_dict(cfg)))
  with pytest.raises(FileNotFoundError, match="phase_steps.json"):
    sft_load.read_config(tmp_path)
  (tmp_path / sft_load.PHASE_STEPS).write_text(json.dumps({"steps": [100, 100, 77]}))
  assert sft_load.read_config(tmp_path).steps == (100, 100, 77)
  (tmp_path / sft_load.PHASE_STEPS).write_text(json.dumps({"steps": [5, 100, 77]}))
  with pytest.raises(ValueError, match="do not fit"):
    sft_load.read_config(tmp_path)
  (tmp_path / sft_load.PHASE_STEPS).write_text(json.dumps({"nope": 1}))
  with pytest.raises(ValueError, match="no 'steps'"):
    sft_load.read_config(tmp_path)


def test_the_main_phase_tasks_are_what_the_docs_count():
  """The passes count every multiplier: the main job's phase 3 is personal
  x 1, window x 1, titles x 0.2 (the 73,494 above)."""
  assert dict(sft_config.MAIN_PHASE_TASKS[2]) == {
    "s3_personal": 1.0,
    "s3_window": 1.0,
    "s1_title_to_sid": 0.2,
  }
