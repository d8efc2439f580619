"""tf.data preprocessors of the OneSearch tasks (seqio style, one concern each).

* ``render_prompt``: raw string fields -> "inputs" / "targets" text.
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


@seqio.map_over_dataset
def render_prompt(ex, template: prompts.Template):
  """Adds "inputs" and "targets" from the template; keeps the other fields."""
  out = dict(ex)
  out["inputs"] = prompts.render_tf(template.inputs, ex)
  out["targets"] = prompts.render_tf(template.targets, ex)
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
    table: [N, 3, D] float32 per-item level centroid vectors.
    reduce: "sum" (paper) or "mean" over the items of a sequence.
    enabled: False (the no-long-seq ablation) gives zeros and a zero mask.

  Returns:
    ([9, D] float32 click, order, RSU x levels L1..L3; [9] int32 mask).
  """
  d = table.shape[-1]
  sums, masks = [], []
  for name in LONG_SEQ_FIELDS:
    r = tf.cast(rows[name], tf.int32)
    n = tf.shape(r)[0]
    v = tf.reduce_sum(tf.gather(table, r), axis=0)  # [3, D]
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
  item_centroids: np.ndarray,
  reduce: str = "sum",
  enabled: bool = True,
) -> tf.data.Dataset:
  """Adds "long_seq" [9, D] float32 and "long_seq_mask" [9] int32.

  Args:
    ds: examples with int32 item-row vectors ``long_click``, ``long_order``,
      ``long_rsu`` (rows of ``item_centroids``).
    item_centroids: [N, 3, D] per-item level centroid vectors.
    reduce: "sum" (paper) or "mean" over the items of a sequence.
    enabled: False (the no-long-seq ablation) gives zeros and a zero mask.

  Returns:
    The dataset with the two dense features; the row fields are removed.
  """
  table = tf.constant(np.asarray(item_centroids, np.float32))

  def fn(ex):
    out = {k: v for k, v in ex.items() if k not in LONG_SEQ_FIELDS}
    out["long_seq"], out["long_seq_mask"] = long_seq_example(ex, table, reduce, enabled)
    return out

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
