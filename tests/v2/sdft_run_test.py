"""run_sft with self-distillation in phase 3 (SFTConfig.sdft).

Phase 3 of the shared tiny run (sft_run) is re-trained from its phase-2
checkpoint with the switch on: it logs the distillation terms, a killed run
resumes to the uninterrupted parameters, and with the KL weight at 0 (every
other term off) its losses are the plain run's: the student prompts are the
plain prompts and the objective is the plain loss. The EMA-teacher mode
resumes the same way and serves the student.
"""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.data import model_batches
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.train import checkpoints, sft, sft_load, state

# Shares the tiny SFT run; three phase-3 trainings of the tiny model.
pytestmark = pytest.mark.slow

TEACHER = {"keywords": "builtin", "keywords_in": "teacher"}


def _phase3(full, tmp_path, name, cfg, lines, stop_after=None):
  """Phase 3 of ``cfg`` on top of the shared run's phases 1 and 2."""
  spec = model_batches.read_spec(full.out_dir)
  out = tmp_path / name
  if not out.exists():
    shutil.copytree(full.out_dir, out)
    shutil.rmtree(out / "phase3")
    (out / "sft_config.json").unlink()
  kw = {"stop_after": stop_after} if stop_after else {}
  return sft.run_sft(
    spec.world_dir, spec.sid_dir, out, cfg, sid_hash=spec.sid_hash,
    log=lines.append, **kw,
  )  # fmt: skip


def test_sdft_phase3_logs_kl_and_resumes(sft_run, tmp_path, tiny_sft_config):
  full, _ = sft_run
  cfg = tiny_sft_config(museq=TEACHER, sdft={"kl_weight": 0.5})
  lines: list[str] = []
  whole = _phase3(full, tmp_path, "whole", cfg, lines)
  assert whole.finished and whole.phases["phase1"].skipped
  train = whole.phases["phase3"].train
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  for r in train:
    for k in ("kl", "base", "teacher_ce", "rdrop", "adv"):
      assert np.isfinite(r[k]), (k, r)
    # joint mode, no other term: loss = base + 0.5 KL
    np.testing.assert_allclose(r["loss"], r["base"] + 0.5 * r["kl"], rtol=1e-5)
  assert all(r["kl"] > 0 for r in train)  # the keywords change the logits
  assert any("self-distillation KL 0.5" in line for line in lines)
  assert any(" kl " in line for line in lines if "phase3 step" in line)
  assert not any(" kl " in line for line in lines if "phase2 step" in line)
  _kill_and_resume(full, tmp_path, cfg, lines, whole)


def _kill_and_resume(full, tmp_path, cfg, lines, whole):
  """Killed after 2 phase-3 steps, then re-run: the same pairs, the same end."""
  part = _phase3(full, tmp_path, "halves", cfg, lines, stop_after=(2, 2))
  assert not part.finished and part.phases["phase3"].steps == 2
  rest = _phase3(full, tmp_path, "halves", cfg, lines)
  assert rest.finished and rest.phases["phase3"].resumed_from == 2
  assert rest.params_hash == whole.params_hash
  train = whole.phases["phase3"].train
  assert [r["kl"] for r in rest.phases["phase3"].train] == [r["kl"] for r in train]


def test_kl_weight_zero_is_the_plain_phase3(sft_run, tmp_path, tiny_sft_config):
  """The plain run's phase 3 trained on the same examples without keywords;
  with KL weight 0 the sdft path's per-step losses and the final eval match."""
  full, _ = sft_run
  cfg = tiny_sft_config(museq=TEACHER, sdft={"kl_weight": 0.0})
  res = _phase3(full, tmp_path, "kl0", cfg, [])
  got = res.phases["phase3"]
  want = full.phases["phase3"]
  assert [r["step"] for r in got.train] == [r["step"] for r in want.train]
  np.testing.assert_allclose(
    [r["loss"] for r in got.train], [r["loss"] for r in want.train], rtol=1e-5
  )
  np.testing.assert_allclose(
    [r["grad_norm"] for r in got.train], [r["grad_norm"] for r in want.train], rtol=1e-4
  )
  np.testing.assert_allclose(
    [e["eval_loss"] for e in got.evals], [e["eval_loss"] for e in want.evals], rtol=1e-4
  )
  assert all(r["kl"] == 0.0 and r["teacher_ce"] > 0 for r in got.train)
  # Serving the self-distilled run: the plain run's prompts, no keyword label.
  vocab = vocab_lib.OneSearchVocabulary.load(res.out_dir / "vocab")
  mine = sft_load.eval_inputs(res.out_dir, "eval_click", batch_size=8)
  plain = sft_load.eval_inputs(full.out_dir, "eval_click", batch_size=8)
  for (a, _), (b, _) in zip(mine, plain, strict=True):
    np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
    assert not np.any(a["encoder_input_tokens"] == vocab.token_id("[TEXT]"))


def test_ema_teacher_phase3_resumes_and_serves_the_student(
  sft_run, tmp_path, tiny_sft_config
):
  """SDFTConfig.teacher = 'ema' in run_sft: the teacher (phase 2's parameters
  at the start) is in phase 3's checkpoints, a killed run resumes to the
  uninterrupted parameters, and the trained model read for eval / serving is
  the student."""
  full, _ = sft_run
  cfg = tiny_sft_config(
    museq=TEACHER,
    sdft={"kl_weight": 0.5, "teacher": "ema", "ema_decay": 0.5},
    param_ema=False,  # the EMA teacher takes the state's third slot
  )
  lines: list[str] = []
  whole = _phase3(full, tmp_path, "whole", cfg, lines)
  assert whole.finished
  assert any("EMA teacher (decay 0.5)" in line for line in lines)
  train = whole.phases["phase3"].train
  assert all(r["kl"] > 0 for r in train)
  _kill_and_resume(full, tmp_path, cfg, lines, whole)
  # The checkpoint holds student and teacher; load_trained gives the student.
  model, _, model_cfg = sft_load.load_trained(whole.out_dir)
  steps = cfg.steps[2]
  target = state.create_train_state(
    model_cfg, cfg.phase_train_config(2).optimizer, sh.single_device_mesh(),
    sh.DP_RULES, initialise=False,
  )  # fmt: skip
  ckpt = checkpoints.Checkpointer(whole.out_dir / "phase3" / "checkpoints")
  try:
    both, _ = ckpt.restore(state.with_ema_teacher(target), step=steps)
  finally:
    ckpt.close()

  def params(m):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(m, nnx.Param))]

  for a, b in zip(params(model), params(both.merge()[0]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(params(model), params(both.teacher()), strict=True)
  )
  saved = json.loads((whole.out_dir / "sft_config.json").read_text())
  assert saved["sdft"]["teacher"] == "ema"
