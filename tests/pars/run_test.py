"""run_pars end to end on the tiny world with a random tiny generator."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from onesearch_jax import generator, testing
from onesearch_jax import sharding as sh
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.model import ModelConfig
from onesearch_jax.pars import grpo, listwise, phases, reward_model, run
from onesearch_jax.pars.sid_tokens import SidCodec
from onesearch_jax.train import checkpoints, optimizers, synthetic
from onesearch_jax.world import reader

LEVELS, OPQ = (16, 8, 8), 16
CODES = LEVELS + (OPQ, OPQ)
SID_RANGES = synthetic.sid_ranges_for(96, 24, CODES)


def _prompt_fn(ids):
  rows = []
  for s in ids:
    h = hashlib.sha256(s.encode()).digest()
    rows.append([2 + b % 22 for b in h[:8]])
  return {"encoder_input_tokens": np.asarray(rows, np.int32)}


@pytest.fixture(autouse=True)
def _fast_compile():
  """XLA without most optimisations for each test here (tiny models)."""
  with testing.fast_compile():
    yield


@pytest.mark.slow
def test_run_pars_end_to_end_and_resume(tiny_world_dir, tmp_path):
  world = reader.load_world(tiny_world_dir)
  items = [r["item_id"] for r in world.items]
  queries = sorted({r["query"] for r in world.recall})
  table = SIDTable.synthetic(items, queries, levels=LEVELS, opq_codes=OPQ, seed=0)
  codec = SidCodec.from_ranges(SID_RANGES, table.code_ranges)
  calls = []

  def generate_fn(model, prompts):
    calls.append(type(model).__name__)
    enc = prompts["encoder_input_tokens"]
    b, w = enc.shape[0], 6
    rng = np.random.default_rng(int(enc[:, 0].sum()))
    rows = rng.integers(0, len(items), size=(b, w - 1))
    tok = codec.tokens(table.item_codes[rows])
    bad = codec.tokens(np.zeros((b, 1, 5), np.int32)) - 1  # out of range -> invalid
    return np.concatenate([tok, bad], 1), np.tile(np.arange(w, 0, -1.0), (b, 1))

  phase = listwise.ListwiseTrainConfig(
    num_steps=3, log_every=1, loss=listwise.ListwiseConfig(beta=0.5, sft_weight=0.1),
    optimizer=optimizers.OptimizerConfig(learning_rate=1e-3, warmup_steps=1,
                                         total_steps=10, decay="constant"),
    checkpoint=checkpoints.CheckpointConfig(save_every_steps=100, keep_last=2),
  )  # fmt: skip
  cfg = run.ParsConfig(
    model=ModelConfig.tiny(vocab_size=96, sid_ranges=SID_RANGES, qformer_layers=0,
                           restrict_sid_levels=True),
    mesh=sh.MeshConfig(shape=(2, 4, 1), rules="fsdp"),
    reward_model=reward_model.RewardModelConfig(num_steps=100),
    data=phases.PhaseDataConfig(num_negatives=2, phase1_sessions=16, generate_batch=8),
    phase1=phase, phase2=phase, batch_size=8, run_phase1=True, run_phase2=True,
  )  # fmt: skip
  lines = []
  res = run.run_pars(tiny_world_dir, table, lambda ts: ts, tmp_path, cfg, generate_fn,
                     lines.append, prompt_fn=_prompt_fn)  # fmt: skip
  assert calls and set(calls) == {"EncoderDecoder"}
  assert (tmp_path / "reward_model" / "metrics.json").exists()
  assert res.phase1.steps_run == 3 and res.phase2.steps_run == 3
  assert len(res.examples["pars1"]) > 0 and len(res.examples["pars2"]) > 0
  assert res.examples["pars1"].stats["invalid_sids"] == 16
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["reward_model"]["ctr_auc_pos"] > 0.5
  assert len(summary["pars2_history"]) == 3
  assert all(np.isfinite(h["loss"]) for h in summary["pars1_history"])
  # Phase 2 starts from phase 1's final parameters: its reference equals them.
  assert summary["pars2_history"][0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
  # Re-running resumes: RM restored, both phases already done.
  again = run.run_pars(tiny_world_dir, table, lambda ts: ts, tmp_path, cfg, generate_fn,
                       lines.append, prompt_fn=_prompt_fn)  # fmt: skip
  assert again.phase1.steps_run == 0 and again.phase2.steps_run == 0
  assert any("restored" in line for line in lines)


@pytest.mark.slow
def test_run_pars_grpo_phase_and_switch_off(tiny_world_dir, tmp_path):
  world = reader.load_world(tiny_world_dir)
  items = [r["item_id"] for r in world.items]
  queries = sorted({r["query"] for r in world.recall})
  table = SIDTable.synthetic(items, queries, levels=LEVELS, opq_codes=OPQ, seed=0)
  gcfg = grpo.GRPOConfig(
    variant="tpma", num_samples=4, batch_size=8, num_steps=3, log_every=1,
    checkpoint=checkpoints.CheckpointConfig(save_every_steps=100, keep_last=1),
  )  # fmt: skip
  cfg = run.ParsConfig(
    model=ModelConfig.tiny(vocab_size=96, sid_ranges=SID_RANGES, qformer_layers=0,
                           restrict_sid_levels=True),
    reward_model=reward_model.RewardModelConfig(num_steps=50), grpo=gcfg,
  )  # fmt: skip

  def no_generate(model, prompts):
    raise AssertionError("the GRPO phase samples; it never beam-searches")

  lines = []
  res = run.run_pars(tiny_world_dir, table, lambda ts: ts, tmp_path / "on", cfg,
                     no_generate, lines.append, prompt_fn=_prompt_fn)  # fmt: skip
  assert res.phase1 is None and res.phase2 is None
  assert res.grpo.steps_run == 3
  assert generator.existing_phases(tmp_path / "on") == []  # not a PARS phase
  ckpt = checkpoints.Checkpointer(tmp_path / "on" / "grpo" / "checkpoints")
  assert ckpt.latest_step() == 3
  ckpt.close()
  summary = json.loads((tmp_path / "on" / "summary.json").read_text())
  hist = summary["grpo_history"]
  assert [h["step"] for h in hist] == [1, 2, 3]
  assert all(h["valid_rate"] == 1.0 and np.isfinite(h["loss"]) for h in hist)
  assert all(0.0 < h["gate_mean"] <= 1.0 for h in hist)
  assert summary["grpo_prompts"]["prompts"] > 0
  assert any(line.startswith("[grpo] step 3/3") for line in lines)
  again = run.run_pars(tiny_world_dir, table, lambda ts: ts, tmp_path / "on", cfg,
                       no_generate, lines.append, prompt_fn=_prompt_fn)  # fmt: skip
  assert again.grpo.steps_run == 0 and again.grpo.resumed_from == 3
  # Switched off: no GRPO output, and the reward model is the same.
  off_cfg = dataclasses.replace(cfg, grpo=None)
  off = run.run_pars(tiny_world_dir, table, lambda ts: ts, tmp_path / "off", off_cfg,
                     no_generate, lines.append, prompt_fn=_prompt_fn)  # fmt: skip
  assert off.grpo is None and not (tmp_path / "off" / "grpo").exists()
  off_summary = json.loads((tmp_path / "off" / "summary.json").read_text())
  assert not any(k.startswith("grpo") for k in off_summary)

  def quality(m):  # the RM's metrics without its timings
    return {k: v for k, v in m.items() if "auc" in k or "logloss" in k}

  assert quality(off_summary["reward_model"]) == quality(summary["reward_model"])
  assert quality(summary["reward_model"])


def test_phase_by_workdir_name():
  cfg = run.ParsConfig()
  assert [cfg.phase(p) for p in generator.PARS_PHASES] == [cfg.phase1, cfg.phase2]
  assert cfg.phase("pars2").seed == 2
  with pytest.raises(ValueError, match="pars3"):
    cfg.phase("pars3")
