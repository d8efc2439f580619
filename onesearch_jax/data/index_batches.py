"""Train batches gathered from host arrays in seqio's order (``TrainBatches``'
index path).

``model_batches.TrainBatches.dataset()`` reads its members through seqio:
source -> (row shuffle) -> in-memory cache -> render / tokenise / long-seq
-> repeat -> EOS trim -> the task's shuffle buffer -> mixture sampling ->
``EncDecFeatureConverter`` -> length buckets -> batches. None of the
shuffles, the mixture sampling or the repeat looks at an example's content,
and the bucket key is a function of the prompt's length alone. So the same
ops applied to row *indices* (``tf.data.Dataset.range``) with the same seeds
give the same sequence of rows, and each batch can be gathered from the
tasks' arrays (``task_arrays.build``, made once in numpy). The batches are
the seqio path's, bit for bit (``tests/data/task_arrays_test.py``); the
per-example tf.data work shrinks to moving one int64 through the shuffles.

Output: numpy batches with the data-pipeline names of ``pipeline.get_batches``
(encoder_input_tokens [B, W] int32 with W the bucket bound or L,
decoder_input_tokens / decoder_target_tokens [B, T] int32,
decoder_loss_weights [B, T] int32, and with ``dense`` long_seq [B, 9, D]
float32 and long_seq_mask [B, 9] int32).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf

from onesearch_jax.data import preprocessors, task_arrays
from onesearch_jax.data.pipeline import LONG_SEQ_ROWS
from onesearch_jax.data.vocab import PAD_ID

# seqio keeps a task's source in memory (``Dataset.cache()``) below this
# many examples; the index path caches at the same place so a row shuffle
# replays as seqio's does (the cache freezes its first epoch's order).
MEM_CACHE_EXAMPLES = seqio.dataset_providers._MAX_EXAMPLES_TO_MEM_CACHE
# Above this many rows in a phase's members the host arrays would take
# gigabytes (a phase-3 row is ~2.3 KiB at D = 64 with its long-seq sums), so
# ``TrainBatches`` streams through seqio instead.
MAX_ROWS = 1_000_000


class IndexBatches:
  """``batches(position)``: the members' batches, from host arrays.

  Args:
    rows: one ``task_arrays.TaskRows`` per member, in mixture order.
    rates: the members' mixture rates (any positive scale).
    batch_size: rows per batch.
    lengths: (inputs L, targets T).
    seed: ``TrainBatches``' seed (member i shuffles with seed + i).
    shuffle_buffer: examples per member in the shuffle buffer (None = the
      task's own, ``TaskRows.shuffle_buffer``).
    length_buckets: encoder bucket bounds < L (empty: every batch is L wide).
    dense: emit the long-seq features (members without them get zeros).
    long_seq_dim: D of the long-seq features (for members without them).
    teacher: emit self-distillation's ``preprocessors.TEACHER_INPUTS`` [B, L]
      (never cut to the bucket; members without a teacher prompt give
      their own prompt, as ``TrainBatches.dataset()`` does).
  """

  def __init__(
    self,
    rows: Sequence[task_arrays.TaskRows],
    rates: Sequence[float],
    *,
    batch_size: int,
    lengths: tuple[int, int],
    seed: int,
    shuffle_buffer: int | None = None,
    length_buckets: tuple[int, ...] = (),
    dense: bool = False,
    long_seq_dim: int = 0,
    teacher: bool = False,
  ):
    if len(rows) != len(rates) or not rows:
      raise ValueError(f"IndexBatches: {len(rows)} members, {len(rates)} rates")
    self.rows = list(rows)
    self.rates = [float(r) for r in rates]
    self.batch_size = int(batch_size)
    self.lengths = (int(lengths[0]), int(lengths[1]))
    self.seed = int(seed)
    self.shuffle_buffer = shuffle_buffer
    self.bounds = (*tuple(int(b) for b in length_buckets), self.lengths[0])
    self.dense = dense
    self.long_seq_dim = int(long_seq_dim)
    self.teacher = teacher
    self._arrays: dict[str, np.ndarray] | None = None

  # ------------------------------------------------------------ arrays

  def arrays(self) -> dict[str, np.ndarray]:
    """The members' examples concatenated (member i's rows after member
    i - 1's): encoder [G, L], targets [G, T], bucket [G] and with ``dense``
    long_seq [G, 9, D], long_seq_mask [G, 9]."""
    if self._arrays is not None:
      return self._arrays
    built = [task_arrays.build(r, self.lengths) for r in self.rows]
    out = {
      "encoder": np.concatenate([b.encoder for b in built]),
      "targets": np.concatenate([b.targets for b in built]),
    }
    if self.teacher:
      out["teacher"] = np.concatenate(
        [b.encoder if b.teacher is None else b.teacher for b in built]
      )
    real = np.concatenate([b.real_length for b in built])
    out["bucket"] = np.sum(
      np.asarray(self.bounds[:-1], np.int64)[None, :] < real[:, None], axis=1
    )
    if self.dense:
      dims = {b.long_seq.shape[-1] for b in built if b.long_seq is not None}
      d = dims.pop() if dims else self.long_seq_dim
      if dims or (self.long_seq_dim and d != self.long_seq_dim):
        raise ValueError(f"IndexBatches: long-seq widths differ: {dims | {d}}")
      feats, masks = [], []
      for b in built:
        n = b.encoder.shape[0]
        if b.long_seq is None:
          feats.append(np.zeros((n, LONG_SEQ_ROWS, d), np.float32))
          masks.append(np.zeros((n, LONG_SEQ_ROWS), np.int32))
        else:
          feats.append(b.long_seq)
          masks.append(b.long_seq_mask)
      out["long_seq"] = np.concatenate(feats)
      out["long_seq_mask"] = np.concatenate(masks)
    self._arrays = out
    return out

  # ------------------------------------------------------------ order

  def index_dataset(self) -> tf.data.Dataset:
    """Endless (rows [B] int64, bucket int64) pairs: the global row indices
    of each batch, in the order of ``TrainBatches.dataset()``'s batches."""
    arrays = self.arrays()
    offsets = np.cumsum([0] + [r.count for r in self.rows])
    parts = []
    for i, rows in enumerate(self.rows):
      seed = self.seed + i
      ds = tf.data.Dataset.range(rows.count)
      if rows.shuffle_rows:  # tasks._dataset_fn's full row shuffle
        ds = ds.shuffle(rows.shuffle_rows, seed=seed, reshuffle_each_iteration=True)
      if rows.count < MEM_CACHE_EXAMPLES:  # seqio's in-memory cache
        ds = ds.cache()
      ds = ds.repeat(None)
      ds = ds.shuffle(self.shuffle_buffer or rows.shuffle_buffer, seed=seed)
      parts.append(ds.map(lambda j, o=int(offsets[i]): j + o))
    if len(parts) == 1:
      ds = parts[0]
    else:
      total = sum(self.rates)
      ds = tf.data.Dataset.sample_from_datasets(
        parts, weights=[r / total for r in self.rates], seed=self.seed
      )
    size = self.batch_size
    if len(self.bounds) == 1:
      return ds.batch(size, drop_remainder=True).map(
        lambda b: (b, tf.constant(0, tf.int64))
      )
    bucket = tf.constant(arrays["bucket"], tf.int64)
    return ds.group_by_window(
      lambda g: tf.gather(bucket, g),
      lambda key, window: window.batch(size, drop_remainder=True).map(
        lambda b: (b, key)
      ),
      window_size=size,
    )

  def gather(self, rows: np.ndarray, bucket: int) -> dict[str, np.ndarray]:
    """The batch of global rows [B] (data-pipeline names, see the module)."""
    a = self.arrays()
    targets = a["targets"][rows]
    out = {
      "encoder_input_tokens": a["encoder"][rows, : self.bounds[int(bucket)]],
      "decoder_target_tokens": targets,
      "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
      "decoder_loss_weights": (targets != PAD_ID).astype(np.int32),
    }
    if self.dense:
      out["long_seq"] = a["long_seq"][rows]
      out["long_seq_mask"] = a["long_seq_mask"][rows]
    if self.teacher:
      out[preprocessors.TEACHER_INPUTS] = a["teacher"][rows]
    return out

  def __call__(self, position: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches from ``position`` on (0 = the first), endlessly."""
    if position < 0:
      raise ValueError(f"data position must be >= 0, got {position}")
    ds = self.index_dataset()
    if position:
      ds = ds.skip(position)
    for rows, bucket in ds.prefetch(4).as_numpy_iterator():
      yield self.gather(rows, bucket)
