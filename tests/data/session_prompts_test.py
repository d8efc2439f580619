"""Host-side phase-3 prompts == the seqio tasks' examples; requests; reader."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest
import seqio

from onesearch_jax.data import inspect, museq, pipeline, tasks, world_source
from onesearch_jax.data import session_prompts as sp
from onesearch_jax.data import vocab as vocab_lib

L = 80  # some of the tiny world's eval prompts are longer (trimmed)
_SID_RE = re.compile(r"<[abcd]_\d+>")


@pytest.fixture(scope="module")
def setup(tiny_world_dir):
  world = world_source.read_world(tiny_world_dir)
  table = inspect._synthetic_table(str(tiny_world_dir))
  reg = tasks.register_tasks(tiny_world_dir, sid_table=table, prefix="test_prompts")
  prompter = sp.SessionPrompter(world, table, reg.vocabulary, inputs_length=L)
  return world, table, reg, prompter


def _examples(reg, kind, split, n=None):
  ds = seqio.get_mixture_or_task(reg.tasks[kind]).get_dataset(
    sequence_length=pipeline.task_feature_lengths(L, 8, dense=True),
    split=split,
    shuffle=False,
  )
  if n is not None:
    ds = ds.take(n)
  return list(ds.as_numpy_iterator())


def _padded(ids):
  out = np.zeros(L, np.int32)
  out[: len(ids)] = ids
  return out


def test_requests_equal_every_eval_click_example(setup):
  world, table, reg, prompter = setup
  rows = {r["session_id"]: r for r in world.recall}
  exs = _examples(reg, "eval_click", "test")
  assert len(exs) == reg.counts["eval_click"] > 100
  reqs = [
    sp.Request(
      e["user_id"].decode(),
      e["query"].decode(),
      int(rows[e["session_id"].decode()]["time_index"]),
    )
    for e in exs
  ]
  got = prompter.for_requests(reqs, with_mask=True)
  assert got["encoder_input_tokens"].shape == (len(exs), L)
  assert got["encoder_input_tokens"].dtype == np.int32
  assert got["long_seq_features"].shape == (len(exs), 9, table.dim)
  assert got["long_seq_features"].dtype == np.float32
  n_trimmed = 0
  for k, e in enumerate(exs):
    assert len(e["inputs"]) <= L and e["inputs"][-1] == vocab_lib.EOS_ID
    n_trimmed += len(e["inputs"]) == L
    np.testing.assert_array_equal(got["encoder_input_tokens"][k], _padded(e["inputs"]))
    np.testing.assert_array_equal(got["long_seq_features"][k], e["long_seq"])
    np.testing.assert_array_equal(got["long_seq_mask"][k], e["long_seq_mask"])
  assert 0 < n_trimmed < len(exs)  # both the trim and the pad are exercised
  assert got["long_seq_mask"].any() and not got["long_seq_mask"].all()
  # The same test sessions by id (eval features: every interaction before t).
  by_id = prompter.for_sessions([e["session_id"].decode() for e in exs])
  assert set(by_id) == {"encoder_input_tokens", "long_seq_features"}
  for key in by_id:
    np.testing.assert_array_equal(by_id[key], got[key])


def test_sessions_equal_s3_personal_examples(setup):
  world, table, reg, prompter = setup
  # s3_personal = one example per (train session, clicked item), sessions in
  # (time, session id) order: derived here from the raw rows.
  train = sorted(
    (r for r in world.recall if r["split"] == "train"),
    key=lambda r: (int(r["time_index"]), r["session_id"]),
  )
  pairs = [(r["session_id"], i) for r in train for i in r["clicked_item_ids"]]
  n = 400
  exs = _examples(reg, "s3_personal", "train", n)
  ids = [s for s, _ in pairs[:n]]
  got = prompter.for_sessions(ids, with_mask=True)
  v = reg.vocabulary
  for k, e in enumerate(exs):
    assert v.decode(e["targets"][:-1].tolist()) == table.item_sid(pairs[k][1])
    np.testing.assert_array_equal(got["encoder_input_tokens"][k], _padded(e["inputs"]))
    np.testing.assert_array_equal(got["long_seq_features"][k], e["long_seq"])
    np.testing.assert_array_equal(got["long_seq_mask"][k], e["long_seq_mask"])
  assert got["long_seq_mask"].any()


def test_sid_tokens_are_their_own_ids(setup):
  world, table, reg, prompter = setup
  v = reg.vocabulary
  sess = next(
    s
    for s in prompter.index.sessions
    if s.split == "train" and not prompter.features(s.session_id).cold_start
  )
  text = prompter.prompt_text(sess.session_id)
  ids = v.encode(text)
  assert v.decode(ids) == text
  # Every SID token string is exactly one id, in order, and nothing else of
  # the prompt falls in the SID ranges.
  sid_range = range(v.range_start["a"], v.range_start["u"])
  assert [i for i in ids if i in sid_range] == [
    v.token_id(t) for t in _SID_RE.findall(text)
  ]
  # The query SID and each recent item's SID are contiguous runs of 5 ids.
  f = prompter.features(sess.session_id)
  assert f.seq_short
  for sid in [table.query_sid(sess.query)] + [table.item_sid(i) for i in f.seq_short]:
    run = [v.token_id(t) for t in _SID_RE.findall(sid)]
    assert len(run) == table.code_width
    assert any(ids[j : j + len(run)] == run for j in range(len(ids))), sid
  # No sentencepiece id sits between two tokens of one SID.
  for a, b in zip(ids, ids[1:], strict=False):
    if a in sid_range and v.appended[a - v.sp_size].startswith("<d_"):
      continue
    if a in sid_range:
      assert b in sid_range, (v.appended[a - v.sp_size], b)


def _train_clicks(world, query, t):
  """Brute force: train-split click counts of a query before t."""
  c = collections.Counter()
  for r in world.recall:
    if r["split"] == "train" and r["query"] == query and int(r["time_index"]) < t:
      c.update(r["clicked_item_ids"])
  return c


def test_unknown_user_is_cold_start(setup):
  world, table, reg, prompter = setup
  t = max(int(r["time_index"]) for r in world.recall)
  counts = collections.Counter(r["query"] for r in world.recall)
  query = counts.most_common(1)[0][0]
  clicks = _train_clicks(world, query, t)
  assert len(clicks) >= 5
  top = sorted(clicks, key=lambda i: (-clicks[i], i))[:5][::-1]  # least first
  req = sp.Request("no-such-user", query, t)
  text = prompter.prompt_text(req)
  assert "[RC]" + "".join(table.item_sid(i) for i in top) + "[LT]" in text
  assert "[RQ]none[RC]" in text and "[PF]unknown[GEN_IID]" in text
  assert "[UID]none" not in text  # the default sequence gives a uid
  got = prompter.for_requests([req], with_mask=True)
  tokens = got["encoder_input_tokens"][0]
  n = int((tokens != 0).sum())
  assert tokens[n - 1] == vocab_lib.EOS_ID and not tokens[n:].any()
  assert tokens.max() < reg.vocabulary.vocab_size
  np.testing.assert_array_equal(got["long_seq_mask"][0], np.zeros(9))
  np.testing.assert_array_equal(got["long_seq_features"][0], 0.0)
  # Unknown user AND unknown query: every segment empty, still a valid prompt.
  req = sp.Request("no-such-user", "a query nobody typed", t)
  text = prompter.prompt_text(req)
  assert text == prompter.template.inputs.format(
    uid="none",
    query="a query nobody typed",
    sid_q="none",
    seq_q="none",
    seq_short="none",
    profile="unknown",
  )
  tokens = prompter.for_requests([req])["encoder_input_tokens"][0]
  assert reg.vocabulary.decode(tokens[tokens != 0][:-1].tolist()) == text


def test_unknown_query_of_a_known_user(setup):
  world, table, reg, prompter = setup
  s = next(
    s
    for s in reversed(prompter.index.sessions)
    if s.split == "test" and not prompter.features(s.session_id).cold_start
  )
  known = sp.Request(s.user_id, s.query, s.time)
  new = sp.Request(s.user_id, "brand new query 123", s.time)
  want = prompter.prompt_text(known).replace(
    f"[Q]{s.query}[QID]{table.query_sid(s.query)}",
    "[Q]brand new query 123[QID]none",
  )
  assert prompter.prompt_text(new) == want
  a, b = prompter.for_requests([known, new], with_mask=True)["long_seq_mask"]
  np.testing.assert_array_equal(b[:6], a[:6])  # click and order sequences
  np.testing.assert_array_equal(b[6:], 0)  # no category, no RSU


def test_request_time_none_sees_the_whole_log(setup):
  world, table, reg, prompter = setup
  last = max(world.recall, key=lambda r: (int(r["time_index"]), r["session_id"]))
  user = last["user_id"]
  rows = sorted(
    (r for r in world.recall if r["user_id"] == user),
    key=lambda r: (int(r["time_index"]), r["session_id"]),
  )
  queries = [r["query"] for r in rows][-5:]
  req = sp.Request(user, "x", None)
  assert prompter.end_time == int(last["time_index"]) + 1
  assert prompter.prompt_text(req) == prompter.prompt_text(
    sp.Request(user, "x", prompter.end_time)
  )
  assert "[RQ]" + "[SEP]".join(queries) + "[RC]" in prompter.prompt_text(req)


def test_errors_and_empty_batch(setup):
  world, table, reg, prompter = setup
  with pytest.raises(KeyError, match="nope"):
    prompter.for_sessions(["nope"])
  with pytest.raises(TypeError, match="Request"):
    prompter.for_requests([("u", "q")])
  out = prompter.for_sessions([])
  assert out["encoder_input_tokens"].shape == (0, L)
  assert out["long_seq_features"].shape == (0, 9, table.dim)
  with pytest.raises(ValueError, match="layout"):
    sp.SessionPrompter(
      world,
      table,
      reg.vocabulary,
      museq.MuSeqConfig(user_id="hashed"),
      inputs_length=L,
    )
  with pytest.raises(ValueError, match="time_index"):
    sp.Request("u", "q", 1.5)


def test_trim_and_pad_like_seqio():
  assert sp.trim_and_pad([5, 6, 7], 5).tolist() == [5, 6, 7, 1, 0]
  assert sp.trim_and_pad([5, 6, 7], 4).tolist() == [5, 6, 7, 1]
  assert sp.trim_and_pad([5, 6, 7], 3).tolist() == [5, 6, 1]
  assert sp.trim_and_pad([], 2).tolist() == [1, 0]


def test_read_requests_jsonl_and_tsv(tmp_path):
  p = tmp_path / "r.jsonl"
  p.write_text(
    json.dumps({"user_id": "u1", "query": "红色 dress"}, ensure_ascii=False)
    + "\n\n"
    + json.dumps({"user_id": "u2", "query": "q", "time_index": 7, "request_id": "a"})
    + "\n",
    encoding="utf-8",
  )
  assert sp.read_requests(p) == [
    sp.Request("u1", "红色 dress"),
    sp.Request("u2", "q", 7, "a"),
  ]
  t = tmp_path / "r.tsv"
  t.write_text("query\tuser_id\ttime_index\nred dress\tu1\t\nq\tu2\t7\n")
  assert sp.read_requests(t) == [
    sp.Request("u1", "red dress"),
    sp.Request("u2", "q", 7),
  ]


@pytest.mark.parametrize(
  "name,text,line,field",
  [
    ("a.jsonl", '{"user_id": "u", "query": "q"}\n{"user_id": "u"}\n', 2, "query"),
    ("b.jsonl", '{"user_id": "u", "query": "q", "time_index": "x"}\n', 1, "time_index"),
    ("c.jsonl", '{"user_id": 3, "query": "q"}\n', 1, "user_id"),
    ("d.jsonl", '{"user_id": "u", "query": "q", "when": 3}\n', 1, "when"),
    ("e.jsonl", '{"user_id": "u", "query": "  "}\n', 1, "query"),
    ("f.tsv", "user_id\tquery\nu\tq\nu\n", 3, "query"),
    ("g.tsv", "user_id\tquery\ttime_index\nu\tq\t1\nu\tq\tsoon\n", 3, "time_index"),
    ("h.tsv", "user_id\tqery\nu\tq\n", 1, "qery"),
    ("i.tsv", "user_id\ttime_index\nu\t3\n", 1, "query"),
  ],
)
def test_read_requests_errors_name_file_line_field(tmp_path, name, text, line, field):
  p = tmp_path / name
  p.write_text(text)
  with pytest.raises(ValueError) as err:
    sp.read_requests(p)
  msg = str(err.value)
  assert msg.startswith(f"{p}:{line}: ") and f"'{field}'" in msg, msg


def test_read_requests_bad_json_and_extension(tmp_path):
  p = tmp_path / "x.jsonl"
  p.write_text('{"user_id": "u", "query": "q"}\n{oops\n')
  with pytest.raises(ValueError, match=r"x\.jsonl:2: invalid JSON"):
    sp.read_requests(p)
  with pytest.raises(ValueError, match="unknown request file type"):
    sp.read_requests(tmp_path / "x.csv")
