"""Encoder inputs of an eval task with row-aligned metadata, for decoding and
item-level metrics.

``eval_inputs(registered, kind, batch_size)`` yields (batch, metas): the
encoder inputs (and long-term features) of the eval task's examples in file
order, and per row its session_id, user_id, query and target_item_ids.
seqio's feature converter drops string features, so this path does NOT use
it: it reads the task's preprocessed examples (which keep the strings) and
pads them itself, keeping row i's metadata with row i.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import seqio

from onesearch_jax.data import pipeline, tasks

META_FIELDS = ("session_id", "user_id", "query", "target_item_ids")  # one dict per row


def _text(v) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def eval_inputs(
  registered: tasks.RegisteredTasks,
  kind: str = "eval_click",
  batch_size: int = 64,
  *,
  inputs_length: int = 256,
  long_seq: bool = True,
  shard_info: seqio.ShardInfo | None = None,
  pad_last: bool = False,
) -> Iterator[tuple[dict, list[dict]]]:
  """Encoder inputs of an eval task with row-aligned metadata, in file order.

  Args:
    registered: from ``tasks.register_tasks`` (or ``model_batches.register_from_spec``).
    kind: "eval_click" or "eval_order".
    batch_size: rows per batch.
    inputs_length: encoder length L (the prompt is trimmed to L - 1 tokens
      + EOS, as in training).
    long_seq: emit ``long_seq_features``.
    shard_info: this host's shard (None = every example).
    pad_last: pad the last partial batch with all-zero rows to batch_size
      (its metadata list then stays shorter than the batch).

  Yields:
    (batch, metas): batch = {encoder_input_tokens [B, L] int32,
    (long_seq_features [B, 9, D] float32)}; metas = one dict per real row
    {session_id, user_id, query: str, target_item_ids: list[str]}, metas[i]
    describing row i. Every example is yielded exactly once.
  """
  if kind not in ("eval_click", "eval_order"):
    raise ValueError(f"eval kind must be eval_click or eval_order, got {kind!r}")
  if kind not in registered.tasks:
    raise ValueError(
      f"no {kind} task registered ({registered.counts.get(kind, 0)} examples)"
    )
  name = registered.tasks[kind]
  lengths = pipeline.task_feature_lengths(inputs_length, 8, True)
  ds = seqio.get_mixture_or_task(name).get_dataset(
    sequence_length=lengths,
    split=tasks.TEST,
    shuffle=False,
    shard_info=shard_info,
    num_epochs=1,
  )
  d = registered.long_seq_dim

  def flush(rows: list[dict]) -> tuple[dict, list[dict]]:
    n = batch_size if pad_last else len(rows)
    tokens = np.zeros((n, inputs_length), np.int32)
    feats = np.zeros((n, pipeline.LONG_SEQ_ROWS, d), np.float32)
    metas = []
    for i, ex in enumerate(rows):
      ids = np.asarray(ex["inputs"], np.int32)[:inputs_length]
      tokens[i, : ids.size] = ids
      feats[i] = ex["long_seq"]
      metas.append(
        {
          "session_id": _text(ex["session_id"]),
          "user_id": _text(ex["user_id"]),
          "query": _text(ex["query"]),
          "target_item_ids": [_text(t) for t in ex["target_item_ids"]],
        }
      )
    batch = {"encoder_input_tokens": tokens}
    if long_seq:
      batch["long_seq_features"] = feats
    return batch, metas

  rows: list[dict] = []
  for ex in ds.as_numpy_iterator():
    rows.append(ex)
    if len(rows) == batch_size:
      yield flush(rows)
      rows = []
  if rows:
    yield flush(rows)
