"""Model batches: feature-name adaptation, deterministic skip, eval inputs."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from onesearch_jax.data import eval_batches, model_batches, pipeline

MODEL_KEYS = {
  "encoder_input_tokens",
  "decoder_input_tokens",
  "decoder_target_tokens",
  "decoder_loss_weights",
}


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_data_feature_names_become_the_model_contract(registered):
  name = registered.mixtures["phase3"]
  raw = next(
    pipeline.get_batches(
      name, batch_size=4, inputs_length=96, targets_length=6
    ).as_numpy_iterator()
  )
  assert {"long_seq", "long_seq_mask"} <= set(raw)  # the data pipeline's names
  out = model_batches.to_model_batch(raw, long_seq=True)
  assert set(out) == MODEL_KEYS | {"long_seq_features"}  # model/model.py's names
  np.testing.assert_array_equal(out["long_seq_features"], raw["long_seq"])
  assert out["long_seq_features"].dtype == np.float32
  assert out["decoder_loss_weights"].dtype == np.float32
  assert set(model_batches.to_model_batch(raw, long_seq=False)) == MODEL_KEYS
  bad = dict(raw)
  bad["long_seq_mask"] = np.zeros_like(raw["long_seq_mask"])
  if np.any(raw["long_seq"] != 0):
    with pytest.raises(ValueError, match="long_seq_mask"):
      model_batches.to_model_batch(bad, long_seq=True)
  with pytest.raises(KeyError, match="long_seq"):
    model_batches.to_model_batch(
      {k: v for k, v in raw.items() if k != "long_seq"}, long_seq=True
    )


@pytest.mark.parametrize("phase,long_seq", [("phase1", False), ("phase3", True)])
def test_skip_to_a_data_position_gives_the_same_batches(registered, phase, long_seq):
  make = model_batches.TrainBatches(
    registered.mixtures[phase],
    batch_size=4,
    lengths=(96, 24) if phase == "phase1" else (96, 6),
    long_seq=long_seq,
    seed=3,
    shuffle_buffer=64,
  )
  full = _take(make(0), 5)
  later = _take(make(3), 2)
  for a, b in zip(full[3:], later, strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert ("long_seq_features" in full[0]) == long_seq
  other = model_batches.TrainBatches(
    registered.mixtures[phase],
    batch_size=4,
    lengths=make.lengths,
    long_seq=long_seq,
    seed=4,
    shuffle_buffer=64,
  )
  first = next(other(0))
  assert not np.array_equal(
    first["encoder_input_tokens"], full[0]["encoder_input_tokens"]
  )
  assert make.stats.rows == 4 * 7


def test_sid_only_weights_drop_eos(registered):
  batch = model_batches.fixed_batches(
    registered.tasks["eval_click"],
    batch_size=4,
    lengths=(96, 6),
    long_seq=True,
    num_batches=1,
    vocabulary=registered.vocabulary,
  )[0]
  targets = batch["decoder_target_tokens"]
  assert np.all(targets[:, 5] == 1)  # EOS after the 5 SID tokens
  np.testing.assert_array_equal(batch["decoder_loss_weights"][:, :5], 1.0)
  np.testing.assert_array_equal(batch["decoder_loss_weights"][:, 5], 0.0)


def test_eval_inputs_rows_keep_their_metadata(registered, small_world):
  sessions = {}
  for line in open(small_world / "recall.jsonl", encoding="utf-8"):
    r = json.loads(line)
    sessions[r["session_id"]] = r
  got = list(
    eval_batches.eval_inputs(registered, "eval_click", batch_size=5, inputs_length=96)
  )
  tokens = np.concatenate([b["encoder_input_tokens"] for b, _ in got])
  feats = np.concatenate([b["long_seq_features"] for b, _ in got])
  metas = [m for _, ms in got for m in ms]
  assert len(metas) == tokens.shape[0] == registered.counts["eval_click"]
  assert all(len(ms) == b["encoder_input_tokens"].shape[0] for b, ms in got)
  # The same rows, in the same order, as the feature converter's batches.
  ref = list(
    pipeline.get_batches(
      registered.tasks["eval_click"],
      batch_size=5,
      inputs_length=96,
      targets_length=6,
      split="test",
      shuffle=False,
      drop_remainder=False,
    ).as_numpy_iterator()
  )
  np.testing.assert_array_equal(
    tokens, np.concatenate([b["encoder_input_tokens"] for b in ref])
  )
  np.testing.assert_array_equal(feats, np.concatenate([b["long_seq"] for b in ref]))
  vocab = registered.vocabulary
  for i, m in enumerate(metas):
    s = sessions[m["session_id"]]
    assert s["split"] == "test" and s["user_id"] == m["user_id"]
    assert m["query"] == s["query"] and m["target_item_ids"] == s["clicked_item_ids"]
    assert f"[Q]{m['query']}[QID]" in vocab.decode(tokens[i].tolist())
  assert len({m["session_id"] for m in metas}) == len(metas)
  # pad_last: fixed shapes, metadata only for the real rows.
  padded = list(
    eval_batches.eval_inputs(
      registered, "eval_click", batch_size=5, inputs_length=96, pad_last=True
    )
  )
  assert all(b["encoder_input_tokens"].shape == (5, 96) for b, _ in padded)
  assert [len(ms) for _, ms in padded] == [len(ms) for _, ms in got]
  last, ms = padded[-1]
  assert np.all(last["encoder_input_tokens"][len(ms) :] == 0)
  with pytest.raises(ValueError, match="eval_click or eval_order"):
    next(eval_batches.eval_inputs(registered, "s3_personal"))


def test_member_list_mixes_plain_and_dense_tasks(registered):
  """Indexing replay in phase 3: a plain task mixed with a dense one gets
  exact-zero long-seq features; both tasks appear about at their rates."""
  vocab = registered.vocabulary
  title, personal = registered.tasks["s1_title_to_sid"], registered.tasks["s3_personal"]
  make = model_batches.TrainBatches(
    [(title, 1.0), (personal, 1.0)],
    batch_size=8,
    lengths=(96, 6),
    long_seq=True,
    seed=0,
    shuffle_buffer=16,
    long_seq_dim=registered.long_seq_dim,
  )
  batches = _take(make(0), 10)
  rows = {"title": 0, "personal": 0}
  for b in batches:
    assert b["long_seq_features"].shape == (8, 9, registered.long_seq_dim)
    for tokens, feats in zip(
      b["encoder_input_tokens"], b["long_seq_features"], strict=True
    ):
      if tokens[1] == vocab.token_id("[TITLE]"):
        rows["title"] += 1
        assert not feats.any()
      else:
        assert tokens[1] in (vocab.token_id("[UID]"), vocab.token_id("[Q]"))
        rows["personal"] += 1
  assert rows["title"] > 10 and rows["personal"] > 10
  # The same position gives the same batches (resume contract).
  again = _take(make(4), 2)
  np.testing.assert_array_equal(
    again[0]["encoder_input_tokens"], batches[4]["encoder_input_tokens"]
  )
  with pytest.raises(ValueError, match="long_seq_dim"):
    model_batches.TrainBatches(
      [(title, 1.0), (personal, 1.0)], batch_size=8, lengths=(96, 6),
      long_seq=True, seed=0,
    )  # fmt: skip
  with pytest.raises(ValueError, match="positive rates"):
    model_batches.TrainBatches(
      [(title, 0.0)], batch_size=8, lengths=(96, 6), long_seq=False, seed=0
    )


def _rows(batches):
  """Each row of each batch as a hashable tuple (encoder tokens without the
  trailing padding, the decoder tokens, the long-seq bytes)."""
  out = []
  for b in batches:
    for i in range(b["encoder_input_tokens"].shape[0]):
      enc = b["encoder_input_tokens"][i]
      n = int(np.max(np.nonzero(enc)[0])) + 1
      assert not enc[n:].any()
      out.append(
        (
          tuple(enc[:n]),
          tuple(b["decoder_target_tokens"][i]),
          b["long_seq_features"][i].tobytes(),
        )
      )
  return out


def test_length_buckets_regroup_the_same_rows_and_cut_only_padding(registered):
  """Bucketed batches hold exactly the rows of the padded stream (a window
  of batches is a permutation of the same examples), each batch at its
  bucket's width, every row within its bucket and above the one below."""
  common = dict(batch_size=4, lengths=(96, 6), long_seq=True, seed=5, shuffle_buffer=64)
  name = registered.mixtures["phase3"]
  plain = _take(model_batches.TrainBatches(name, **common)(0), 60)
  bounds = (32, 48, 64)
  make = model_batches.TrainBatches(name, length_buckets=(*bounds, 200), **common)
  assert make.length_buckets == bounds  # bounds >= the input length dropped
  bucketed = _take(make(0), 40)
  widths = set()
  for b in bucketed:
    w = b["encoder_input_tokens"].shape[1]
    widths.add(w)
    assert w in (*bounds, 96)
    assert b["decoder_target_tokens"].shape == (4, 6)
    assert b["long_seq_features"].shape[0] == 4
    lengths = [int(np.max(np.nonzero(r)[0])) + 1 for r in b["encoder_input_tokens"]]
    below = max([x for x in (0, *bounds) if x < w])
    assert all(below < n <= w for n in lengths), (w, lengths)
  assert len(widths) >= 2  # the world's prompts span several buckets
  # Group-by-window only delays rows: the 160 bucketed rows all come from the
  # first 240 padded rows, none twice more often than there.
  have, pool = collections.Counter(_rows(bucketed)), collections.Counter(_rows(plain))
  assert sum(have.values()) == 160
  assert all(pool[r] >= c for r, c in have.items())
  # Resume: position k gives the same batches as the k-th of a fresh stream.
  again = _take(make(7), 3)
  for a, b in zip(bucketed[7:10], again, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  with pytest.raises(ValueError, match="single host"):
    model_batches.TrainBatches(
      name, length_buckets=bounds, shard_info=seqio.ShardInfo(0, 2), **common
    )
  with pytest.raises(ValueError, match="> 0"):
    model_batches.TrainBatches(name, length_buckets=(0,), **common)


def test_bucket_batches_cut_to_the_bound_by_hand():
  rows = [
    [5, 6, 0, 0, 0, 0],
    [7, 0, 0, 0, 0, 0],
    [1, 2, 3, 4, 0, 0],
    [9, 9, 9, 0, 0, 0],
  ]
  ds = tf.data.Dataset.from_tensor_slices(
    {
      "encoder_input_tokens": np.asarray(rows, np.int32),
      "decoder_target_tokens": np.arange(8, dtype=np.int32).reshape(4, 2),
    }
  )
  out = list(model_batches.bucket_batches(ds, 2, (2, 6)).as_numpy_iterator())
  # Rows 0 and 1 (lengths 2, 1) fill the 2-bucket; rows 2 and 3 (4, 3) the 6-bucket.
  assert [b["encoder_input_tokens"].tolist() for b in out] == [
    [[5, 6], [7, 0]],
    [[1, 2, 3, 4, 0, 0], [9, 9, 9, 0, 0, 0]],
  ]
  assert [b["decoder_target_tokens"].tolist() for b in out] == [
    [[0, 1], [2, 3]],
    [[4, 5], [6, 7]],
  ]
  with pytest.raises(ValueError, match="increase"):
    model_batches.bucket_batches(ds, 2, (6, 2))
