"""Host-array train batches (``task_arrays`` + ``index_batches``): the same
batches as seqio's on-the-fly pipeline, bit for bit, and the pieces against
their tf.data counterparts."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from onesearch_jax.data import (
  index_batches,
  model_batches,
  museq,
  preprocessors,
  task_arrays,
  tasks,
)


def _same_stream(members, reg, *, n, position=0, **kw):
  """Asserts TrainBatches' index path and seqio path give equal batches."""
  common = dict(batch_size=8, long_seq_dim=reg.long_seq_dim, **kw)
  seqio_path = model_batches.TrainBatches(members, index_path=False, **common)
  fast = model_batches.TrainBatches(members, **common)
  assert fast.index_batches() is not None  # the path under test is taken
  assert seqio_path.index_batches() is None
  a, b = seqio_path(position), fast(position)
  widths = set()
  for i in range(n):
    x, y = next(a), next(b)
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype, (i, k)
      np.testing.assert_array_equal(x[k], y[k], err_msg=f"batch {i} {k}")
    widths.add(x["encoder_input_tokens"].shape[1])
  return widths


def test_phase1_mixture_matches_seqio_across_epochs(registered):
  # 47 + 7 rows, 200 batches of 8: ~30 epochs of each task, buffer 16.
  widths = _same_stream(
    registered.mixtures["phase1"],
    registered,
    n=200,
    lengths=(96, 24),
    long_seq=False,
    seed=11,
    shuffle_buffer=16,
    length_buckets=(48,),
  )
  assert 48 in widths and widths <= {48, 96}


def test_phase3_members_with_replay_buckets_and_resume(registered):
  t = registered.tasks
  members = [
    (t["s3_personal"], 1.0),
    (t["s3_window"], 1.0),
    (t["s1_title_to_sid"], 0.2),
  ]
  for position in (0, 9):
    widths = _same_stream(
      members,
      registered,
      n=60,
      position=position,
      lengths=(96, 6),
      long_seq=True,
      seed=3,
      shuffle_buffer=64,
      length_buckets=(32, 48, 64),
    )
    assert len(widths) >= 2  # several buckets really occur


def test_task_default_buffer_and_one_task(registered):
  _same_stream(
    registered.tasks["s3_personal"],
    registered,
    n=30,
    lengths=(64, 6),  # prompts longer than 64 are cut: trim then EOS
    long_seq=True,
    seed=0,
  )


def test_row_shuffle_and_mean_reduce(small_world, small_table):
  config = museq.MuSeqConfig(shuffle_rows=True, long_reduce="mean")
  reg = tasks.register_tasks(
    small_world, sid_table=small_table, config=config, prefix="test_arrays_rows"
  )
  assert tasks.task_rows(reg.tasks["s3_personal"]).shuffle_rows > 0
  _same_stream(
    reg.mixtures["phase3"],
    reg,
    n=120,
    lengths=(96, 6),
    long_seq=True,
    seed=2,
    shuffle_buffer=8,
  )


def test_teacher_pairs_match_seqio(small_world, small_table):
  """Self-distillation's paired batches: teacher prompts of the keyword
  tasks, own prompts of the replay rows, never cut to the bucket."""
  config = museq.MuSeqConfig(keywords="builtin", keywords_in="teacher")
  reg = tasks.register_tasks(
    small_world, sid_table=small_table, config=config, prefix="test_arrays_teacher"
  )
  assert tasks.task_rows(reg.tasks["s3_personal"]).teacher_template is not None
  t = reg.tasks
  _same_stream(
    [(t["s3_personal"], 1.0), (t["s1_title_to_sid"], 0.5)],
    reg,
    n=40,
    position=3,
    lengths=(128, 6),
    long_seq=True,
    seed=7,
    shuffle_buffer=32,
    length_buckets=(48, 64),
    teacher=True,
  )
  plain = model_batches.TrainBatches(
    t["s1_title_to_sid"],
    batch_size=4,
    lengths=(48, 6),
    long_seq=False,
    seed=0,
    teacher=True,
  )
  with pytest.raises(ValueError, match="teacher_inputs"):
    next(plain(0))


def test_falls_back_where_it_does_not_apply(registered):
  name = registered.mixtures["phase3"]
  common = dict(batch_size=4, lengths=(96, 6), long_seq=True, seed=0)
  assert model_batches.TrainBatches(name, **common).index_batches() is not None
  assert (
    model_batches.TrainBatches(name, use_cached=True, **common).index_batches() is None
  )
  assert tasks.task_rows("no_such_task") is None
  small = index_batches.MAX_ROWS
  try:  # too many rows to hold: stream through seqio
    index_batches.MAX_ROWS = 10
    assert model_batches.TrainBatches(name, **common).index_batches() is None
  finally:
    index_batches.MAX_ROWS = small


def test_long_seq_arrays_equal_the_tf_data_feature():
  """Bit for bit what the tasks' tf.data step computes, for sequence lengths
  where TF's sum is neither left to right nor pairwise (m >= 16)."""
  rng = np.random.default_rng(0)
  table = rng.normal(size=(300, 3, 8)).astype(np.float32) * 10
  n = 60
  cols = {
    name: [list(rng.integers(0, 300, rng.integers(0, 200))) for _ in range(n)]
    for name in preprocessors.LONG_SEQ_FIELDS
  }
  cols["long_click"][3] = []  # empty sequences get zeros and mask 0
  cols["long_order"][4] = cols["long_order"][5][:17]  # one length twice
  cols["long_order"][6] = cols["long_order"][5][:17]
  ragged = {
    k: tf.ragged.constant(v, dtype=tf.int32, ragged_rank=1) for k, v in cols.items()
  }
  for reduce in ("sum", "mean"):
    for enabled in (True, False):
      feats, mask = task_arrays.long_seq_arrays(cols, table, n, reduce, enabled)
      ds = preprocessors.long_seq_feature(
        tf.data.Dataset.from_tensor_slices(ragged), table, reduce, enabled
      )
      for i, ex in enumerate(ds.as_numpy_iterator()):
        assert feats[i].tobytes() == ex["long_seq"].tobytes(), (reduce, i)
        np.testing.assert_array_equal(mask[i], ex["long_seq_mask"])
      if enabled:  # a plain left-to-right sum differs somewhere (the test bites)
        seq = np.zeros_like(feats[:, :3])
        for i in range(n):
          for r in cols["long_click"][i]:
            seq[i] += table[r]
        if reduce == "sum":
          assert seq.tobytes() != feats[:, :3].tobytes()
  assert mask[3, :3].tolist() == [0, 0, 0] and not feats[3, :3].any()


def test_encode_many_equals_encode(registered):
  vocab = registered.vocabulary
  texts = [
    "[BOS][Q]red shoes[QID]<a_3><b_1>[GEN_IID]",
    "red shoes",
    "",
    "[BOS][Q]red shoes ; blue hat[EOS]",
    "plain text with <a_1> inside",
  ]
  assert vocab.encode_many(texts) == [list(vocab.encode(t)) for t in texts]
  ids = vocab.encode(texts[0])
  m = task_arrays.token_matrix(vocab, texts[:1], 4)  # cut to 3, then EOS
  assert m.tolist() == [[*ids[:3], 1]]
  m = task_arrays.token_matrix(vocab, texts[2:3], 4)
  assert m.tolist() == [[1, 0, 0, 0]]


def test_render_needs_the_template_fields():
  cols = {"query": ["a", "b"], "sid": ["<a_1>", "<a_2>"]}
  assert task_arrays.render(cols, "[Q]{query}[QID]{sid}", 2) == [
    "[Q]a[QID]<a_1>",
    "[Q]b[QID]<a_2>",
  ]
  with pytest.raises(KeyError, match="title"):
    task_arrays.render(cols, "{title}", 2)


def test_index_batches_argument_checks(registered):
  rows = tasks.task_rows(registered.tasks["s1_title_to_sid"])
  with pytest.raises(ValueError, match="members"):
    index_batches.IndexBatches([rows], [], batch_size=2, lengths=(8, 6), seed=0)
  make = index_batches.IndexBatches([rows], [1.0], batch_size=2, lengths=(8, 6), seed=0)
  with pytest.raises(ValueError, match="position"):
    next(make(-1))
