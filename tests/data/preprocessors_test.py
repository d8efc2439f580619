"""Each preprocessor on its own (seqio test utilities), and the templates."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf

from onesearch_jax.data import museq, museq_math, preprocessors, prompts


def test_render_prompt_matches_python_render():
  t = prompts.PHASE2["sidq_to_sidi"]
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
  t = prompts.PHASE1["text_to_category"]
  fields = {"text": "红色连衣裙女夏季", "category": "服饰内衣/女装/连衣裙"}
  ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in fields.items()})
  ex = next(iter(preprocessors.render_prompt(ds, template=t)))
  assert ex["inputs"].numpy().decode() == prompts.render(t.inputs, fields)
  assert ex["targets"].numpy().decode() == "服饰内衣/女装/连衣裙"


@pytest.mark.parametrize("style", ["tokens", "words"])
def test_phase3_template_ablations(style):
  def template(**kw):
    return prompts.phase3_template(museq.MuSeqConfig(prompt_style=style, **kw)).inputs

  full = template()
  segments = {
    "words": (
      "user id: {uid}",
      "recently clicked items: {seq_short}",
      "[EMB][EMB][EMB]",
      "user: {profile}",
    ),
    "tokens": ("[UID]{uid}", "[RC]{seq_short}", "[LT][EMB][EMB][EMB]", "[PF]{profile}"),
  }[style]
  for seg in segments:
    assert seg in full
  if style == "words":
    assert full.startswith("[BOS] ") and full.endswith(" [EOS]")
  else:  # one special token per label, the task marker last, no spaces
    assert full.startswith("[BOS][UID]") and full.endswith("[GEN_IID]")
    assert " " not in full
  assert "{uid}" not in template(user_id="none")
  assert "{seq_short}" not in template(use_seq_short=False)
  assert "[EMB]" not in template(use_long_seq=False)
  assert template(n_emb_tokens=1).count("[EMB]") == 1
  # Formal SPEC order: uid, q, SID_q, Seq_q, Seq_short, Seq_long_emb, U.
  keys = ["{uid}", "{query}", "{sid_q}", "{seq_q}", "{seq_short}", "[EMB]", "{profile}"]
  pos = [full.index(k) for k in keys]
  assert pos == sorted(pos)


def test_token_style_templates_use_only_special_labels():
  """Every literal of a "tokens" template is a run of vocabulary specials, and
  the two styles define the same tasks with the same fields."""
  import re

  from onesearch_jax.data import vocab as vocab_lib

  tok = museq.MuSeqConfig(prompt_style="tokens")
  words = museq.MuSeqConfig(prompt_style="words")
  pairs = [
    (prompts.phase1_templates(tok), prompts.phase1_templates(words)),
    (prompts.phase2_templates(tok), prompts.phase2_templates(words)),
  ]
  specials = "|".join(re.escape(t) for t in vocab_lib.SPECIALS)
  for t_map, w_map in pairs:
    assert t_map.keys() == w_map.keys()
    for kind in t_map:
      assert set(t_map[kind].fields) == set(w_map[kind].fields), kind
      literal = re.sub(r"\{[a-z_]+\}", "", t_map[kind].inputs)
      assert re.fullmatch(f"(?:{specials})+", literal), (kind, literal)
  # Tasks that read the same input segment differ in their task marker.
  s1, s2 = pairs[0][0], pairs[1][0]
  assert s1["query_to_sid"].inputs != s2["query_to_title"].inputs
  assert s1["sid_to_title"].inputs != s1["sid_to_category"].inputs


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
      want, mask = museq_math.long_seq_sums(
        [np.array(x, np.int64) for x in r], cent, reduce
      )
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
