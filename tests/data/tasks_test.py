"""Task registration, example contents and counts against brute force."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import seqio

from onesearch_jax import testing
from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import museq, prompts, tasks, world_source
from onesearch_jax.data.sid_table import SIDTable, sid_string


def _recall(world_dir):
  return [json.loads(x) for x in open(world_dir / "recall.jsonl", encoding="utf-8")]


def _first(name, split="train", n=1):
  ds = seqio.get_mixture_or_task(name).get_dataset(
    sequence_length=None, split=split, shuffle=False
  )
  return list(ds.take(n).as_numpy_iterator())


def test_registers_every_task_and_mixture(registered):
  kinds = {
    "s1_query_to_sid",
    "s1_sid_to_query",
    "s1_title_to_sid",
    "s1_sid_to_title",
    "s1_text_to_category",
    "s1_sid_to_category",
    "s2_query_to_title",
    "s2_title_to_query",
    "s2_sidq_to_sidi",
    "s2_sidi_to_sidq",
    "s2_query_to_sidi",
    "s3_personal",
    "s3_window",
    "s3_query",
    "eval_click",
    "eval_order",
  }
  assert set(registered.tasks) == kinds
  assert all(n in seqio.TaskRegistry.names() for n in registered.tasks.values())
  assert set(registered.mixtures) == {"phase1", "phase2", "phase3"}
  for phase, mname in registered.mixtures.items():
    mix = seqio.get_mixture_or_task(mname)
    for task in mix.tasks:
      kind = task.name.removeprefix("test_small_")
      assert kind.startswith("s" + phase[-1]) and kind not in corpus_lib.AUGMENT_KINDS
      assert mix.get_rate(task) == registered.counts[kind]


def test_registration_is_idempotent_and_replaceable(
  small_world, small_table, registered
):
  again = tasks.register_tasks(small_world, sid_table=small_table, prefix="test_small")
  assert again is registered
  other = tasks.register_tasks(
    small_world,
    sid_table=small_table,
    prefix="test_small_b",
    config=museq.MuSeqConfig(sliding_window=False),
  )
  assert "s3_window" not in other.tasks
  assert [
    t.name for t in seqio.get_mixture_or_task(other.mixtures["phase3"]).tasks
  ] == ["test_small_b_s3_personal"]
  replaced = tasks.register_tasks(
    small_world, sid_table=small_table, prefix="test_small_b"
  )
  assert "test_small_b_s3_window" in seqio.TaskRegistry.names()
  assert replaced.counts == registered.counts


def test_counts_against_brute_force(small_world, small_table, registered):
  recall = _recall(small_world)
  train = [r for r in recall if r["split"] == "train"]
  test = [r for r in recall if r["split"] == "test"]
  c = registered.counts
  assert c["s1_title_to_sid"] == len(small_table.item_ids)
  assert c["s1_query_to_sid"] == len({r["query"] for r in train})
  pairs = {(r["query"], i) for r in train for i in r["clicked_item_ids"]}
  assert c["s2_query_to_title"] == len(pairs) == c["s2_sidi_to_sidq"]
  assert c["s2_query_to_sidi"] == len(pairs)
  assert c["s3_personal"] == sum(len(r["clicked_item_ids"]) for r in train)
  assert c["eval_click"] == sum(1 for r in test if r["clicked_item_ids"])
  assert c["eval_order"] == sum(1 for r in test if r["purchased_item_ids"])
  assert c["s3_window"] > 0
  assert c["s3_query"] == c["s3_personal"]


def test_s3_query_rows_are_personal_rows_without_user(small_world, small_table):
  corpus = corpus_lib.build_corpus(
    world_source.read_world(small_world), small_table, museq.MuSeqConfig()
  )
  personal, query = corpus.columns["s3_personal"], corpus.columns["s3_query"]
  assert set(personal) == set(query)
  user_text = {"uid", "seq_q", "seq_short", "profile"}
  user_rows = {"long_click", "long_order", "long_rsu"}
  for k in personal:
    if k in user_text:
      assert set(query[k]) == {prompts.EMPTY}
    elif k in user_rows:
      assert all(v == [] for v in query[k])
    else:  # query, SID_q and the target are the personal row's
      assert query[k] == personal[k], k
  # The blanked segments were not blank in the personal rows.
  for k in user_text | user_rows:
    assert any(v not in (prompts.EMPTY, []) for v in personal[k]), k


def test_examples_decode_to_rendered_prompts(small_world, small_table, registered):
  corpus = corpus_lib.build_corpus(
    world_source.read_world(small_world), small_table, museq.MuSeqConfig()
  )
  v = registered.vocabulary
  cfg = museq.MuSeqConfig()
  templates = {f"s1_{k}": t for k, t in prompts.phase1_templates(cfg).items()}
  templates.update({f"s2_{k}": t for k, t in prompts.phase2_templates(cfg).items()})
  s3 = prompts.phase3_template(cfg)
  for kind, name in registered.tasks.items():
    split = "test" if kind.startswith("eval") else "train"
    t = templates.get(kind, s3)
    cols = corpus.columns[kind]
    for n, ex in enumerate(_first(name, split, n=2)):
      fields = {k: v_[n] for k, v_ in cols.items() if isinstance(v_[n], str)}
      assert ex["inputs_pretokenized"].decode() == prompts.render(t.inputs, fields)
      assert v.decode(ex["inputs"].tolist()) == prompts.render(t.inputs, fields)
      assert ex["targets"][-1] == 1  # EOS
      assert v.decode(ex["targets"].tolist()) == prompts.render(t.targets, fields)
      if kind.startswith(("s3", "eval")):
        assert ex["long_seq"].shape == (9, small_table.dim)


def test_sid_targets_are_five_sid_tokens(registered):
  v = registered.vocabulary
  ex = _first(registered.tasks["s3_personal"])[0]
  tgt = ex["targets"].tolist()
  assert len(tgt) == 6
  for tok, fam in zip(tgt[:5], "abcdd", strict=True):
    assert tok in v.level_range(fam)


def test_eval_examples_carry_ids(small_world, registered):
  by_session = {r["session_id"]: r for r in _recall(small_world)}
  for kind, field in (
    ("eval_click", "clicked_item_ids"),
    ("eval_order", "purchased_item_ids"),
  ):
    for ex in _first(registered.tasks[kind], "test", n=5):
      r = by_session[ex["session_id"].decode()]
      assert r["split"] == "test"
      assert ex["user_id"].decode() == r["user_id"]
      assert ex["query"].decode() == r["query"]
      assert [x.decode() for x in ex["target_item_ids"]] == r[field]


def test_no_leakage_of_test_day_into_training_tasks(tmp_path, small_table):
  world = testing.write_small_world(tmp_path / "w", seed=3)
  table = testing.synthetic_sid_table(world, seed=3)
  full = corpus_lib.build_corpus(
    world_source.read_world(world), table, museq.MuSeqConfig()
  )
  rows = [r for r in _recall(world) if r["split"] == "train"]
  with open(world / "recall.jsonl", "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  trained = corpus_lib.build_corpus(
    world_source.read_world(world), table, museq.MuSeqConfig()
  )
  for kind in full.columns:
    if kind.startswith("eval"):
      assert trained.count(kind) == 0 and full.count(kind) > 0
    else:
      assert trained.columns[kind] == full.columns[kind], kind


def test_ablation_switches(small_world, small_table):
  world = world_source.read_world(small_world)
  hashed = corpus_lib.build_corpus(
    world, small_table, museq.MuSeqConfig(user_id="hashed", user_hash_buckets=5)
  )
  uids = hashed.columns["s3_personal"]["uid"]
  assert set(uids) <= {f"<u_{i}>" for i in range(5)} and len(set(uids)) > 1
  base = corpus_lib.build_corpus(world, small_table, museq.MuSeqConfig())
  assert any("<a_" in u for u in base.columns["s3_personal"]["uid"])
  nowin = corpus_lib.build_corpus(
    world, small_table, museq.MuSeqConfig(sliding_window=False)
  )
  assert "s3_window" not in nowin.columns
  reg = tasks.register_tasks(
    small_world,
    sid_table=small_table,
    prefix="test_ablate",
    config=museq.MuSeqConfig(
      user_id="hashed", user_hash_buckets=5, use_long_seq=False, use_seq_short=False
    ),
  )
  assert len(reg.vocabulary.level_range("u")) == 5
  ex = _first(reg.tasks["s3_personal"], n=3)[-1]
  text = ex["inputs_pretokenized"].decode()
  assert "<u_" in text and "[EMB]" not in text and "recently clicked" not in text
  assert not ex["long_seq"].any() and not ex["long_seq_mask"].any()


def test_missing_query_sid_is_counted_not_silent(small_world, small_table):
  keep = small_table.query_texts[1:]
  table = SIDTable(
    item_ids=small_table.item_ids,
    item_codes=small_table.item_codes,
    query_texts=keep,
    query_codes=small_table.query_codes[1:],
    levels=small_table.levels,
    opq_codes=small_table.opq_codes,
    rq_centroids=small_table.rq_centroids,
  )
  corpus = corpus_lib.build_corpus(
    world_source.read_world(small_world), table, museq.MuSeqConfig()
  )
  dropped = small_table.query_texts[0]
  n_sessions = collections.Counter(
    r["query"] for r in _recall(small_world) if r["split"] == "train"
  )[dropped]
  assert n_sessions > 0
  assert corpus.skips["s1_query_without_sid"] == 1
  assert corpus.skips["s3_query_without_sid"] > 0
  assert dropped not in corpus.columns["s3_personal"]["query"]
  assert np.all(np.asarray(corpus.columns["s1_query_to_sid"]["query"]) != dropped)


def test_register_requires_one_sid_source(small_world, small_table):
  with pytest.raises(ValueError, match="exactly one"):
    tasks.register_tasks(small_world)


def test_simulated_world_no_leakage_and_strict_time(tiny_world_dir):
  """The simulator's tiny world: train features never see the test day."""
  from onesearch_jax.data import inspect

  world = world_source.read_world(tiny_world_dir)
  table = inspect._synthetic_table(str(tiny_world_dir))
  codes = {i: table.item_codes[r] for i, r in table.item_row.items()}

  def index(recall):
    return museq.MuSeqIndex(
      world.users, world.items, recall, codes, table.code_ranges, museq.MuSeqConfig()
    )

  full = index(world.recall)
  split_of = {r["session_id"]: r["split"] for r in world.recall}
  train = full.train_examples() + full.window_examples()
  assert len(train) > 1000 and full.eval_examples("click")
  for ex in train:
    f = ex.features
    assert all(t < ex.session.time for t in f.seq_short_times)
    assert all(split_of[s] == "train" for s in f.seq_short_sessions if s)
  only_train = index([r for r in world.recall if r["split"] == "train"])
  train2 = only_train.train_examples() + only_train.window_examples()

  def key(e):
    f = e.features
    uid = None if f.uid_codes is None else f.uid_codes.tolist()
    return (
      e.session.session_id,
      e.targets,
      f.seq_short,
      f.seq_q,
      f.long_click,
      f.long_order,
      f.long_rsu,
      uid,
    )

  assert [key(e) for e in train2] == [key(e) for e in train]


def test_register_from_khqe_artefact(small_world, small_table, tmp_path):
  """sid_dir path: a KHQE artefact (3 RQ codes, no OPQ) drives the tasks."""
  from onesearch_jax.khqe import artefact, quantizer, rq

  l1, l2, l3 = small_table.rq_centroids
  q = quantizer.Quantizer(
    config=quantizer.QuantizerConfig(levels=small_table.levels, opq_subspaces=0),
    rq=rq.RQCodebooks(l1=l1, l2=l2, l3=l3, l3_mode="parent"),
    opq=None,
  )
  art = artefact.SIDArtefact(
    quantizer=q,
    item_ids=small_table.item_ids,
    item_codes=small_table.item_codes[:, :3],
    item_popularity=np.zeros(len(small_table.item_ids)),
    query_texts=small_table.query_texts,
    query_codes=small_table.query_codes[:, :3],
  )
  artefact.save(art, tmp_path / "sids")
  reg = tasks.register_tasks(
    small_world, tmp_path / "sids", prefix="test_art", vocab_dir=tmp_path / "vocab"
  )
  assert (tmp_path / "vocab" / "spm.model").is_file()
  assert len(reg.vocabulary.level_range("d")) == 0
  ex = _first(reg.tasks["s3_personal"])[0]
  assert len(ex["targets"]) == 4  # <a><b><c> + EOS
  first = min(
    (
      r for r in _recall(small_world) if r["split"] == "train" and r["clicked_item_ids"]
    ),
    key=lambda r: (r["time_index"], r["session_id"]),
  )
  row = small_table.item_row[first["clicked_item_ids"][0]]
  want = sid_string(small_table.item_codes[row][:3], small_table.opq_codes)
  assert reg.vocabulary.decode(ex["targets"].tolist()) == want
  again = tasks.register_tasks(
    small_world, tmp_path / "sids", prefix="test_art", vocab_dir=tmp_path / "vocab"
  )
  assert again is reg


def test_shuffle_rows_is_a_seeded_full_permutation(
  small_world, small_table, registered
):
  """MuSeqConfig.shuffle_rows: train rows in a full seeded shuffle at the source.

  Expected from the definition: over one epoch the stream is a permutation
  of the corpus rows (nothing dropped or repeated), it is not the corpus
  order, the same seed gives the same order, another seed another; the
  eval path (shuffle=False) keeps the corpus order; off, the source is the
  corpus order (only the Task's example buffer would shuffle).
  """
  reg = tasks.register_tasks(
    small_world,
    sid_table=small_table,
    prefix="test_shuf",
    config=museq.MuSeqConfig(shuffle_rows=True),
  )

  def rows(registration, seed, shuffle=True):
    source = seqio.get_mixture_or_task(registration.tasks["s3_window"]).source
    ds = source.get_dataset(split="train", shuffle=shuffle, seed=seed)
    return [
      tuple((k, np.asarray(ex[k]).tobytes()) for k in sorted(ex))
      for ex in ds.as_numpy_iterator()
    ]

  corpus_order = rows(registered, 0, shuffle=False)
  assert len(corpus_order) == registered.counts["s3_window"] > 50
  a, a2, b = rows(reg, 3), rows(reg, 3), rows(reg, 4)
  assert sorted(a) == sorted(corpus_order) and len(a) == len(corpus_order)
  assert a != corpus_order and a == a2 and a != b
  assert rows(reg, 3, shuffle=False) == corpus_order
  assert rows(registered, 3) == corpus_order  # off: corpus order at the source
