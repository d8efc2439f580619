"""seqio batches -> the model's batch contract: train iterators and eval sets.

The data pipeline (``pipeline.get_batches``) names the dense feature
``long_seq`` [B, 9, D] with its ``long_seq_mask`` [B, 9] and gives int32 loss
weights; the model (``model/model.py``) reads ``long_seq_features`` [B, 9, D]
float32 and float32 weights. ``to_model_batch`` is the ONE place that maps
one onto the other (the mask is dropped: the ``long_seq_feature``
preprocessor writes exact zeros where it is 0, which is checked here).

* ``TrainBatches(name, ...)``: the train loop's ``batches(position)``: an
  iterator of numpy batches starting at batch ``position`` of a seeded,
  endlessly repeated phase mixture (deterministic skip: the same seed gives
  the same batch at the same position, so a resumed run sees the examples
  an uninterrupted one would).
* ``fixed_batches(name, ...)``: the first N batches of a task in file order
  (teacher-forced eval sets), optionally weighting only SID targets.
* (eval inputs with per-row metadata are ``data/eval_batches.py``.)
* ``DataSpec``: what is needed to re-register the tasks of a training run
  (``write_spec`` / ``register_from_spec``; the one writer and reader of
  ``data_spec.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from onesearch_jax.data import index_batches, museq, pipeline, preprocessors, tasks
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.v2 import sdft_batches

TOKEN_FEATURES = (
  "encoder_input_tokens",
  "decoder_input_tokens",
  "decoder_target_tokens",
)
SPEC_FILE = "data_spec.json"


def to_model_batch(batch: Mapping[str, np.ndarray], *, long_seq: bool) -> dict:
  """Data-pipeline batch -> the model's batch contract (numpy).

  Args:
    batch: ``pipeline.get_batches`` output (numpy).
    long_seq: emit ``long_seq_features`` (the model has a Q-Former); the
      batch must then carry ``long_seq``.

  Returns:
    {encoder_input_tokens [B, L] int32, decoder_input_tokens [B, T] int32,
    decoder_target_tokens [B, T] int32, decoder_loss_weights [B, T] float32,
    (long_seq_features [B, 9, D] float32)}.

  Raises:
    KeyError: a feature is missing (names the feature).
    ValueError: a long-seq row is non-zero where its mask says empty.
  """
  missing = [k for k in (*TOKEN_FEATURES, "decoder_loss_weights") if k not in batch]
  if long_seq and "long_seq" not in batch:
    missing.append("long_seq")
  if missing:
    raise KeyError(f"batch lacks features {missing}; has {sorted(batch)}")
  out = {k: np.asarray(batch[k], np.int32) for k in TOKEN_FEATURES}
  out["decoder_loss_weights"] = np.asarray(batch["decoder_loss_weights"], np.float32)
  if long_seq:
    feats = np.asarray(batch["long_seq"], np.float32)
    if "long_seq_mask" in batch:
      empty = np.asarray(batch["long_seq_mask"]) == 0
      if np.any(feats[empty] != 0):
        raise ValueError("long_seq is non-zero in a row whose long_seq_mask is 0")
    out["long_seq_features"] = feats
  return out


def sid_only_weights(batch: dict, vocabulary: vocab_lib.OneSearchVocabulary) -> dict:
  """Loss weights kept only on SID target tokens (EOS and text get 0).

  Teacher-forced eval then reports SID token loss / accuracy, not diluted
  by the always-easy EOS.
  """
  ids = np.asarray(batch["decoder_target_tokens"])
  is_sid = np.zeros(ids.shape, bool)
  for prefix in ("a", "b", "c", "d"):
    r = vocabulary.level_range(prefix)
    is_sid |= (ids >= r.start) & (ids < r.stop)
  out = dict(batch)
  out["decoder_loss_weights"] = batch["decoder_loss_weights"] * is_sid
  return out


@dataclasses.dataclass
class LengthStats:
  """Rows that filled the encoder / decoder length (possibly truncated)."""

  rows: int = 0
  full_inputs: int = 0
  full_targets: int = 0

  def add(self, batch: Mapping[str, np.ndarray]) -> None:
    self.rows += int(batch["encoder_input_tokens"].shape[0])
    self.full_inputs += int(np.sum(batch["encoder_input_tokens"][:, -1] != 0))
    self.full_targets += int(np.sum(batch["decoder_target_tokens"][:, -1] != 0))

  def format(self, lengths: tuple[int, int]) -> str:
    n = max(self.rows, 1)
    return (
      f"{self.full_inputs}/{self.rows} ({self.full_inputs / n:.1%}) rows at the "
      f"{lengths[0]}-token input limit, {self.full_targets}/{self.rows} "
      f"({self.full_targets / n:.1%}) at the {lengths[1]}-token target limit "
      "(these may be truncated)"
    )


class TrainBatches:
  """``batches(position)`` for the train loop over a task or mixture.

  The mixture is sampled here (``tf.data.Dataset.sample_from_datasets`` with
  seqio's rates, seeded) rather than by ``seqio.get_dataset`` so that the
  per-task shuffle buffer is a knob: with seqio's task default (10,000
  examples per task) the first phase-1 batch of the default world waits for
  60,000 examples to be preprocessed, a large part of a short CPU run.

  Args:
    name: registered task or mixture, or a list of (registered task, rate)
      members sampled with probability proportional to their rates. Such a
      list may mix tasks with and without the dense long-seq feature (e.g.
      indexing replay in phase 3): members without it get exact zeros
      [9, long_seq_dim] and an all-zero mask (their prompts have no [EMB]
      slot, so the Q-Former output is not used for them).
    batch_size: per-host batch size.
    lengths: (inputs, targets) lengths.
    long_seq: emit ``long_seq_features`` (see ``to_model_batch``).
    seed: shuffle / mixture sampling seed (task i shuffles with seed + i).
    shard_info: this host's shard (None = one host).
    shuffle_buffer: examples per task in the shuffle buffer (None = the
      task's own).
    long_seq_dim: D of the dense feature (needed when ``name`` is a member
      list that mixes dense and plain tasks).
    length_buckets: encoder-length bucket bounds (tokens). Empty: every
      batch is padded to ``lengths[0]``. Else each example goes to the
      smallest bound >= its real input length (bounds >= ``lengths[0]`` are
      dropped, ``lengths[0]`` is the last bucket), batches are made of one
      bucket's examples (``tf.data.Dataset.group_by_window``, in arrival
      order: seeded and deterministic) and their encoder features are cut to
      the bound, so a batch of short prompts costs a short encoder pass (one
      compiled step per bound). The trailing columns cut are padding only,
      which the model masks, so a row's outputs do not change. Single host
      only (hosts would pick different widths for one global batch).
    use_cached: read every task from seqio's offline cache (``use_cached=True``;
      the cache directory must be among seqio's global cache directories,
      ``task_cache.enable``). The cache holds the examples in the order the
      Beam job wrote them: the same examples, shuffled differently.
    index_path: where every member has in-memory rows (``tasks.task_rows``)
      and neither the cache nor several hosts are asked for, and the members
      hold at most ``index_batches.MAX_ROWS`` examples, make the same
      batches from host arrays (``index_batches``): the tasks are
      materialised once (``task_arrays``) and the seqio pipeline's shuffle /
      mixture / bucket order is replayed on row indices. Same batches, in
      the same order, bit for bit, for a fraction of the host CPU. False:
      always seqio's pipeline (``dataset()``).
    teacher: self-distillation: every batch is a paired batch
      (``v2/sdft_batches.py``): the student batch plus the rows' teacher
      prompts (the tasks' "teacher_inputs", trimmed and padded to
      ``lengths[0]``; a member without that feature uses its own prompt).
      Both come from the same examples of the same stream, so the
      deterministic skip holds for the pairs.
  """

  def __init__(
    self,
    name: str | list[tuple[str, float]],
    *,
    batch_size: int,
    lengths: tuple[int, int],
    long_seq: bool,
    seed: int,
    shard_info: seqio.ShardInfo | None = None,
    shuffle_buffer: int | None = None,
    long_seq_dim: int = 0,
    length_buckets: tuple[int, ...] = (),
    use_cached: bool = False,
    teacher: bool = False,
    index_path: bool = True,
  ):
    self.name = name
    self.index_path = index_path
    self.teacher = teacher
    self.use_cached = use_cached
    self.batch_size = batch_size
    self.lengths = tuple(lengths)
    if isinstance(name, str):
      self.members = None
      self.dense = pipeline.has_long_seq(name)
    else:
      self.members = [(str(n), float(r)) for n, r in name]
      if not self.members or min(r for _, r in self.members) <= 0:
        raise ValueError(f"TrainBatches: members need positive rates, got {name}")
      dense = [pipeline.has_long_seq(n) for n, _ in self.members]
      self.dense = any(dense)
      if self.dense and not all(dense) and long_seq_dim <= 0:
        raise ValueError(
          "TrainBatches: mixing dense and plain tasks needs long_seq_dim"
        )
    self.long_seq_dim = long_seq_dim
    self.long_seq = long_seq
    if long_seq and not self.dense:
      raise ValueError(f"{name} has no long_seq feature but long_seq=True")
    self.seed = seed
    self.shard_info = shard_info
    self.shuffle_buffer = shuffle_buffer
    self.stats = LengthStats()
    if any(int(b) <= 0 for b in length_buckets):
      raise ValueError(
        f"TrainBatches: length_buckets must be > 0, got {length_buckets}"
      )
    self.length_buckets = tuple(
      sorted({int(b) for b in length_buckets if int(b) < self.lengths[0]})
    )
    if self.length_buckets and shard_info is not None and shard_info.num_shards > 1:
      raise ValueError(
        "TrainBatches: length_buckets need a single host (hosts would cut one "
        "global batch to different widths); set SFTConfig.length_buckets = ()"
      )

  def _members(self) -> tuple[list[seqio.Task], list[float]]:
    if self.members is not None:
      members = [seqio.get_mixture_or_task(n) for n, _ in self.members]
      return members, [r for _, r in self.members]
    provider = seqio.get_mixture_or_task(self.name)
    if isinstance(provider, seqio.Mixture):
      members = list(provider.tasks)
      return members, [float(provider.get_rate(t)) for t in members]
    return [provider], [1.0]

  def index_batches(self) -> index_batches.IndexBatches | None:
    """The host-array equivalent of ``dataset()``, or None where it does
    not apply (see ``index_path``)."""
    if not self.index_path or self.use_cached:
      return None
    if self.shard_info is not None and self.shard_info.num_shards > 1:
      return None
    members, rates = self._members()
    rows = [tasks.task_rows(t.name) for t in members]
    if any(r is None for r in rows):
      return None
    if sum(r.count for r in rows) > index_batches.MAX_ROWS:
      return None
    self._check_teacher(members)
    return index_batches.IndexBatches(
      rows,
      rates,
      batch_size=self.batch_size,
      lengths=self.lengths,
      seed=self.seed,
      shuffle_buffer=self.shuffle_buffer,
      length_buckets=self.length_buckets,
      dense=self.dense,
      long_seq_dim=self.long_seq_dim,
      teacher=self.teacher,
    )

  def _check_teacher(self, members: list[seqio.Task]) -> None:
    key = preprocessors.TEACHER_INPUTS
    if self.teacher and not any(key in t.output_features for t in members):
      raise ValueError(
        f"TrainBatches(teacher=True): no task of {self.name} carries "
        f"{key!r} (register the tasks with MuSeqConfig.keywords_in='teacher')"
      )

  def dataset(self) -> tf.data.Dataset:
    """The endless, seeded, batched tf.data pipeline (data-pipeline names)."""
    members, rates = self._members()
    lengths = pipeline.task_feature_lengths(*self.lengths, self.dense, self.teacher)
    rows, dim = pipeline.LONG_SEQ_ROWS, self.long_seq_dim
    teacher_key = preprocessors.TEACHER_INPUTS
    self._check_teacher(members)

    def zeros(ex):
      return {
        **ex,
        "long_seq": tf.zeros([rows, dim], tf.float32),
        "long_seq_mask": tf.zeros([rows], tf.int32),
      }

    def own_prompt(ex):
      return {**ex, teacher_key: ex["inputs"]}

    parts = []
    for i, task in enumerate(members):
      has_teacher = teacher_key in task.output_features
      ds = task.get_dataset(
        sequence_length=pipeline.task_feature_lengths(
          *self.lengths, "long_seq" in task.output_features, has_teacher
        ),
        split=tasks.TRAIN,
        use_cached=self.use_cached,
        shuffle=True,
        seed=self.seed + i,
        shard_info=self.shard_info,
        num_epochs=None,
        shuffle_buffer_size=self.shuffle_buffer,
      )
      if self.dense and "long_seq" not in task.output_features:
        ds = ds.map(zeros)
      if self.teacher and not has_teacher:
        ds = ds.map(own_prompt)
      parts.append(ds.map(lambda ex: {k: ex[k] for k in lengths}))
    if len(parts) == 1:
      ds = parts[0]
    else:
      total = sum(rates)
      ds = tf.data.Dataset.sample_from_datasets(
        parts, weights=[r / total for r in rates], seed=self.seed
      )
    ds = pipeline.feature_converter(self.dense, teacher=self.teacher)(ds, lengths)
    if not self.length_buckets:
      return ds.batch(self.batch_size, drop_remainder=True)
    return bucket_batches(ds, self.batch_size, (*self.length_buckets, self.lengths[0]))

  def __call__(self, position: int) -> Iterator[dict]:
    """Batches from ``position`` on (0 = the first), endlessly."""
    if position < 0:
      raise ValueError(f"data position must be >= 0, got {position}")
    fast = self.index_batches()
    if fast is not None:
      raws = fast(position)
    else:
      ds = self.dataset()
      if position:
        ds = ds.skip(position)
      raws = ds.prefetch(4).as_numpy_iterator()

    def gen():
      for raw in raws:
        batch = to_model_batch(raw, long_seq=self.long_seq)
        self.stats.add(batch)
        if self.teacher:
          batch = sdft_batches.pair_batch(batch, raw[preprocessors.TEACHER_INPUTS])
        yield batch

    return gen()


def bucket_batches(
  ds: tf.data.Dataset, batch_size: int, bounds: tuple[int, ...]
) -> tf.data.Dataset:
  """Batches of one encoder-length bucket each, cut to the bucket's bound.

  Args:
    ds: converted examples, ``encoder_*`` features [L] padded with 0 at the
      end (L = ``bounds[-1]``).
    batch_size: rows per batch (full batches only).
    bounds: increasing bucket bounds; the last is L.

  Returns:
    Batches whose ``encoder_*`` features are [batch_size, bound] for the
    bucket of their examples (the smallest bound >= the example's real
    length, i.e. its last non-zero input token + 1); other features keep
    their shapes.
  """
  if list(bounds) != sorted(set(bounds)):
    raise ValueError(f"bucket_batches: bounds must increase, got {bounds}")
  table = tf.constant(bounds, tf.int64)

  def real_length(ex):
    nonzero = tf.cast(ex["encoder_input_tokens"] != 0, tf.int64)
    positions = tf.range(1, tf.size(nonzero, tf.int64) + 1, dtype=tf.int64)
    return tf.reduce_max(nonzero * positions)

  def bucket(ex):
    return tf.reduce_sum(tf.cast(table < real_length(ex), tf.int64))

  def cut(key, window):
    width = table[key]
    batched = window.batch(batch_size, drop_remainder=True)
    return batched.map(
      lambda b: {
        k: (v[:, :width] if k.startswith("encoder_") else v) for k, v in b.items()
      }
    )

  return ds.group_by_window(bucket, cut, window_size=batch_size)


def fixed_batches(
  name: str,
  *,
  batch_size: int,
  lengths: tuple[int, int],
  long_seq: bool,
  num_batches: int,
  split: str = tasks.TEST,
  vocabulary: vocab_lib.OneSearchVocabulary | None = None,
) -> list[dict]:
  """The first ``num_batches`` full batches of a task in file order.

  Args:
    name: registered task.
    batch_size: rows per batch.
    lengths: (inputs, targets).
    long_seq: emit ``long_seq_features``.
    num_batches: at most this many (fewer when the task is smaller; a task
      with less than one batch raises).
    split: the task's split.
    vocabulary: when given, weights are kept on SID targets only
      (``sid_only_weights``).

  Returns:
    A list of model batches.
  """
  ds = pipeline.get_batches(
    name,
    batch_size=batch_size,
    inputs_length=lengths[0],
    targets_length=lengths[1],
    split=split,
    shuffle=False,
    num_epochs=1,
  )
  out = []
  for raw in ds.take(num_batches).as_numpy_iterator():
    b = to_model_batch(raw, long_seq=long_seq)
    out.append(sid_only_weights(b, vocabulary) if vocabulary is not None else b)
  if not out:
    raise ValueError(f"{name}: fewer than {batch_size} examples for one eval batch")
  return out


# ------------------------------------------------------------ the spec


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """How a training run registered its tasks (``data_spec.json``).

  Attributes:
    world_dir: the world directory.
    sid_dir: the SID artefact directory.
    sid_hash: its content hash (checked when re-registering).
    vocab_dir: the saved vocabulary.
    prefix: task name prefix.
    museq: Mu-Seq settings (``dataclasses.asdict(MuSeqConfig)``).
    sentencepiece: ``dataclasses.asdict(SentencePieceConfig)``.
    eval_inputs_length: encoder length of the phase-3 / eval prompts.
  """

  world_dir: str
  sid_dir: str
  sid_hash: str
  vocab_dir: str
  prefix: str
  museq: dict[str, Any]
  sentencepiece: dict[str, Any]
  eval_inputs_length: int


def write_spec(directory: str | os.PathLike, spec: DataSpec) -> None:
  """Writes ``directory/data_spec.json``."""
  path = os.path.join(os.fspath(directory), SPEC_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(dataclasses.asdict(spec), f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def read_spec(directory: str | os.PathLike) -> DataSpec:
  """Reads ``directory/data_spec.json`` (clear error naming a missing field)."""
  path = os.path.join(os.fspath(directory), SPEC_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing (not a training output directory?)")
  with open(path) as f:
    raw = json.load(f)
  names = [f.name for f in dataclasses.fields(DataSpec)]
  missing = [n for n in names if n not in raw]
  if missing:
    raise ValueError(f"{path}: fields {missing} are missing")
  return DataSpec(**{n: raw[n] for n in names})


def register_from_spec(spec: DataSpec) -> tasks.RegisteredTasks:
  """Registers a run's tasks (the saved vocabulary, the same SIDs).

  The training run registers through this function too, so in one process
  the second call returns the first registration (``register_tasks`` is
  idempotent for identical arguments).
  """
  if spec.sid_hash:  # refuses an artefact that changed since training
    SIDTable.from_artefact(spec.sid_dir, expected_hash=spec.sid_hash)
  return tasks.register_tasks(
    spec.world_dir,
    spec.sid_dir,
    config=museq.MuSeqConfig(**spec.museq),
    sp_config=vocab_lib.SentencePieceConfig(**spec.sentencepiece),
    vocab_dir=spec.vocab_dir,
    prefix=spec.prefix,
  )
