"""Each preprocessor on its own (seqio test utilities), and the templates."""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from onesearch_jax.data import museq, preprocessors, prompts


def test_render_prompt_matches_python_render():
  t = prompts.STAGE2["sidq_to_sidi"]
  fields = {"sid_q": "<a_1><b_2><c_3><d_4><d_5>", "sid_i": "<a_0><b_0><c_0><d_0><d_9>"}
  ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in fields.items()})
  out = preprocessors.render_prompt(ds, template=t)
  seqio.test_utils.assert_dataset(
    out,
    {
      **fields,
      "inputs": prompts.render(t.inputs, fields),
      "targets": fields["sid_i"],
    },
  )
  assert prompts.render(t.inputs, fields) == (
    "[BOS] query id: <a_1><b_2><c_3><d_4><d_5> [SEP] give the id of a clicked item: [EOS]"
  )


def test_render_prompt_cjk_fields():
  t = prompts.STAGE1["text_to_category"]
  fields = {"text": "红色连衣裙女夏季", "category": "服饰内衣/女装/连衣裙"}
  ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in fields.items()})
  ex = next(iter(preprocessors.render_prompt(ds, template=t)))
  assert ex["inputs"].numpy().decode() == prompts.render(t.inputs, fields)
  assert ex["targets"].numpy().decode() == "服饰内衣/女装/连衣裙"


def test_stage3_template_ablations():
  full = prompts.stage3_template(museq.MuSeqConfig()).inputs
  for seg in (
    "user id: {uid}",
    "recently clicked items: {seq_short}",
    "[EMB][EMB][EMB]",
    "user: {profile}",
  ):
    assert seg in full
  assert full.startswith("[BOS] ") and full.endswith(" [EOS]")
  assert (
    "{uid}" not in prompts.stage3_template(museq.MuSeqConfig(user_id="none")).inputs
  )
  assert (
    "{seq_short}"
    not in prompts.stage3_template(museq.MuSeqConfig(use_seq_short=False)).inputs
  )
  assert (
    "[EMB]" not in prompts.stage3_template(museq.MuSeqConfig(use_long_seq=False)).inputs
  )
  assert (
    prompts.stage3_template(museq.MuSeqConfig(n_emb_tokens=1)).inputs.count("[EMB]")
    == 1
  )
  # Formal SPEC order: uid, q, SID_q, Seq_q, Seq_short, Seq_long_emb, U.
  keys = ["{uid}", "{query}", "{sid_q}", "{seq_q}", "{seq_short}", "[EMB]", "{profile}"]
  pos = [full.index(k) for k in keys]
  assert pos == sorted(pos)


def _long_ds(rows):
  return tf.data.Dataset.from_tensor_slices(
    {
      name: tf.ragged.constant([r[i] for r in rows], dtype=tf.int32)
      for i, name in enumerate(preprocessors.LONG_SEQ_FIELDS)
    }
  )


def test_long_seq_feature_matches_numpy():
  rng = np.random.default_rng(0)
  cent = rng.normal(size=(7, 3, 5)).astype(np.float32)
  rows = [([0, 1, 1], [], [6]), ([], [], []), ([3], [2, 4], [3])]
  for reduce in ("sum", "mean"):
    out = list(
      preprocessors.long_seq_feature(_long_ds(rows), cent, reduce).as_numpy_iterator()
    )
    assert len(out) == 3
    for ex, r in zip(out, rows, strict=True):
      assert set(ex) == {"long_seq", "long_seq_mask"}
      want, mask = museq.long_seq_sums([np.array(x, np.int64) for x in r], cent, reduce)
      np.testing.assert_allclose(ex["long_seq"], want, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(ex["long_seq_mask"], mask)


def test_long_seq_feature_disabled_gives_zeros():
  cent = np.ones((3, 3, 2), np.float32)
  ex = next(
    preprocessors.long_seq_feature(
      _long_ds([([0], [1], [2])]), cent, enabled=False
    ).as_numpy_iterator()
  )
  assert ex["long_seq"].shape == (9, 2)
  assert not ex["long_seq"].any() and not ex["long_seq_mask"].any()


def test_template_words_cover_every_literal():
  words = prompts.template_words()
  assert " [SEP] give the appropriate item id: [EOS]" in words
  assert prompts.LIST_SEP in words and prompts.EMPTY in words
