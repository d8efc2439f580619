"""OneSearch-V2 keyword CoT: the four stage-1 CoT tasks, their conditional
task markers, keyword SIDs, and the direct-CoT phase-3 target."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import seqio

from onesearch_jax import testing
from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import museq, prompts, tasks, world_source
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.train import sft_config
from onesearch_jax.v2 import keyword_sids, keyword_source
from onesearch_jax.v2.keyword_thoughts import KeywordRequest

COT = museq.MuSeqConfig(keywords="builtin", cot_tasks=True)
DIRECT = museq.MuSeqConfig(keywords="builtin", direct_cot=True)
SID = "<a_1><b_2><c_3><d_4><d_20>"


def fake_sids(texts):
  """A stand-in for the artefact's keyword SIDs: a code from the text."""
  return [f"<a_{len(t) % 8}><b_{len(t) % 4}><c_0><d_1><d_17>" for t in texts]


class HandKeywords:
  """A keyword generator with hand-set answers (query, recent clicks)."""

  def __init__(self, answers):
    self.answers = answers

  def keywords(self, request: KeywordRequest):
    return self.answers.get((request.query, request.recent_item_ids), ())


def test_switches_need_keywords_and_are_left_out_of_the_hashed_json_when_off():
  for field in ("cot_tasks", "direct_cot"):
    with pytest.raises(ValueError, match="need a keyword source"):
      museq.MuSeqConfig(**{field: True})
  off = sft_config.config_to_dict(sft_config.SFTConfig())
  assert not {"cot_tasks", "direct_cot", "keywords"} & set(off["museq"])
  assert not {"cot_tasks", "direct_cot"} & set(museq.config_dict(museq.MuSeqConfig()))
  for cfg in (COT, DIRECT):
    on = sft_config.config_to_dict(sft_config.SFTConfig(museq=cfg))
    assert on["museq"]["keywords"] == "builtin"
    assert sft_config.config_from_dict(on).museq == cfg


def test_cot_templates_hand_values():
  t = prompts.cot_templates(COT)
  assert t["query_to_keywords"] == prompts.Template(
    "[BOS][Q]{query}[GEN_KW]", "{keywords}"
  )
  assert t["sidq_to_keyword_sids"] == prompts.Template(
    "[BOS][QID]{sid_q}[GEN_KWID]", "{keyword_sids}"
  )
  assert t["user_query_to_keywords"] == prompts.Template(
    "[BOS][UID]{uid}[Q]{query}[RC]{seq_short}[GEN_KW]", "{keywords}"
  )
  assert t["user_sidq_to_keyword_sids"] == prompts.Template(
    "[BOS][UID]{uid}[QID]{sid_q}[RC]{seq_short}[GEN_KWID]", "{keyword_sids}"
  )
  no_uid = prompts.cot_templates(dataclasses.replace(COT, user_id="none"))
  assert (
    no_uid["user_query_to_keywords"].inputs == "[BOS][Q]{query}[RC]{seq_short}[GEN_KW]"
  )
  words = prompts.cot_templates(dataclasses.replace(COT, prompt_style="words"))
  assert words["user_query_to_keywords"].inputs == (
    "[BOS] user id: {uid} [SEP] query: {query} [SEP] recently clicked items: "
    "{seq_short} [SEP] give related keywords: [EOS]"
  )
  assert [f"s1_{k}" for k in t] == list(prompts.COT_KINDS)


def test_cot_columns_on_hand_rows():
  table = SIDTable.synthetic(["i1", "i2"], ["red shoes", "tea", "lamp"], seed=1)
  gen = HandKeywords(
    {
      ("red shoes", ()): ("shoes", "red"),
      ("tea", ()): ("tea",),
      ("lamp", ()): (),  # no keyword: no query-level example
    }
  )
  sep = "[SEP]"
  s3 = [  # phase-3 rows (calibrated keywords already in the row)
    {"uid": "U1", "query": "red shoes", "sid_q": "Q1", "seq_short": "S1",
     "keywords": "shoes[SEP]red[SEP]nike", "profile": "p"},
    {"uid": "U1", "query": "red shoes", "sid_q": "Q1", "seq_short": "S1",
     "keywords": "shoes[SEP]red[SEP]nike", "profile": "p"},  # same: once
    {"uid": "U2", "query": "lamp", "sid_q": "Q3", "seq_short": "S2",
     "keywords": "none", "profile": "p"},  # no keyword: skipped
    {"uid": "U3", "query": "tea", "sid_q": "Q2", "seq_short": "S3",
     "keywords": "tea[SEP]green[SEP]cup[SEP]pot", "profile": "p"},
  ]  # fmt: skip
  skips = collections.Counter()
  cols = corpus_lib._cot_columns(
    ["lamp", "red shoes", "tea"], s3, table, COT, gen, fake_sids, skips
  )
  words = ("shoes", "red", "nike", "tea", "green", "cup", "pot")
  code = {k: fake_sids([k])[0] for k in words}
  assert cols["s1_query_to_keywords"] == {
    "query": ["red shoes", "tea"],
    "keywords": ["shoes[SEP]red", "tea"],
  }
  assert cols["s1_sidq_to_keyword_sids"] == {
    "sid_q": [table.query_sid("red shoes"), table.query_sid("tea")],
    "keyword_sids": [code["shoes"] + sep + code["red"], code["tea"]],
  }
  assert cols["s1_user_query_to_keywords"] == {
    "uid": ["U1", "U3"],
    "query": ["red shoes", "tea"],
    "seq_short": ["S1", "S3"],
    "keywords": ["shoes[SEP]red[SEP]nike", "tea[SEP]green[SEP]cup[SEP]pot"],
  }
  # At most COT_MAX_KEYWORD_SIDS (3) keyword SIDs: "pot" is left out.
  assert corpus_lib.COT_MAX_KEYWORD_SIDS == 3
  assert cols["s1_user_sidq_to_keyword_sids"]["keyword_sids"] == [
    sep.join(code[k] for k in ("shoes", "red", "nike")),
    sep.join(code[k] for k in ("tea", "green", "cup")),
  ]
  assert cols["s1_user_sidq_to_keyword_sids"]["sid_q"] == ["Q1", "Q2"]
  assert skips == {"cot_query_without_keywords": 1, "cot_session_without_keywords": 1}


@pytest.fixture(scope="module")
def tiny(tiny_world_dir):
  world = world_source.read_world(tiny_world_dir)
  table = testing.synthetic_sid_table(tiny_world_dir)
  return world, table


def test_corpus_cot_tasks_on_the_tiny_world(tiny):
  world, table = tiny
  off = corpus_lib.build_corpus(world, table, museq.MuSeqConfig(keywords="builtin"))
  on = corpus_lib.build_corpus(world, table, COT, keyword_sids=fake_sids)
  assert not set(prompts.COT_KINDS) & set(off.columns)
  # Switching the tasks on adds the four kinds and changes nothing else.
  assert {k: v for k, v in on.columns.items() if k not in prompts.COT_KINDS} == (
    off.columns
  )
  gen = keyword_source.build_keyword_generator("builtin", world.items, world.recall)
  rows = list(on.rows("s1_query_to_keywords"))
  assert rows and len(rows) == on.count("s1_sidq_to_keyword_sids")
  for row, sid_row in zip(rows, on.rows("s1_sidq_to_keyword_sids"), strict=True):
    kws = gen.keywords(KeywordRequest(row["query"]))
    assert row["keywords"] == "[SEP]".join(kws) and kws
    assert sid_row["sid_q"] == table.query_sid(row["query"])
    assert sid_row["keyword_sids"] == "[SEP]".join(fake_sids(kws[:3]))
  # Personalised: the phase-3 prompt's (calibrated) keywords of its session.
  s3 = {
    (r["uid"], r["query"], r["seq_short"]): r["keywords"]
    for r in on.rows("s3_personal")
  }
  personal = list(on.rows("s1_user_query_to_keywords"))
  assert personal and len(set(map(str, personal))) == len(personal)
  calibrated = 0
  for row in personal:
    assert s3[(row["uid"], row["query"], row["seq_short"])] == row["keywords"]
    calibrated += row["keywords"] != "[SEP]".join(
      gen.keywords(KeywordRequest(row["query"]))
    )
  assert calibrated > 0  # the user changes some keyword lists


def test_vocab_markers_only_when_on_and_other_ids_unchanged(tiny, tmp_path):
  world, table = tiny
  sp = vocab_lib.SentencePieceConfig(vocab_size=300)
  base = museq.MuSeqConfig(keywords="builtin")
  corpus = corpus_lib.build_corpus(world, table, base)
  off = corpus_lib.build_vocabulary(corpus, table, base, sp)
  on = corpus_lib.build_vocabulary(corpus, table, COT, sp)
  assert off.layout.markers == () and on.layout.markers == prompts.COT_MARKERS
  assert on.vocab_size == off.vocab_size + 2
  for i, tok in enumerate(off.appended):
    assert on.token_id(tok) == off.token_id(tok) == off.sp_size + i
  for m in prompts.COT_MARKERS:
    with pytest.raises(KeyError):
      off.token_id(m)
    assert on.encode(f"x{m}y").count(on.token_id(m)) == 1
    assert len(off.encode(m)) > 1  # plain text without the switch
  # The main job's vocab.json and fingerprint have no "markers" key.
  off.save(tmp_path / "off")
  raw = json.loads((tmp_path / "off" / "vocab.json").read_text())
  assert raw == {"d_range": 32, "levels": [8, 4, 4], "user_buckets": 0}
  h = hashlib.sha256(off.sp_model)
  h.update(json.dumps(raw, sort_keys=True).encode())
  assert off.fingerprint() == h.hexdigest()
  on.save(tmp_path / "on")
  assert vocab_lib.OneSearchVocabulary.load(tmp_path / "on") == on
  with pytest.raises(ValueError, match="markers"):
    vocab_lib.VocabLayout(levels=(2, 2, 2), markers=("[GEN_IID]",))


def test_registered_cot_tasks_carry_their_marker(tiny_world_dir, tiny):
  _, table = tiny
  reg = tasks.register_tasks(
    tiny_world_dir, sid_table=table, config=COT, keyword_sids=fake_sids, prefix="cot_t"
  )
  vocab = reg.vocabulary
  kw, kwid = (vocab.token_id(m) for m in prompts.COT_MARKERS)
  for kind in prompts.COT_KINDS:
    assert reg.counts[kind] > 0 and kind in reg.tasks
    marker = kwid if "keyword_sids" in kind else kw
    ds = seqio.get_mixture_or_task(reg.tasks[kind]).get_dataset(
      {"inputs": 128, "targets": 32}, split="train", shuffle=False
    )
    for ex in ds.take(3).as_numpy_iterator():
      inputs = list(ex["inputs"])
      assert inputs[-2:] == [marker, vocab_lib.EOS_ID]
      assert marker not in list(ex["targets"])
  with pytest.raises(ValueError, match="needs keyword_sids"):
    tasks.register_tasks(tiny_world_dir, sid_table=table, config=COT, prefix="cot_u")


def test_direct_cot_target_is_the_thought_then_the_sid(tiny):
  world, table = tiny
  t = prompts.phase3_template(DIRECT)
  v1 = prompts.phase3_template(museq.MuSeqConfig())
  assert t.inputs == v1.inputs  # keywords leave the input
  assert t.targets == "{keywords}[GEN_IID]{target}"
  rag = corpus_lib.build_corpus(world, table, museq.MuSeqConfig(keywords="builtin"))
  direct = corpus_lib.build_corpus(world, table, DIRECT)
  for kind in ("s3_personal", "s3_query", "eval_click"):
    for r_rag, r_dir in zip(rag.rows(kind), direct.rows(kind), strict=True):
      assert r_rag == r_dir
      target = prompts.render(t.targets, r_dir)
      assert target == r_dir["keywords"] + "[GEN_IID]" + r_dir["target"]
      assert prompts.render(t.inputs, r_dir) == prompts.render(v1.inputs, r_dir)
      assert "[TEXT]" not in prompts.render(t.inputs, r_dir)


def test_keyword_sids_encode_like_query_sids(tiny_sid_build):
  _, sid_dir, _, _ = tiny_sid_build
  table = SIDTable.from_artefact(sid_dir)
  queries = list(table.query_texts[:40])
  fn = keyword_sids.artefact_keyword_sids(sid_dir)
  # A text the artefact encoded as a query gets the same SID again.
  assert fn(queries) == [table.query_sid(q) for q in queries]
  assert fn([]) == []
  assert np.all([s.startswith("<a_") for s in fn(["shoes", "red"])])
