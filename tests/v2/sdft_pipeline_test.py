"""Self-distillation's paired batches, config and gin switch (no training).

The student prompt must be exactly the teacher prompt with the keyword span
removed, at the token level; rows of a task without keywords pair with
themselves and get zero teacher weight; the stream restarts at a position
with the same pairs; off, nothing in the hashed config forms changes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import seqio

import gin
from onesearch_jax import configs, testing
from onesearch_jax import main as cli
from onesearch_jax.data import model_batches, museq, prompts, tasks
from onesearch_jax.train import sft_config
from onesearch_jax.v2 import sdft_batches
from onesearch_jax.v2.sdft import SDFTConfig

TEACHER = museq.MuSeqConfig(keywords="builtin", keywords_in="teacher")


@pytest.fixture(scope="module")
def registered(tiny_world_dir):
  table = testing.synthetic_sid_table(tiny_world_dir)
  return tasks.register_tasks(
    tiny_world_dir, sid_table=table, config=TEACHER, prefix="sdft_pairs"
  )


def _batches(reg, position=0, n=3, buckets=(48, 64)):
  members = [(reg.tasks["s3_personal"], 1.0), (reg.tasks["s1_title_to_sid"], 0.5)]
  tb = model_batches.TrainBatches(
    members,
    batch_size=12,
    lengths=(128, 6),
    long_seq=True,
    long_seq_dim=reg.long_seq_dim,
    seed=7,
    shuffle_buffer=64,
    length_buckets=buckets,
    teacher=True,
  )
  it = tb(position)
  return [next(it) for _ in range(n)]


def _real(row: np.ndarray) -> list[int]:
  return [int(t) for t in row if t != 0]


def test_student_is_the_teacher_without_the_keyword_span(registered):
  v = registered.vocabulary
  text, gen = v.token_id("[TEXT]"), v.token_id("[GEN_IID]")
  rows = with_teacher = 0
  for b in _batches(registered):
    student, teacher = sdft_batches.split_pair(b)
    assert set(student) == set(b) - set(sdft_batches.TEACHER_FEATURES)
    for key in ("decoder_target_tokens", "decoder_input_tokens", "long_seq_features"):
      assert teacher[key] is student[key]
    for i in range(len(b["encoder_input_tokens"])):
      s, t = (
        _real(student["encoder_input_tokens"][i]),
        _real(teacher["encoder_input_tokens"][i]),
      )
      w_t = teacher["decoder_loss_weights"][i]
      rows += 1
      assert text not in s  # no keyword segment in a student prompt
      if text in t:  # an s3_personal row: [TEXT] kw.. spans up to [GEN_IID]
        a, z = t.index(text), t.index(gen)
        assert a < z and s == t[:a] + t[z:]
        np.testing.assert_array_equal(w_t, student["decoder_loss_weights"][i])
        with_teacher += 1
      else:  # indexing replay: its own prompt, no KL, no teacher CE
        assert s == t and not np.any(w_t)
  assert 0 < with_teacher < rows


def test_pairs_restart_at_a_position(registered):
  whole = _batches(registered, 0, 3)
  later = _batches(registered, 1, 2)
  for a, b in zip(whole[1:], later, strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_eval_and_serving_prompts_have_no_keywords(registered):
  assert "{keywords}" not in prompts.phase3_template(TEACHER).inputs
  assert (
    prompts.teacher_template(TEACHER).inputs
    == prompts.phase3_template(
      dataclasses.replace(TEACHER, keywords_in="prompt")
    ).inputs
  )
  for kind in ("eval_click", "s3_personal", "s1_title_to_sid"):
    task = registered.tasks[kind]
    has = "teacher_inputs" in seqio.get_mixture_or_task(task).output_features
    assert has == (kind == "s3_personal")


def test_plain_batches_refuse_teacher_mode(tiny_world_dir):
  table = testing.synthetic_sid_table(tiny_world_dir)
  reg = tasks.register_tasks(tiny_world_dir, sid_table=table, prefix="sdft_plain")
  tb = model_batches.TrainBatches(
    reg.tasks["s3_personal"],
    batch_size=4,
    lengths=(96, 6),
    long_seq=False,
    seed=0,
    shuffle_buffer=8,
    teacher=True,
  )
  with pytest.raises(ValueError, match="teacher_inputs"):
    next(tb(0))


def test_pair_batch_weights_by_hand():
  student = {
    "encoder_input_tokens": np.array([[5, 6, 1, 0], [5, 6, 1, 0]], np.int32),
    "decoder_loss_weights": np.array([[1, 1, 0], [1, 1, 1]], np.float32),
  }
  teacher = np.array([[5, 6, 1, 0, 0, 0], [5, 6, 9, 8, 1, 0]], np.int32)
  out = sdft_batches.pair_batch(student, teacher)
  np.testing.assert_array_equal(out["teacher_loss_weights"], [[0, 0, 0], [1, 1, 1]])
  with pytest.raises(KeyError, match="paired batch"):
    sdft_batches.split_pair(student)


def test_config_checks_and_hashed_forms():
  with pytest.raises(ValueError, match="teacher keywords"):
    sft_config.SFTConfig(sdft=SDFTConfig())
  with pytest.raises(ValueError, match="teacher keywords"):
    sft_config.SFTConfig(sdft=SDFTConfig(), museq=museq.MuSeqConfig(keywords="builtin"))
  with pytest.raises(ValueError, match="set SFTConfig.sdft"):
    sft_config.SFTConfig(museq=TEACHER)
  with pytest.raises(ValueError, match="keywords_in"):
    museq.MuSeqConfig(keywords_in="student")
  off = sft_config.config_to_dict(sft_config.SFTConfig())
  assert "sdft" not in off and "keywords_in" not in off["museq"]
  # The task cache's fingerprint holds museq.config_dict.
  assert "keywords_in" not in museq.config_dict(museq.MuSeqConfig())
  assert museq.config_dict(TEACHER)["keywords_in"] == "teacher"
  on_cfg = sft_config.SFTConfig(museq=TEACHER, sdft=SDFTConfig(rdrop_weight=0.5))
  on = sft_config.config_to_dict(on_cfg)
  assert on["sdft"]["rdrop_weight"] == 0.5 and on["museq"]["keywords_in"] == "teacher"
  assert sft_config.config_from_dict(on) == on_cfg
  assert sft_config.config_from_dict(off) == sft_config.SFTConfig()


def test_gin_switches_self_distillation_on():
  made = cli.register_configurables()
  gin.clear_config(clear_constants=True)
  try:
    with gin.unlock_config():
      gin.parse_config(
        "sft_config.museq = {'keywords': 'builtin', 'keywords_in': 'teacher'}\n"
        "sft_config.sdft = {'rdrop_weight': 0.5, 'fgm_epsilon': 0.6}\n"
      )
    cfg = cli.build_config(made).train
  finally:
    gin.clear_config(clear_constants=True)
  assert cfg.sdft == SDFTConfig(rdrop_weight=0.5, fgm_epsilon=0.6)
  assert cfg.museq.teacher_keywords
  assert configs.sft_config().sdft is None
  on = configs.sft_config(
    museq={"keywords": "builtin", "keywords_in": "teacher"}, sdft={}
  )
  assert on.sdft == SDFTConfig()
  ema = configs.sft_config(
    museq={"keywords": "builtin", "keywords_in": "teacher"},
    sdft={"teacher": "ema", "ema_decay": 0.99},
    param_ema=False,  # the EMA teacher takes the state's third slot
  )
  assert (ema.sdft.teacher, ema.sdft.ema_decay) == ("ema", 0.99)
  # "joint" (the default) is left out of the hashed form; "ema" is in it.
  assert "teacher" not in sft_config.config_to_dict(on)["sdft"]
  ema_dict = sft_config.config_to_dict(ema)
  assert ema_dict["sdft"]["teacher"] == "ema"
  assert sft_config.config_from_dict(ema_dict) == ema
  assert sft_config.config_from_dict(sft_config.config_to_dict(on)) == on
