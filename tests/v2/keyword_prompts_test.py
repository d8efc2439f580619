"""Keyword thoughts as a phase-3 prompt segment ("+RAG"): off leaves the
prompts as they were, on adds one last segment; training rows and serving
prompts agree; the student prompt (switch off) carries no keyword."""

from __future__ import annotations

import json
import re

import pytest

from onesearch_jax import testing
from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import museq, prompts, world_source
from onesearch_jax.data import session_prompts as sp
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.train import sft_config
from onesearch_jax.v2 import keyword_source
from onesearch_jax.v2.keyword_thoughts import NEGATION_CUES, KeywordRequest

BUILTIN = museq.MuSeqConfig(keywords="builtin")


def test_template_gains_one_last_segment():
  off = prompts.phase3_template(museq.MuSeqConfig()).inputs
  assert off == (
    "[BOS][UID]{uid}[Q]{query}[QID]{sid_q}[RQ]{seq_q}[RC]{seq_short}"
    "[LT][EMB][EMB][EMB][PF]{profile}[GEN_IID]"
  )
  on = prompts.phase3_template(BUILTIN).inputs
  assert on == off.replace("[GEN_IID]", "[TEXT]{keywords}[GEN_IID]")
  words = prompts.phase3_template(
    museq.MuSeqConfig(keywords="builtin", prompt_style="words")
  ).inputs
  assert words.endswith(
    "[SEP] related keywords: {keywords} [SEP] give the appropriate item id: [EOS]"
  )


def test_keywords_setting_is_checked_and_left_out_of_the_hashed_json_when_off():
  with pytest.raises(ValueError, match="MuSeqConfig.keywords"):
    museq.MuSeqConfig(keywords="llm")
  with pytest.raises(ValueError, match="MuSeqConfig.keywords"):
    museq.MuSeqConfig(keywords="cache:")
  off = sft_config.config_to_dict(sft_config.SFTConfig())
  assert "keywords" not in off["museq"]
  assert "keywords" not in museq.config_dict(museq.MuSeqConfig())
  on_cfg = sft_config.SFTConfig(museq=BUILTIN)
  on = sft_config.config_to_dict(on_cfg)
  assert on["museq"]["keywords"] == "builtin"
  assert sft_config.config_from_dict(on) == on_cfg
  assert sft_config.config_from_dict(off) == sft_config.SFTConfig()


@pytest.fixture(scope="module")
def world_and_corpora(tiny_world_dir):
  world = world_source.read_world(tiny_world_dir)
  table = testing.synthetic_sid_table(tiny_world_dir)
  off = corpus_lib.build_corpus(world, table, museq.MuSeqConfig())
  on = corpus_lib.build_corpus(world, table, BUILTIN)
  return world, table, off, on


def test_corpus_rows_differ_only_by_the_keywords(world_and_corpora):
  world, _, off, on = world_and_corpora
  gen = keyword_source.build_keyword_generator("builtin", world.items, world.recall)
  known = {e.text for e in gen.entries}
  with_keywords = 0
  for kind in ("s3_personal", "s3_query", "s3_window", "eval_click", "eval_order"):
    cols_off, cols_on = off.columns[kind], on.columns[kind]
    assert "keywords" not in cols_off
    assert {k: v for k, v in cols_on.items() if k != "keywords"} == cols_off
    for query, kw in zip(cols_on["query"], cols_on["keywords"], strict=True):
      got = [] if kw == prompts.EMPTY else kw.split("[SEP]")
      assert set(got) <= known and len(got) == len(set(got))
      # Calibration re-orders and adds, never drops a query keyword.
      assert set(gen.keywords(KeywordRequest(query))) <= set(got)
      with_keywords += bool(got)
    if kind == "s3_query":  # no user: the query's keywords alone
      for query, kw in zip(cols_on["query"], cols_on["keywords"], strict=True):
        assert kw == ("[SEP]".join(gen.keywords(KeywordRequest(query))) or "none")
  assert with_keywords > 0


@pytest.fixture(scope="module")
def vocabulary(world_and_corpora):
  _, table, off, _ = world_and_corpora
  cfg = vocab_lib.SentencePieceConfig(vocab_size=300)
  return corpus_lib.build_vocabulary(off, table, museq.MuSeqConfig(), cfg)


def _prompter(world, table, vocabulary, config):
  return sp.SessionPrompter(world, table, vocabulary, config, inputs_length=200)


def test_serving_prompt_is_the_training_prompt_and_the_student_has_no_keywords(
  world_and_corpora, vocabulary
):
  world, table, _, on = world_and_corpora
  teacher = _prompter(world, table, vocabulary, BUILTIN)
  student = _prompter(world, table, vocabulary, museq.MuSeqConfig())
  cols = on.columns["eval_click"]
  template = prompts.phase3_template(BUILTIN).inputs
  kw_id = student.vocabulary.token_id("[TEXT]")
  for n, session_id in enumerate(cols["session_id"][:20]):
    row = {k: v[n] for k, v in cols.items()}
    t_text = teacher.prompt_text(session_id)
    assert t_text == prompts.render(template, row)
    s_text = student.prompt_text(session_id)
    # The official student prompt: the teacher's with the keyword span cut.
    assert s_text == re.sub(r"\[TEXT\].*?(?=\[GEN_IID\])", "", t_text)
    assert kw_id not in student.vocabulary.encode(s_text)
    if row["keywords"] != prompts.EMPTY:
      assert all(
        k not in s_text.split("[PF]")[-1] for k in row["keywords"].split("[SEP]")
      )


def test_self_distilled_model_serves_the_student_prompt(world_and_corpora, vocabulary):
  """keywords_in = "teacher" (SFTConfig.sdft): the serving prompt is the
  plain one, and no keyword is even made."""
  world, table, _, _ = world_and_corpora
  config = museq.MuSeqConfig(keywords="builtin", keywords_in="teacher")
  served = _prompter(world, table, vocabulary, config)
  plain = _prompter(world, table, vocabulary, museq.MuSeqConfig())
  assert served.keywords is None
  kw_id = vocabulary.token_id("[TEXT]")
  for session_id in list(plain.sessions)[:20]:
    text = served.prompt_text(session_id)
    assert text == plain.prompt_text(session_id)
    assert kw_id not in vocabulary.encode(text)


def test_cache_setting_reads_the_file(world_and_corpora, vocabulary, tmp_path):
  world, table, _, on = world_and_corpora
  cols = on.columns["eval_click"]
  query, user = cols["query"][0], cols["user_id"][0]
  path = tmp_path / "kw.jsonl"
  path.write_text(
    json.dumps({"query": query, "user_id": user, "keywords": ["alpha", "beta"]}) + "\n"
  )
  prompter = _prompter(
    world, table, vocabulary, museq.MuSeqConfig(keywords=f"cache:{path}")
  )
  text = prompter.prompt_text(cols["session_id"][0])
  assert text.endswith("[TEXT]alpha[SEP]beta[GEN_IID]")


def test_builtin_negation_setting(world_and_corpora):
  world = world_and_corpora[0]
  museq.MuSeqConfig(keywords="builtin:negation")  # a valid setting
  with pytest.raises(ValueError, match="builtin:negation"):
    museq.MuSeqConfig(keywords="builtin:maybe")
  plain = keyword_source.build_keyword_generator("builtin", world.items, world.recall)
  neg = keyword_source.build_keyword_generator(
    "builtin:negation", world.items, world.recall
  )
  assert plain.config.negation_cues == ()
  assert neg.config.negation_cues == NEGATION_CUES
  # The same dictionary; a query without a cue gets the same keywords.
  assert [e.text for e in neg.entries] == [e.text for e in plain.entries]
  for query in world_and_corpora[2].columns["s3_query"]["query"][:50]:
    assert neg.keywords(KeywordRequest(query)) == plain.keywords(KeywordRequest(query))
