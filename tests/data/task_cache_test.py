"""The task-cache pieces that run without apache_beam (the main environment):
sharded task sources, the cache manifest and its checks, the SFTConfig
switch. The Beam job itself is tested in cache_tasks_test.py (marker ``beam``)."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import seqio

from onesearch_jax import config_io, configs
from onesearch_jax.data import museq, task_cache, tasks
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.train import sft_config


def _inputs(ds) -> collections.Counter:
  return collections.Counter(ex["inputs"].tobytes() for ex in ds.as_numpy_iterator())


def test_source_shards_partition_the_examples(small_world, small_table, registered):
  sharded = tasks.register_tasks(
    small_world, sid_table=small_table, prefix="test_sharded", source_shards=3
  )
  assert sharded.counts == registered.counts
  for kind in ("s1_title_to_sid", "s3_personal"):
    task = seqio.get_mixture_or_task(sharded.tasks[kind])
    assert task.supports_caching and not task.requires_caching
    assert task.source.list_shards("train") == [
      f"train-0000{i}-of-00003" for i in range(3)
    ]
    whole = _inputs(task.get_dataset(None, split="train", shuffle=False))
    parts = collections.Counter()
    for i in range(3):
      part = task.source.get_dataset(
        "train", shuffle=False, shard_info=seqio.ShardInfo(i, 3)
      )
      n = sum(1 for _ in part)
      assert abs(n - registered.counts[kind] / 3) < 1
      ds = task.get_dataset(
        None, split="train", shuffle=False, shard_info=seqio.ShardInfo(i, 3)
      )
      parts += _inputs(ds)
    assert parts == whole
    assert sum(whole.values()) == registered.counts[kind]
    # The same examples as the one-shard source of the main job.
    plain = seqio.get_mixture_or_task(registered.tasks[kind])
    assert isinstance(plain.source, seqio.FunctionDataSource)
    assert plain.source.list_shards("train") == ["train"]
    assert _inputs(plain.get_dataset(None, split="train", shuffle=False)) == whole


@pytest.fixture()
def fake_cache(tmp_path, registered):
  """A cache directory with a vocabulary and a manifest, no task data."""
  cache = str(tmp_path / "cache")
  registered.vocabulary.save(f"{cache}/{task_cache.VOCAB}")
  fp = {"world_hash": "w", "sid_hash": "s", "museq": {"a": 1}, "prefix": "p"}
  task_cache.write_manifest(cache, fp, ["p_b", "p_a"])
  return cache, fp


def test_manifest_is_checked_and_extended(fake_cache, tmp_path):
  cache, fp = fake_cache
  vocab = f"{cache}/{task_cache.VOCAB}"
  assert task_cache.check(cache, fp, vocab)["tasks"] == ["p_a", "p_b"]
  task_cache.write_manifest(cache, fp, ["p_c"])
  assert task_cache.read_manifest(cache)["tasks"] == ["p_a", "p_b", "p_c"]
  with pytest.raises(task_cache.CacheError, match="museq, world_hash"):
    task_cache.check(cache, {**fp, "museq": {"a": 2}, "world_hash": "x"}, vocab)
  with pytest.raises(task_cache.CacheError, match="other data"):
    task_cache.write_manifest(cache, {**fp, "prefix": "q"}, ["q_a"])
  with pytest.raises(task_cache.CacheError, match="missing"):
    task_cache.check(str(tmp_path / "nothing"), fp, vocab)


def test_adopted_vocabulary_is_the_caches(fake_cache, tmp_path, small_world):
  cache, fp = fake_cache
  mine = str(tmp_path / "run" / "vocab")
  task_cache.adopt_vocabulary(cache, mine)
  assert task_cache.check(cache, fp, mine)
  # A run directory holding another vocabulary is refused.
  other = str(tmp_path / "other")
  vocab_lib.OneSearchVocabulary.load(mine).save(other)
  with open(f"{other}/vocab.json", "a") as f:
    f.write(" ")
  with pytest.raises(task_cache.CacheError, match="vocab_hash"):
    task_cache.check(cache, fp, other)
  with pytest.raises(task_cache.CacheError, match="no saved vocabulary"):
    task_cache.adopt_vocabulary(str(tmp_path / "empty"), mine)


def test_enable_names_the_tasks_that_are_not_cached(fake_cache, registered):
  cache, _ = fake_cache
  names = [registered.tasks["s1_title_to_sid"], registered.tasks["s3_personal"]]
  before = list(seqio.utils.get_global_cache_dirs())
  try:
    with pytest.raises(task_cache.CacheError, match="s1_title_to_sid.*s3_personal"):
      task_cache.enable(cache, names)
    assert seqio.utils.get_global_cache_dirs()[0] == cache
  finally:
    seqio.set_global_cache_dirs(before)


def test_fingerprint_has_no_paths(tiny_world_dir, tmp_path):
  import shutil

  from onesearch_jax import testing

  sids = tmp_path / "sids"
  sids.mkdir()
  testing.write_sid_artefact(tiny_world_dir, sids)
  args = (museq.MuSeqConfig(), vocab_lib.SentencePieceConfig(), "p")
  fp = task_cache.fingerprint(tiny_world_dir, sids, *args)
  shutil.copytree(sids, tmp_path / "copy")
  assert task_cache.fingerprint(tiny_world_dir, tmp_path / "copy", *args) == fp
  other = museq.MuSeqConfig(use_profile=False)
  assert task_cache.fingerprint(tiny_world_dir, sids, other, *args[1:]) != fp


def test_sft_switch_is_off_by_default_and_round_trips():
  off = configs.sft_config()
  assert off.task_cache_dir == ""
  assert "task_cache_dir" not in sft_config.config_to_dict(off)
  on = configs.sft_config(task_cache_dir="gs://b/cache")
  raw = sft_config.config_to_dict(on)
  assert raw["task_cache_dir"] == "gs://b/cache"
  assert sft_config.config_from_dict(raw) == on
  assert sft_config.config_from_dict(sft_config.config_to_dict(off)) == off
  assert config_io.json_hash(raw) != config_io.json_hash(
    sft_config.config_to_dict(dataclasses.replace(on, task_cache_dir=""))
  )
