"""The Beam task cache on the tiny world: Beam's in-process runner (FnApiRunner) writes two
tasks (one plain, one with the dense long-seq features), and the cached
examples are the examples preprocessed on the fly, as multisets (the cache
reshuffles them, so only the set is seqio's guarantee); training reads them.

Marked ``beam``: it needs the Beam environment (``bash scripts/beam_venv.sh``)
and runs as ``.venv-beam/bin/python -m pytest -m beam`` (``scripts/test.sh``
does this in CI, ``ONESEARCH_BEAM_TESTS=1``). The normal suite deselects it
(tests/conftest.py); selected without apache_beam it fails on the import.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf

from onesearch_jax import testing
from onesearch_jax.data import model_batches, pipeline, task_cache, tasks
from onesearch_jax.train import sft

pytestmark = pytest.mark.beam

KINDS = ("s1_title_to_sid", "s3_personal")
SOURCE_SHARDS, OUTPUT_SHARDS = 3, 2
LENGTHS = (128, 40)
# The tiny SFT run's settings, its phases reading only the cached tasks.
SFT = testing.tiny_sft_config(
  prefix="beamcache",
  phase_tasks=(
    (("s1_title_to_sid", 1.0),),
    (("s1_title_to_sid", 1.0),),
    (("s3_personal", 1.0),),
  ),
)


@pytest.fixture(scope="module")
def cached(tiny_world_dir, tmp_path_factory):
  """One caching run: (CacheJob, cache dir, registered tasks, log lines)."""
  from onesearch_jax.data import cache_tasks  # needs apache_beam

  root = tmp_path_factory.mktemp("beam_cache")
  sid_dir = root / "sids"
  sid_dir.mkdir()
  testing.write_sid_artefact(tiny_world_dir, sid_dir)
  cache = str(root / "cache")
  job = cache_tasks.CacheJob(
    world_dir=str(tiny_world_dir),
    sid_dir=str(sid_dir),
    vocab_dir=os.path.join(cache, task_cache.VOCAB),
    museq=dataclasses.asdict(SFT.museq),
    sentencepiece=dataclasses.asdict(SFT.sentencepiece),
    prefix=SFT.prefix,
    source_shards=SOURCE_SHARDS,
  )
  lines: list[str] = []
  done = cache_tasks.run(
    job, cache, KINDS, output_shards=OUTPUT_SHARDS, log=lines.append
  )
  assert done == {k: f"beamcache_{k}" for k in KINDS}
  task_cache.enable(cache, list(done.values()))
  return job, cache, cache_tasks.register(job), lines


def _fingerprint(job, **museq_changes) -> dict:
  return task_cache.fingerprint(
    job.world_dir,
    job.sid_dir,
    dataclasses.replace(SFT.museq, **museq_changes),
    SFT.sentencepiece,
    SFT.prefix,
  )


def _key(ex: dict) -> tuple:
  """An example as a hashable value (every feature, bytes of its values)."""
  out = []
  for k in sorted(ex):
    v = np.asarray(ex[k])
    out.append((k, str(v.dtype), v.shape, v.tobytes()))
  return tuple(out)


def _examples(name: str, use_cached: bool) -> collections.Counter:
  dense = pipeline.has_long_seq(name)
  ds = seqio.get_mixture_or_task(name).get_dataset(
    sequence_length=pipeline.task_feature_lengths(*LENGTHS, dense),
    split=tasks.TRAIN,
    use_cached=use_cached,
    shuffle=False,
  )
  return collections.Counter(_key(ex) for ex in ds.as_numpy_iterator())


@pytest.mark.parametrize("kind", KINDS)
def test_cached_examples_equal_the_uncached_ones(cached, kind):
  _, cache, registered, _ = cached
  name = registered.tasks[kind]
  task = seqio.get_mixture_or_task(name)
  assert task.cache_dir == os.path.join(cache, name)
  fresh, from_cache = _examples(name, False), _examples(name, True)
  assert sum(fresh.values()) == registered.counts[kind] > 0
  assert from_cache == fresh
  if kind == "s3_personal":  # the dense feature went through tf.Example
    ex = next(iter(fresh))
    assert dict((k, s) for k, _, s, _ in ex)["long_seq"] == (9, registered.long_seq_dim)


def test_cache_layout_stats_and_manifest(cached):
  job, cache, registered, lines = cached
  for kind in KINDS:
    out = os.path.join(cache, registered.tasks[kind])
    shards = sorted(f for f in os.listdir(out) if f.startswith("train.tfrecord-"))
    assert shards == [f"train.tfrecord-0000{i}-of-00002" for i in range(2)]
    stats = json.load(open(os.path.join(out, "stats.train.json")))
    assert stats["examples"] == registered.counts[kind]
    info = json.load(open(os.path.join(out, "info.train.json")))
    assert info["num_shards"] == OUTPUT_SHARDS
  manifest = task_cache.read_manifest(cache)
  assert manifest["tasks"] == sorted(registered.tasks[k] for k in KINDS)
  assert task_cache.check(cache, _fingerprint(job), job.vocab_dir) == manifest
  assert any("3 source shards, 2 output shards" in line for line in lines)


def test_a_second_run_skips_cached_tasks(cached):
  from onesearch_jax.data import cache_tasks

  job, cache, _, _ = cached
  lines: list[str] = []
  assert cache_tasks.run(job, cache, KINDS[:1], log=lines.append) == {}
  assert any("cached already" in line for line in lines)


def test_other_data_or_missing_tasks_are_refused(cached):
  job, cache, registered, _ = cached
  with pytest.raises(task_cache.CacheError, match="museq"):
    task_cache.check(cache, _fingerprint(job, use_profile=False), job.vocab_dir)
  with pytest.raises(task_cache.CacheError, match="s1_query_to_sid"):
    task_cache.enable(cache, [registered.tasks["s1_query_to_sid"]])


def test_train_batches_read_cached_examples(cached):
  _, _, registered, _ = cached
  name = registered.tasks["s3_personal"]
  rows = set()
  for key in _examples(name, False):
    feats = {k: v for k, _, _, v in key}
    rows.add(feats["inputs"])

  def batches(seed):
    it = model_batches.TrainBatches(
      name,
      batch_size=8,
      lengths=LENGTHS,
      long_seq=True,
      seed=seed,
      use_cached=True,
    )(0)
    return [next(it) for _ in range(3)]

  first = batches(7)
  for b in first:
    for row in b["encoder_input_tokens"]:
      tokens = row[row != 0].astype(np.int32)
      assert tokens.tobytes() in rows
  again = batches(7)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
  assert isinstance(first[0]["long_seq_features"], np.ndarray)
  assert tf.executing_eagerly()


def test_sft_trains_from_the_cache(cached, tmp_path, fast_compile):
  """Last in the file: run_sft registers the tasks again (one source shard)."""
  job, cache, _, _ = cached
  cfg = dataclasses.replace(SFT, task_cache_dir=cache)
  lines: list[str] = []
  res = sft.run_sft(job.world_dir, job.sid_dir, tmp_path, cfg, log=lines.append)
  assert res.finished
  assert "[train] reading 2 tasks from the task cache " + cache in lines
  assert task_cache.vocab_hash(str(tmp_path / "vocab")) == task_cache.vocab_hash(
    job.vocab_dir
  )
  for phase in res.phases.values():
    assert all(np.isfinite(r["loss"]) for r in phase.train)
