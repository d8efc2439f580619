"""The streamed data path (lazy table readers, item tasks read from
items.jsonl) gives the same rows and examples as the in-memory one."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import seqio
import tensorflow as tf

from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import museq, preprocessors, tasks, world_source
from onesearch_jax.data.sid_table import SIDTable


def _raw(world_dir, name):
  with open(world_dir / f"{name}.jsonl", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def test_iter_table_yields_the_rows_of_read_world(small_world, monkeypatch):
  for schema_reader in (True, False):
    monkeypatch.setattr(world_source, "USE_SCHEMA_READER", schema_reader)
    eager = world_source.read_world(small_world)
    for name in ("users", "items", "recall"):
      lazy = world_source.iter_table(small_world, name)
      assert not isinstance(lazy, list)
      assert list(lazy) == getattr(eager, name) == _raw(small_world, name)


@pytest.fixture(scope="module")
def padded_world(small_world, tmp_path_factory):
  """The small world plus 5 catalogue items that no session shows."""
  out = tmp_path_factory.mktemp("padded_world")
  for f in small_world.iterdir():
    if f.suffix == ".jsonl":
      shutil.copy(f, out / f.name)
  extra = []
  for n, row in enumerate(_raw(small_world, "items")[:5]):
    extra.append({**row, "item_id": f"unseen{n}", "item_title": f"unseen item {n}"})
  with open(out / "items.jsonl", "a", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in extra)
  return out


def test_referenced_items_are_the_clicked_and_purchased_ones(padded_world):
  small_world = padded_world
  world = world_source.read_world(small_world, items="referenced")
  wanted = {
    i
    for r in _raw(small_world, "recall")
    for i in r["clicked_item_ids"] + r["purchased_item_ids"]
  }
  assert world.items == [
    r for r in _raw(small_world, "items") if r["item_id"] in wanted
  ]
  assert 0 < len(world.items) < len(_raw(small_world, "items"))
  with pytest.raises(ValueError, match="items must be one of"):
    world_source.read_world(small_world, items="some")


def _partial_table(world_dir):
  """SIDs for all but every 7th item, plus two ids the world does not have
  (so both skip counts of the item kinds are exercised)."""
  items = [r["item_id"] for r in _raw(world_dir, "items")]
  queries = sorted({r["query"] for r in _raw(world_dir, "recall")})
  kept = [i for n, i in enumerate(items) if n % 7] + ["ghost1", "ghost2"]
  return SIDTable.synthetic(kept, queries, seed=3)


def test_streamed_corpus_equals_in_memory(padded_world):
  small_world = padded_world
  table = _partial_table(small_world)
  config = museq.MuSeqConfig()
  eager = corpus_lib.build_corpus(world_source.read_world(small_world), table, config)
  streamed = corpus_lib.build_corpus(
    world_source.read_world(small_world, items="referenced"),
    table,
    config,
    item_stream=lambda: world_source.iter_table(small_world, "items"),
  )
  assert list(streamed.columns) == list(eager.columns)
  for kind in corpus_lib.ITEM_KINDS:
    assert isinstance(streamed.columns[kind], corpus_lib.LazyColumns)
  for kind in eager.columns:
    rows = list(streamed.rows(kind))
    assert rows == list(eager.rows(kind)), kind
    assert streamed.count(kind) == eager.count(kind) == len(rows)
  n_items = len(_raw(small_world, "items"))
  assert eager.skips["s1_item_without_sid"] == (n_items + 6) // 7
  assert eager.skips["s1_sid_item_not_in_world"] == 2
  assert streamed.skips == eager.skips
  assert streamed.texts == eager.texts
  # A second pass over a lazy kind yields the same rows again.
  kind = "s1_text_to_category"
  assert list(streamed.rows(kind)) == list(streamed.rows(kind))


def _source_rows(name, split):
  ds = seqio.get_mixture_or_task(name).source.get_dataset(split=split, shuffle=False)
  return [
    {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in ex.items()}
    for ex in ds.as_numpy_iterator()
  ]


def test_streamed_registration_gives_the_same_examples(
  small_world, small_table, registered
):
  streamed = tasks.register_tasks(
    small_world, sid_table=small_table, prefix="test_stream", stream_items=True
  )
  assert streamed.counts == registered.counts
  assert streamed.skips == registered.skips
  assert set(streamed.tasks) == set(registered.tasks)
  for kind in corpus_lib.ITEM_KINDS + ("s1_query_to_sid", "s2_query_to_sidi"):
    split = "train"
    assert _source_rows(streamed.tasks[kind], split) == _source_rows(
      registered.tasks[kind], split
    ), kind
  # Same vocabulary, so the same token ids after preprocessing; the same
  # long-seq feature from codes as from the [N, 3, D] table.
  for kind in ("s1_title_to_sid", "s1_text_to_category", "s3_personal"):
    got, want = (
      list(
        seqio.get_mixture_or_task(r.tasks[kind])
        .get_dataset(sequence_length=None, split="train", shuffle=False)
        .take(-1 if kind == "s3_personal" else 5)
        .as_numpy_iterator()
      )
      for r in (streamed, registered)
    )
    for a, b in zip(got, want, strict=True):
      assert a["inputs"].tolist() == b["inputs"].tolist()
      assert a["targets"].tolist() == b["targets"].tolist()
      if kind == "s3_personal":
        np.testing.assert_array_equal(a["long_seq"], b["long_seq"])
    if kind == "s3_personal":  # some examples have a long-term history
      assert sum(np.abs(a["long_seq"]).sum() for a in got) > 0


@pytest.mark.parametrize("mode", ["global", "parent", "parent_ab"])
def test_code_centroids_gather_the_item_centroid_rows(mode):
  levels = (6, 4, 3)
  table = SIDTable.synthetic(
    [f"i{n}" for n in range(50)], levels=levels, parent_l3=mode != "global", seed=1
  )
  if mode == "parent_ab":  # per-(a, b) level-3 codebooks [k1 * k2, k3, D]
    l1, l2, _ = table.rq_centroids
    rng = np.random.default_rng(2)
    l3 = rng.normal(size=(levels[0] * levels[1], levels[2], l1.shape[1]))
    table = dataclasses.replace(table, rq_centroids=(l1, l2, l3.astype(np.float32)))
  lookup = preprocessors.CodeCentroids(
    table.item_codes, table.rq_centroids, table.levels[1]
  )
  rows = np.asarray([3, 0, 49, 3, 17], np.int32)
  got = lookup.gather(tf.constant(rows)).numpy()
  np.testing.assert_array_equal(got, table.item_centroids[rows])
  ex = {
    "long_click": tf.constant(rows),
    "long_order": tf.constant([], tf.int32),
    "long_rsu": tf.constant(rows[:2]),
  }
  for reduce in ("sum", "mean"):
    a = preprocessors.long_seq_example(ex, lookup, reduce)
    b = preprocessors.long_seq_example(ex, tf.constant(table.item_centroids), reduce)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
