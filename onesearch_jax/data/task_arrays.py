"""A registered task's examples as host arrays, made once per length pair.

The train batches (``model_batches.TrainBatches``) read a task through
seqio's on-the-fly pipeline: every example is rendered, tokenised, given its
long-seq sums, trimmed, shuffled, mixed and converted by per-example tf.data
ops, ~1.4 ms of CPU per example on the project's 2-core machine (~30% of a
phase-3 step, docs/BENCHMARKS.md). The same numbers can be made for a whole
task at once: the prompts with ``str.format``, the token ids with one
sentencepiece call per distinct text piece (``encode_many``), the long-seq
sums with one TF reduction per sequence length. ``TrainBatches`` then
replays seqio's shuffle and mixture order on row indices (which never look
at the examples, so the order is the same) and gathers each batch from
these arrays. ``tests/data/task_arrays_test.py`` checks that the two paths
give the same batches, bit for bit.

* ``TaskRows``: what a task's examples are made of (``tasks.register_tasks``
  records one per task; ``tasks.task_rows(name)``).
* ``TaskArrays``: the examples as seqio's ``Task.get_dataset`` +
  ``EncDecFeatureConverter`` would give them at (inputs, targets) lengths
  (L, T), in source order.
* ``build(rows, lengths)``: TaskRows -> TaskArrays (memoised on the rows).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from onesearch_jax.data import preprocessors, prompts
from onesearch_jax.data.pipeline import LONG_SEQ_ROWS
from onesearch_jax.data.vocab import EOS_ID

_STACK_ROWS = 65_536  # item vectors per stacked long-seq sum (bounds memory)


@dataclasses.dataclass(frozen=True, eq=False)
class TaskRows:
  """The raw material of one registered task's examples.

  Attributes:
    cols: field -> list of values (``corpus.Corpus.columns[kind]``).
    count: number of examples.
    inputs_template: the prompt template (``prompts.Template.inputs``).
    targets_template: the target template.
    vocabulary: the tasks' ``OneSearchVocabulary``.
    item_centroids: [N, 3, D] float32 per-item level centroids for the
      dense long-seq feature; None for a task without it.
    reduce: "sum" or "mean" (``MuSeqConfig.long_reduce``).
    enabled: False = the no-long-seq ablation (zeros, zero mask).
    shuffle_rows: the source's full row shuffle size (0 = off;
      ``MuSeqConfig.shuffle_rows``).
    shuffle_buffer: the task's own example shuffle buffer.
    teacher_template: self-distillation's teacher prompt template (the
      task's "teacher_inputs"), or None.
  """

  cols: dict[str, list]
  count: int
  inputs_template: str
  targets_template: str
  vocabulary: Any
  item_centroids: np.ndarray | None
  reduce: str = "sum"
  enabled: bool = True
  shuffle_rows: int = 0
  shuffle_buffer: int = 10_000
  teacher_template: str | None = None
  _built: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def dense(self) -> bool:
    return self.item_centroids is not None


@dataclasses.dataclass(frozen=True)
class TaskArrays:
  """A task's converted examples, in source order (n = the task's count).

  Attributes:
    encoder: [n, L] int32 prompt ids, cut to L - 1 + EOS, 0-padded.
    targets: [n, T] int32 target ids, cut to T - 1 + EOS, 0-padded.
    long_seq: [n, 9, D] float32 or None (no dense feature).
    long_seq_mask: [n, 9] int32 or None.
    real_length: [n] int64: last non-zero prompt position + 1 (the length
      bucket key of ``model_batches.bucket_batches``).
    teacher: [n, L] int32 teacher prompt ids like ``encoder``, or None.
  """

  encoder: np.ndarray
  targets: np.ndarray
  long_seq: np.ndarray | None
  long_seq_mask: np.ndarray | None
  real_length: np.ndarray
  teacher: np.ndarray | None = None


def render(cols: dict[str, list], template: str, n: int) -> list[str]:
  """The template filled for each of the n rows (``prompts.render_tf``'s
  strings: literal pieces and field values joined)."""
  names = prompts.template_fields(template)
  missing = [f for f in names if f not in cols]
  if missing:
    raise KeyError(f"template {template!r} needs fields {missing}; have {sorted(cols)}")
  if not names:
    return [template.format()] * n
  return [
    template.format_map(dict(zip(names, values, strict=True)))
    for values in zip(*(cols[f] for f in names), strict=True)
  ]


def token_matrix(vocabulary, texts: list[str], length: int) -> np.ndarray:
  """[n, length] int32: each text's ids cut to length - 1, then EOS, then 0s
  (seqio's ``tokenize`` + ``append_eos_after_trim`` + the converter's pad)."""
  out = np.zeros((len(texts), length), np.int32)
  for i, ids in enumerate(vocabulary.encode_many(texts)):
    ids = ids[: length - 1]
    out[i, : len(ids)] = ids
    out[i, len(ids)] = EOS_ID
  return out


def long_seq_arrays(
  cols: dict[str, list],
  item_centroids: np.ndarray,
  n: int,
  reduce: str = "sum",
  enabled: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """The dense long-seq feature of n rows (``preprocessors.long_seq_feature``).

  Args:
    cols: holds ``preprocessors.LONG_SEQ_FIELDS``: per row a list of item
      rows of ``item_centroids``.
    item_centroids: [N, 3, D] float32.
    n: rows.
    reduce: "sum" or "mean".
    enabled: False gives zeros and a zero mask.

  Returns:
    ([n, 9, D] float32 click, order, RSU x levels L1..L3; [n, 9] int32 mask).

  The per-example feature sums a [m, 3, D] stack with ``tf.reduce_sum``,
  whose float association depends on m (for m >= 16 it is neither left to
  right nor pairwise). The rows of one sequence length m are therefore
  stacked to [k, m, 3, D] and summed over axis 1 by the same TF reduction,
  which sums each of the k slices exactly as the [m, 3, D] sum does: the
  same float32 bits as the tf.data feature (tested against it).
  """
  table = np.asarray(item_centroids, np.float32)
  d = table.shape[-1]
  feats = np.zeros((n, LONG_SEQ_ROWS, d), np.float32)
  mask = np.zeros((n, LONG_SEQ_ROWS), np.int32)
  if not enabled:
    return feats, mask
  for f, name in enumerate(preprocessors.LONG_SEQ_FIELDS):
    seqs = cols[name]
    lengths = np.fromiter((len(s) for s in seqs), np.int64, n)
    mask[:, 3 * f : 3 * f + 3] = (lengths > 0)[:, None]
    for m in np.unique(lengths[lengths > 0]):
      m = int(m)
      where = np.flatnonzero(lengths == m)
      step = max(1, _STACK_ROWS // m)
      for lo in range(0, where.size, step):
        idx = where[lo : lo + step]
        rows = np.asarray([seqs[i] for i in idx], np.int64)  # [k, m]
        sums = tf.reduce_sum(tf.constant(table[rows]), axis=1)  # [k, 3, D]
        if reduce == "mean":
          sums = sums / tf.cast(m, tf.float32)
        feats[idx, 3 * f : 3 * f + 3] = sums.numpy()
  return feats, mask


def build(rows: TaskRows, lengths: tuple[int, int]) -> TaskArrays:
  """The task's examples at (inputs, targets) lengths (memoised per pair).

  Raises:
    KeyError: a template field the columns lack.
  """
  key = (int(lengths[0]), int(lengths[1]))
  got = rows._built.get(key)
  if got is not None:
    return got
  n = rows.count
  encoder = token_matrix(
    rows.vocabulary, render(rows.cols, rows.inputs_template, n), key[0]
  )
  targets = token_matrix(
    rows.vocabulary, render(rows.cols, rows.targets_template, n), key[1]
  )
  long_seq = long_seq_mask = None
  if rows.dense:
    long_seq, long_seq_mask = long_seq_arrays(
      rows.cols, rows.item_centroids, n, rows.reduce, rows.enabled
    )
  teacher = None
  if rows.teacher_template is not None:
    teacher = token_matrix(
      rows.vocabulary, render(rows.cols, rows.teacher_template, n), key[0]
    )
  positions = np.arange(1, key[0] + 1, dtype=np.int64)
  real_length = np.max(np.where(encoder != 0, positions, 0), axis=1)
  out = TaskArrays(encoder, targets, long_seq, long_seq_mask, real_length, teacher)
  rows._built[key] = out
  return out
