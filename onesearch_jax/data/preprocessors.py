"""tf.data preprocessors of the OneSearch tasks (seqio style, one concern each).

* ``render_prompt``: raw string fields -> "inputs" / "targets" text.
* ``render_teacher_prompt``: the same fields -> "teacher_inputs" text (the
  phase-3 prompt with the keyword thoughts, self-distillation's teacher).
* ``long_seq_feature``: item rows of the click / order / RSU sequences ->
  the dense [9, D] per-level centroid sums and their [9] mask (the same
  numbers as ``museq_math.long_seq_sums``, computed inside the pipeline so the
  examples stay small).

Tokenisation and EOS are seqio's own ``tokenize`` and
``append_eos_after_trim``.
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from onesearch_jax.data import prompts

LONG_SEQ_FIELDS = ("long_click", "long_order", "long_rsu")
TEACHER_INPUTS = "teacher_inputs"  # the teacher prompt of self-distillation


class CodeCentroids:
  """The per-item level centroid vectors [N, 3, D], kept as the items' codes
  [N, 3] int32 plus the RQ codebooks: 12 bytes per item instead of 12 * D
  (1.5 KiB at D = 128; 28 GB for the 18.6 M-item release, twice over once
  copied into a tf.constant). ``gather(rows)`` gives exactly the rows of
  ``SIDTable.item_centroids`` (the same float32 values, so the same sums).

  Args:
    codes: [N, >=3] local codes (a, b, c, ...).
    rq_centroids: (l1 [k1, D], l2 [k2, D], l3) with l3 [k3, D] (global),
      [k2, k3, D] (per-b parents) or [k1 * k2, k3, D] (per-(a, b) parents).
    k2: the level-2 size (for the per-(a, b) parent index a * k2 + b).
  """

  def __init__(self, codes: np.ndarray, rq_centroids, k2: int):
    l1, l2, l3 = (np.asarray(c, np.float32) for c in rq_centroids)
    self.dim = l1.shape[-1]
    self.codes = tf.constant(np.asarray(np.asarray(codes)[:, :3], np.int32))
    self.l1, self.l2 = tf.constant(l1), tf.constant(l2)
    self.global_l3 = l3.ndim == 2
    self.per_ab = l3.ndim == 3 and l3.shape[0] != l2.shape[0]
    self.k2, self.k3 = k2, l3.shape[-2]
    self.l3 = tf.constant(l3.reshape(-1, self.dim))

  def gather(self, rows: tf.Tensor) -> tf.Tensor:
    """[n, 3, D] float32 centroid vectors of item rows [n]."""
    c = tf.gather(self.codes, rows)
    a, b, c3 = (tf.cast(c[:, i], tf.int64) for i in range(3))
    if self.global_l3:
      i3 = c3
    else:
      group = a * self.k2 + b if self.per_ab else b
      i3 = group * self.k3 + c3
    parts = [tf.gather(self.l1, a), tf.gather(self.l2, b), tf.gather(self.l3, i3)]
    return tf.stack(parts, axis=1)


@seqio.map_over_dataset
def render_prompt(ex, template: prompts.Template):
  """Adds "inputs" and "targets" from the template; keeps the other fields."""
  out = dict(ex)
  out["inputs"] = prompts.render_tf(template.inputs, ex)
  out["targets"] = prompts.render_tf(template.targets, ex)
  return out


@seqio.map_over_dataset
def render_teacher_prompt(ex, template: prompts.Template):
  """Adds "teacher_inputs": the self-distillation teacher's prompt (the
  phase-3 prompt with the keyword segment, ``prompts.teacher_template``)."""
  out = dict(ex)
  out[TEACHER_INPUTS] = prompts.render_tf(template.inputs, ex)
  return out


def long_seq_example(
  rows: dict[str, tf.Tensor],
  table: tf.Tensor,
  reduce: str = "sum",
  enabled: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
  """The long-seq feature of one example (TF ops; tf.data or tf.function).

  Args:
    rows: ``LONG_SEQ_FIELDS`` -> [n] int item rows of ``table``.
    table: [N, 3, D] float32 per-item level centroid vectors, or the same
      as a ``CodeCentroids``.
    reduce: "sum" (paper) or "mean" over the items of a sequence.
    enabled: False (the no-long-seq ablation) gives zeros and a zero mask.

  Returns:
    ([9, D] float32 click, order, RSU x levels L1..L3; [9] int32 mask).
  """
  by_codes = isinstance(table, CodeCentroids)
  d = table.dim if by_codes else table.shape[-1]
  sums, masks = [], []
  for name in LONG_SEQ_FIELDS:
    r = tf.cast(rows[name], tf.int32)
    n = tf.shape(r)[0]
    vectors = table.gather(r) if by_codes else tf.gather(table, r)  # [n, 3, D]
    v = tf.reduce_sum(vectors, axis=0)  # [3, D]
    if reduce == "mean":
      v = v / tf.cast(tf.maximum(n, 1), tf.float32)
    nonempty = tf.cast(n > 0, tf.int32)
    if not enabled:
      v, nonempty = tf.zeros([3, d]), tf.constant(0)
    sums.append(v)
    masks.append(tf.fill([3], nonempty))
  return tf.reshape(tf.concat(sums, axis=0), [9, d]), tf.concat(masks, axis=0)


def long_seq_feature(
  ds: tf.data.Dataset,
  item_centroids: np.ndarray | CodeCentroids,
  reduce: str = "sum",
  enabled: bool = True,
) -> tf.data.Dataset:
  """Adds "long_seq" [9, D] float32 and "long_seq_mask" [9] int32.

  Args:
    ds: examples with int32 item-row vectors ``long_click``, ``long_order``,
      ``long_rsu`` (rows of ``item_centroids``).
    item_centroids: [N, 3, D] per-item level centroid vectors, or a
      ``CodeCentroids`` (the same vectors from codes; the streamed tasks).
    reduce: "sum" (paper) or "mean" over the items of a sequence.
    enabled: False (the no-long-seq ablation) gives zeros and a zero mask.

  Returns:
    The dataset with the two dense features; the row fields are removed.
  """
  if isinstance(item_centroids, CodeCentroids):
    table = item_centroids
  else:
    table = tf.constant(np.asarray(item_centroids, np.float32))

  def fn(ex):
    out = {k: v for k, v in ex.items() if k not in LONG_SEQ_FIELDS}
    out["long_seq"], out["long_seq_mask"] = long_seq_example(ex, table, reduce, enabled)
    return out

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
