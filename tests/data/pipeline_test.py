"""Batches for the model, host sharding, seed determinism, caching."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import seqio

from onesearch_jax.data import pipeline


def _examples(name, shard_info=None, split="train"):
  ds = seqio.get_mixture_or_task(name).get_dataset(
    sequence_length=None, split=split, shuffle=False, shard_info=shard_info
  )
  return collections.Counter(
    (ex["inputs_pretokenized"], ex["targets_pretokenized"])
    for ex in ds.as_numpy_iterator()
  )


@pytest.mark.parametrize("kind", ["s2_query_to_title", "s3_personal"])
@pytest.mark.parametrize("num_shards", [2, 3])
def test_host_shards_partition_the_data_exactly_once(registered, kind, num_shards):
  name = registered.tasks[kind]
  full = _examples(name)
  assert sum(full.values()) == registered.counts[kind]
  shards = [_examples(name, seqio.ShardInfo(i, num_shards)) for i in range(num_shards)]
  total = collections.Counter()
  for s in shards:
    total += s
  assert total == full  # union = all, every example exactly once
  assert all(sum(s.values()) > 0 for s in shards)
  if kind == "s2_query_to_title":  # distinct examples: shards pairwise disjoint
    for i in range(num_shards):
      for j in range(i + 1, num_shards):
        assert not set(shards[i]) & set(shards[j])


def test_phase3_batches(registered):
  name = registered.tasks["s3_personal"]
  ds = pipeline.get_batches(
    name, batch_size=4, inputs_length=256, targets_length=6, seed=1
  )
  b = next(ds.as_numpy_iterator())
  d = registered.long_seq_dim
  assert b["encoder_input_tokens"].shape == (4, 256)
  assert b["decoder_target_tokens"].shape == (4, 6)
  assert b["long_seq"].shape == (4, 9, d) and b["long_seq"].dtype == np.float32
  assert b["long_seq_mask"].shape == (4, 9)
  np.testing.assert_array_equal(
    b["decoder_input_tokens"][:, 1:], b["decoder_target_tokens"][:, :-1]
  )
  assert (b["decoder_input_tokens"][:, 0] == 0).all()
  np.testing.assert_array_equal(
    b["decoder_loss_weights"], b["decoder_target_tokens"] > 0
  )
  assert (b["decoder_target_tokens"][:, -1] == 1).all()  # 5 SID tokens + EOS


def test_phase1_mixture_batches_packed(registered):
  ds = pipeline.get_batches(
    registered.mixtures["phase1"],
    batch_size=2,
    inputs_length=128,
    targets_length=64,
    pack=True,
  )
  b = next(ds.as_numpy_iterator())
  assert "long_seq" not in b and b["encoder_segment_ids"].shape == (2, 128)
  with pytest.raises(ValueError, match="packing"):
    pipeline.feature_converter(dense=True, pack=True)


def _order(name, seed, **kw):
  ds = pipeline.get_batches(name, batch_size=8, targets_length=6, seed=seed, **kw)
  return [b["encoder_input_tokens"].tobytes() for b in ds.take(5).as_numpy_iterator()]


def test_order_is_deterministic_by_seed(registered):
  name = registered.tasks["s3_personal"]
  assert _order(name, 7) == _order(name, 7)
  assert _order(name, 7) != _order(name, 8)
  mix = registered.mixtures["phase3"]
  assert _order(mix, 3) == _order(mix, 3)


def test_cache_dir(registered, tmp_path):
  name = registered.tasks["s3_window"]
  first = _order(name, 5, cache_dir=tmp_path, num_epochs=1)
  assert any(p.name.startswith(name) for p in tmp_path.iterdir())
  assert _order(name, 5, cache_dir=tmp_path, num_epochs=1) == first
  sharded = pipeline.get_batches(
    name,
    batch_size=1,
    targets_length=6,
    shuffle=False,
    cache_dir=tmp_path,
    shard_info=seqio.ShardInfo(1, 2),
  )
  n = sum(1 for _ in sharded)
  assert n in (
    registered.counts["s3_window"] // 2,
    (registered.counts["s3_window"] + 1) // 2,
  )
  with pytest.raises(ValueError, match="Tasks only"):
    pipeline.get_batches(
      registered.mixtures["phase3"], batch_size=2, cache_dir=tmp_path
    )
