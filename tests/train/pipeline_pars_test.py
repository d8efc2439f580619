"""The pipeline's pars stage and the eval rows of its variants, on the shared
tiny SFT run (tests/conftest.py)."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import configs
from onesearch_jax import generator as generator_lib
from onesearch_jax.errors import UserError
from onesearch_jax.eval import workdir_eval
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.stages import config as stages_config
from onesearch_jax.stages import eval as eval_stage
from onesearch_jax.stages import pars as stage_of_pars
from onesearch_jax.stages.resume import StageResult
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import sft_load

EVAL = EvalConfig(
  beam_size=12, batch_size=8, ks=(1, 5, 10), k_max=12, baselines=(), exact_rows=0
)
PARS = configs.pars_config(
  rm_steps=30, phase1_sessions=16, generate_beam=8, generate_batch=8,
  steps=(2, 2), batch_size=8, learning_rate=1e-3, warmup_steps=1,
  run_phase1=True, run_phase2=True,
)  # fmt: skip
VARIANTS = ("onesearch", "onesearch+pars", "onesearch+rm", "onesearch+pars+rm")


@pytest.fixture(scope="module")
def staged(sft_run, sft_sids, sft_world, tmp_path_factory):
  """(workdir, pipeline config, sids / train StageResults, pars runs, lines)."""
  res, _ = sft_run
  wd = Workdir(tmp_path_factory.mktemp("pars_wd"))
  wd.sids.symlink_to(sft_sids[0])
  wd.train.symlink_to(res.out_dir)
  sids = StageResult("sids", True, 0.0, {"output_hash": sft_sids[1]})
  train = StageResult("train", True, 0.0, {"output_hash": res.params_hash})
  cfg = stages_config.PipelineConfig(
    stages=("world", "sids", "train", "pars", "eval"), pars=PARS, eval=EVAL
  )
  lines: list[str] = []
  first = stage_of_pars.run(cfg, wd, sft_world, sids, train, lines.append)
  again = stage_of_pars.run(cfg, wd, sft_world, sids, train, lines.append)
  return wd, cfg, sids, train, (first, again), lines


def _params(model):
  return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.mark.slow
def test_pars_stage_writes_aligned_checkpoints_and_skips_on_rerun(staged):
  wd, _, _, _, (first, again), lines = staged
  assert not first.skipped and again.skipped
  assert again.marker == first.marker
  assert first.marker["phases"] == ["pars1", "pars2"]
  assert first.marker["examples"]["pars1"] > 0 and first.marker["examples"]["pars2"] > 0
  assert any("[pars] up to date" in line for line in lines)
  sft_model, _, _ = sft_load.load_trained(wd.train)
  base = _params(sft_model)
  models = {
    p: generator_lib.load_phase_model(wd, p, PARS.pars.phase(p).optimizer)
    for p in generator_lib.PARS_PHASES
  }
  for phase, model in models.items():
    leaves = _params(model)
    assert len(leaves) == len(base)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
               zip(leaves, base, strict=True))  # fmt: skip
    assert diff > 0, f"{phase} parameters equal the SFT ones"
  # The marker's output hash is the final (phase 2) parameters' hash.
  summary = json.loads((wd.pars / "summary.json").read_text())
  assert len(summary["pars1_history"]) >= 1 and len(summary["pars2_history"]) >= 1


@pytest.mark.slow
def test_eval_lists_every_variant_with_valid_beams(staged, sft_world):
  wd, cfg, sids, train, (pars, _), lines = staged
  res = eval_stage.run(cfg, wd, sft_world, sids, train, pars, lines.append)
  out = json.loads(pathlib.Path(res.marker["files"]["json"]).read_text())
  assert set(out["systems"]) == set(VARIANTS)
  md = pathlib.Path(res.marker["files"]["md"]).read_text()
  for name in VARIANTS:
    diag = out["systems"][name]["diagnostics"]
    assert diag["valid_sid_rate"] == 1.0, name
    assert diag["duplicate_rate"] == 0.0, name
    assert f"| {name} |" in md
  again = eval_stage.run(cfg, wd, sft_world, sids, train, pars, lines.append)
  assert again.skipped
  # A changed pars output re-runs the eval (its marker keys on it).
  other = StageResult("pars", True, 0.0, {**pars.marker, "output_hash": "x"})
  assert not eval_stage.run(
    cfg, wd, sft_world, sids, train, other, lines.append
  ).skipped


@pytest.mark.slow
def test_rm_rerank_permutes_beams_by_r_score(staged, sft_world):
  wd, *_ = staged
  gen = generator_lib.load_generator(wd, beam_size=EVAL.beam_size)
  models, rerankers = workdir_eval.workdir_models(
    wd, sft_world, gen, PARS, log=lambda _: None
  )
  assert [n for n, _ in models] == list(VARIANTS[:2])
  assert [(n, src) for n, src, _ in rerankers] == [
    ("onesearch+rm", "onesearch"), ("onesearch+pars+rm", "onesearch+pars")
  ]  # fmt: skip
  fn = rerankers[1][2]
  sessions = sorted(fn.reranker.session_index)[:6]
  rng = np.random.default_rng(0)
  u = fn.unique_codes.shape[0]
  sid = np.stack([rng.choice(u, 5, replace=False) for _ in sessions])
  sid = np.concatenate([np.full((len(sessions), 1), -1), sid], 1)  # a padding beam
  scores = np.sort(rng.normal(size=sid.shape), 1)[:, ::-1].copy()
  scores[:, 0] = -np.inf
  got, got_scores = fn(sessions, sid, scores)
  for row_in, row_out, s_in, s_out in zip(sid, got, scores, got_scores, strict=True):
    assert sorted(row_in.tolist()) == sorted(row_out.tolist())
    assert row_out[-1] == -1  # invalid beams last
    assert dict(zip(row_in, s_in, strict=True)) == dict(
      zip(row_out, s_out, strict=True)
    )
  tokens = fn.reranker.codec.tokens(fn.unique_codes[np.maximum(got, 0)])
  tokens = np.where((got >= 0)[..., None], tokens, -1)
  r = fn.reranker.scores(sessions, tokens)
  valid = r[:, :-1]
  assert np.isfinite(valid).all() and (np.diff(valid, axis=1) <= 1e-6).all()


def test_stage_lists_are_validated_by_order_and_needs():
  stages_config.check_stages(("world", "sids", "train", "eval"))
  stages_config.check_stages(("world", "sids", "train", "pars"))
  stages_config.check_stages(stages_config.STAGE_ORDER)
  bad = [
    ("world", "sids", "train", "eval", "pars"),  # order
    ("world", "sids", "pars"),  # pars needs train
    ("world", "train"),  # train needs sids
    ("sids", "world"),
    ("world", "world"),
    ("world", "rank"),
  ]
  for stages in bad:
    with pytest.raises(UserError):
      stages_config.check_stages(stages)
