"""Query-like item phrases (``s2_phrase_to_sidi``): the phrases of an item,
the row order, their SID_q, and the task in the corpus, the vocabulary and
the registered datasets."""

from __future__ import annotations

import collections

import pytest
import seqio

from onesearch_jax import testing
from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import item_phrases, museq, prompts, tasks, world_source
from onesearch_jax.train import sft_config

ON = museq.MuSeqConfig(item_phrases="items")
CLICKS = museq.MuSeqConfig(item_phrases="clicks")


def fake_sids(texts):
  """A stand-in for the artefact's text SIDs: a code from the text."""
  return [f"<a_{len(t) % 8}><b_{len(t) % 4}><c_0><d_1><d_17>" for t in texts]


def _item(item_id, brand, l3, attributes=None):
  row = {"item_id": item_id, "brand_name": brand, "category_level3_name": l3}
  if attributes is not None:
    row["attributes"] = attributes
  return row


def test_phrases_of_hand_rows():
  it = _item(
    "i1",
    "ansa",
    "bag",
    {"entity": "handbag", "brand": "ansa", "color": "yellow", "audience": "girls"},
  )
  assert item_phrases.phrases_of(it) == [
    "ansa handbag",
    "yellow handbag",
    "girls handbag",
  ]
  # No attributes: the brand phrase on the level-3 name only.
  assert item_phrases.phrases_of(_item("i2", "kalu", "rain boots")) == [
    "kalu rain boots"
  ]
  # Duplicates and empty values give nothing more.
  it = _item("i3", "x", "tea", {"color": "x", "style": " ", "pattern": "x"})
  assert item_phrases.phrases_of(it) == ["x tea"]


def test_phrase_rows_order_sid_q_and_skips():
  items = [
    _item(f"i{k}", f"b{k}", "tea", {"color": c, "size": "big"})
    for k, c in enumerate(["red", "green", "blue", "red"])
  ] + [_item("nosid", "b9", "tea")]
  sid = {f"i{k}": f"<a_{k}><b_0><c_0><d_0><d_16>" for k in range(4)}
  known = {"red tea": "<a_7><b_3><c_0><d_2><d_18>"}
  encoded = []

  def text_sids(texts):
    encoded.append(list(texts))
    return fake_sids(texts)

  skips = collections.Counter()
  rows = item_phrases.phrase_rows(
    items, sid.__getitem__, sid.__contains__, known.get, text_sids, skips
  )
  assert skips == {"s2_phrase_item_without_sid": 1}
  # Every (phrase, item) pair exactly once.
  want = {
    (p, sid[it["item_id"]]) for it in items[:4] for p in item_phrases.phrases_of(it)
  }
  got = [(r["query"], r["sid_i"]) for r in rows]
  assert len(got) == len(set(got)) == len(want) == 12 and set(got) == want
  # Round-robin: each item's first phrase comes before any item's second.
  assert len({r["sid_i"] for r in rows[:4]}) == 4
  assert len({r["sid_i"] for r in rows[4:8]}) == 4
  # SID_q: the query table's where known, else the encoder's (each distinct
  # unknown phrase encoded once).
  for r in rows:
    assert r["sid_q"] == (known.get(r["query"]) or fake_sids([r["query"]])[0])
  assert len(encoded) == 1 and sorted(encoded[0]) == encoded[0]
  assert "red tea" not in encoded[0] and len(encoded[0]) == len(set(encoded[0])) == 7
  # The order is fixed (the corpus is data).
  again = item_phrases.phrase_rows(
    items,
    sid.__getitem__,
    sid.__contains__,
    known.get,
    fake_sids,
    collections.Counter(),
  )
  assert again == rows


def test_click_targets_follow_the_train_clicks():
  items = [
    _item("i0", "b", "tea", {"color": "red"}),
    _item("i1", "b", "tea", {"color": "red"}),
    _item("i2", "b", "tea", {"color": "green"}),
    _item("i3", "c", "mug"),
  ]
  sid = {f"i{k}": f"<a_{k}><b_0><c_0><d_0><d_16>" for k in range(4)}
  skips = collections.Counter()
  rows = item_phrases.phrase_rows(
    items,
    sid.__getitem__,
    sid.__contains__,
    lambda p: None,
    fake_sids,
    skips,
    clicks={"i0": 3, "i1": 1, "i2": 0},  # i3 never clicked
  )
  # "green tea" (i2) and "c mug" (i3) have no clicked item: no rows.
  assert skips == {"s2_phrase_without_clicks": 2}
  # A phrase gives as many rows as it has items, targets among the clicked.
  assert collections.Counter(r["query"] for r in rows) == {"b tea": 3, "red tea": 2}
  assert {r["sid_i"] for r in rows} <= {sid["i0"], sid["i1"]}
  assert all(r["sid_q"] == fake_sids([r["query"]])[0] for r in rows)
  # Proportions: 2,000 items of one phrase, even ones clicked 3x as often.
  many = [_item(f"j{k}", "b", "tea") for k in range(2000)]
  rows = item_phrases.phrase_rows(
    many,
    lambda i: i,
    lambda i: True,
    lambda p: None,
    fake_sids,
    collections.Counter(),
    clicks={f"j{k}": 3 if k % 2 == 0 else 1 for k in range(2000)},
  )
  even = sum(int(r["sid_i"][1:]) % 2 == 0 for r in rows)
  assert len(rows) == 2000 and 1425 < even < 1575  # 0.75 +- 4 sd


@pytest.fixture(scope="module")
def tiny(tiny_world_dir):
  return world_source.read_world(tiny_world_dir), testing.synthetic_sid_table(
    tiny_world_dir
  )


def test_corpus_adds_the_phrase_kind_and_nothing_else(tiny):
  world, table = tiny
  off = corpus_lib.build_corpus(world, table, museq.MuSeqConfig())
  on = corpus_lib.build_corpus(world, table, ON, keyword_sids=fake_sids)
  assert "s2_phrase_to_sidi" not in off.columns
  assert {
    k: v for k, v in on.columns.items() if k != "s2_phrase_to_sidi"
  } == off.columns
  assert on.texts == off.texts  # the vocabulary does not change
  rows = list(on.rows("s2_phrase_to_sidi"))
  by_sid = collections.defaultdict(set)
  for it in world.items:
    if it["item_id"] in table.item_row:
      by_sid[table.item_sid(it["item_id"])].update(item_phrases.phrases_of(it))
  assert len(rows) == sum(
    len(item_phrases.phrases_of(it))
    for it in world.items
    if it["item_id"] in table.item_row
  )
  for r in rows:
    assert r["query"] in by_sid[r["sid_i"]]
    if r["query"] in table.query_row:
      assert r["sid_q"] == table.query_sid(r["query"])
  with pytest.raises(ValueError, match="needs keyword_sids"):
    corpus_lib.build_corpus(world, table, ON)
  # "clicks": every target was clicked in train for an item of the phrase.
  clicked = collections.Counter(
    i for r in world.recall if r["split"] == "train" for i in r["clicked_item_ids"]
  )
  by = corpus_lib.build_corpus(world, table, CLICKS, keyword_sids=fake_sids)
  click_rows = list(by.rows("s2_phrase_to_sidi"))
  clicked_sids = {table.item_sid(i) for i in clicked if i in table.item_row}
  assert click_rows and all(r["sid_i"] in clicked_sids for r in click_rows)
  assert all(r["query"] in by_sid[r["sid_i"]] for r in click_rows)


def test_off_switch_keeps_the_hashed_config():
  assert "item_phrases" not in museq.config_dict(museq.MuSeqConfig())
  on = sft_config.config_to_dict(sft_config.SFTConfig(museq=ON))
  assert on["museq"]["item_phrases"] == "items"
  assert sft_config.config_from_dict(on).museq == ON
  with pytest.raises(ValueError, match="item_phrases must be one of"):
    museq.MuSeqConfig(item_phrases=True)


def test_registered_phrase_task_reads_as_a_query(tiny_world_dir, tiny):
  world, table = tiny
  reg = tasks.register_tasks(
    tiny_world_dir, sid_table=table, config=ON, keyword_sids=fake_sids, prefix="phr_t"
  )
  rows = corpus_lib.build_corpus(world, table, ON, keyword_sids=fake_sids).rows(
    "s2_phrase_to_sidi"
  )
  kind = "s2_phrase_to_sidi"
  assert reg.counts[kind] > 0 and kind in reg.tasks
  # Left out of the phase mixtures (sampled where SFTConfig.phase_tasks says).
  for mixture in reg.mixtures.values():
    names = [t.name for t in seqio.get_mixture_or_task(mixture).tasks]
    assert reg.tasks[kind] not in names
  t = prompts.phase2_templates(ON)["phrase_to_sidi"]
  assert t == prompts.phase2_templates(ON)["query_to_sidi"]
  ds = seqio.get_mixture_or_task(reg.tasks[kind]).get_dataset(
    {"inputs": 64, "targets": 8}, split="train", shuffle=False
  )
  vocab = reg.vocabulary
  for ex, row in zip(ds.take(3).as_numpy_iterator(), rows, strict=False):
    assert vocab.decode(ex["inputs"].tolist()) == prompts.render(t.inputs, row)
    assert vocab.decode(ex["targets"].tolist()) == row["sid_i"]
  with pytest.raises(ValueError, match="needs keyword_sids"):
    tasks.register_tasks(tiny_world_dir, sid_table=table, config=ON, prefix="phr_u")
