"""seqio task / mixture -> batches of encoder-decoder model features.

``get_batches`` returns a tf.data pipeline of numpy-able dicts:

  encoder_input_tokens  [B, L] int32    prompt tokens (0 = pad)
  decoder_target_tokens [B, T] int32    target tokens (SID or text + EOS)
  decoder_input_tokens  [B, T] int32    targets shifted right (BOS = 0)
  decoder_loss_weights  [B, T] int32    1 on non-pad target positions
  long_seq              [B, 9, D] float32  (phase 3 / eval only) click, order,
                                        RSU x levels L1..L3 centroid sums
  long_seq_mask         [B, 9] int32    1 where that sequence is non-empty

It is seqio's ``EncDecFeatureConverter`` with the two dense features passed
through (``passthrough_features``; seqio forbids packing then, so phase-3
batches are padded, while phase 1/2 may pack).

Multi-host: pass ``seqio.ShardInfo(jax.process_index(), jax.process_count())``;
each host reads the examples ``i`` with ``i % num_shards == index`` (seqio
shards a ``FunctionDataSource`` at the example level), so the shards
partition the data exactly once. Order is deterministic for a given seed.
Caching (``cache_dir``, Tasks only): the converted, unshuffled examples of a
shard are written once with ``tf.data.Dataset.cache(file)`` and re-read on
later runs; shuffling and batching happen after the cache.
"""

from __future__ import annotations

import os

import seqio
import tensorflow as tf

from onesearch_jax.data.preprocessors import TEACHER_INPUTS

LONG_SEQ_ROWS = 9
DENSE_FEATURES = ("long_seq", "long_seq_mask")


def has_long_seq(name: str) -> bool:
  """Whether a task / mixture carries the dense long-seq features."""
  provider = seqio.get_mixture_or_task(name)
  return "long_seq" in provider.output_features


def feature_converter(
  dense: bool, pack: bool = False, teacher: bool = False
) -> seqio.FeatureConverter:
  """EncDecFeatureConverter, with the long-seq features passed through.

  Args:
    dense: the tasks carry ``long_seq`` / ``long_seq_mask``.
    pack: pack several examples per row (only without dense or teacher
      features).
    teacher: the tasks carry self-distillation's ``teacher_inputs`` token
      ids, passed through trimmed / padded to their length.
  """
  spec = seqio.FeatureConverter.FeatureSpec
  passthrough = {}
  if dense:
    passthrough["long_seq"] = spec(dtype=tf.float32, rank=2)
    passthrough["long_seq_mask"] = spec(dtype=tf.int32, rank=1)
  if teacher:
    passthrough[TEACHER_INPUTS] = spec(dtype=tf.int32, rank=1)
  if not passthrough:
    return seqio.EncDecFeatureConverter(pack=pack)
  if pack:
    raise ValueError("packing is incompatible with per-example passthrough features")
  return seqio.EncDecFeatureConverter(pack=False, passthrough_features=passthrough)


def task_feature_lengths(
  inputs: int, targets: int, dense: bool, teacher: bool = False
) -> dict[str, int]:
  """Feature lengths for the converter (9 rows for the dense features; the
  teacher prompt gets the inputs length)."""
  out = {"inputs": inputs, "targets": targets}
  if dense:
    out.update(long_seq=LONG_SEQ_ROWS, long_seq_mask=LONG_SEQ_ROWS)
  if teacher:
    out[TEACHER_INPUTS] = inputs
  return out


def get_batches(
  name: str,
  *,
  batch_size: int,
  inputs_length: int = 256,
  targets_length: int = 8,
  split: str = "train",
  shard_info: seqio.ShardInfo | None = None,
  seed: int | None = 0,
  shuffle: bool = True,
  num_epochs: int | None = 1,
  pack: bool = False,
  cache_dir: str | os.PathLike | None = None,
  drop_remainder: bool = True,
) -> tf.data.Dataset:
  """Batched model features of a registered task or mixture.

  Args:
    name: task or mixture name (``tasks.register_tasks``).
    batch_size: per-host batch size.
    inputs_length: encoder length L (longer prompts are truncated).
    targets_length: decoder length T (SID: 5 tokens + EOS = 6).
    split: "train" or "test".
    shard_info: this host's shard (None = all examples).
    seed: shuffle / mixture sampling seed (same seed, same order).
    shuffle: shuffle the examples.
    num_epochs: repeats (None = forever).
    pack: pack examples (phase 1/2 only).
    cache_dir: cache the converted examples there (Tasks only).
    drop_remainder: drop a last partial batch.

  Returns:
    tf.data.Dataset of feature dicts (see the module docstring).
  """
  dense = has_long_seq(name)
  lengths = task_feature_lengths(inputs_length, targets_length, dense)
  converter = feature_converter(dense, pack)
  if cache_dir is None:
    ds = seqio.get_dataset(
      name,
      task_feature_lengths=lengths,
      feature_converter=converter,
      dataset_split=split,
      shuffle=shuffle,
      num_epochs=num_epochs,
      shard_info=shard_info,
      seed=seed,
    )
    return ds.batch(batch_size, drop_remainder=drop_remainder)
  provider = seqio.get_mixture_or_task(name)
  if not isinstance(provider, seqio.Task):
    raise ValueError(f"cache_dir is supported for Tasks only; {name} is a Mixture")
  ds = provider.get_dataset(
    sequence_length=lengths,
    split=split,
    shuffle=False,
    shard_info=shard_info,
    num_epochs=1,
  )
  ds = converter(ds, lengths)
  shard = f"{shard_info.index}of{shard_info.num_shards}" if shard_info else "all"
  os.makedirs(cache_dir, exist_ok=True)
  ds = ds.cache(os.path.join(os.fspath(cache_dir), f"{name}.{split}.{shard}"))
  if shuffle:
    ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat(num_epochs)
  return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
