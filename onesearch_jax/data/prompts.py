"""Prompt templates of the three SFT phases (SPEC §3.4, §4.1), English words.

A template is a ``str.format``-style string over the string fields of a raw
example (``{query}``, ``{sid}``, ...). ``render`` fills it in Python (docs,
tests, inspection); ``render_tf`` builds the same string with
``tf.strings.join`` inside tf.data. Segments are delimited by the specials
``[BOS] [SEP] [EOS]``; ``[EMB]`` marks where the model splices the Q-Former
outputs of the long-term sequences.

The phase-3 prompt follows the formal order of SPEC §3.4 (``[BOS] uid q SID_q
Seq_q Seq_short Seq_long_emb U [EOS]``), one ``[SEP]`` between segments, with
the instruction of the official Chinese prompt ("give the appropriate item
id") before ``[EOS]``. Ablations drop their segment entirely.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import tensorflow as tf

from onesearch_jax.data import museq, museq_math
from onesearch_jax.data.museq import MuSeqConfig
from onesearch_jax.data.sid_table import SIDTable, sid_string

LIST_SEP = " ; "  # between the queries of Seq_q
EMPTY = "none"  # an empty sequence in the prompt


@dataclasses.dataclass(frozen=True)
class Template:
  """Input and target templates of one task."""

  inputs: str
  targets: str

  @property
  def fields(self) -> tuple[str, ...]:
    return template_fields(self.inputs, self.targets)


def template_fields(*templates: str) -> tuple[str, ...]:
  """The field names of templates, in order of first use, each once."""
  names = []
  for text in templates:
    for _, name, _, _ in string.Formatter().parse(text):
      if name and name not in names:
        names.append(name)
  return tuple(names)


# Phase 1: semantic content alignment.
PHASE1 = {
  "query_to_sid": Template(
    "[BOS] query: {query} [SEP] give the query id: [EOS]", "{sid}"
  ),
  "sid_to_query": Template(
    "[BOS] query id: {sid} [SEP] give the query: [EOS]", "{query}"
  ),
  "title_to_sid": Template(
    "[BOS] item title: {title} [SEP] give the item id: [EOS]", "{sid}"
  ),
  "sid_to_title": Template(
    "[BOS] item id: {sid} [SEP] give the item title: [EOS]", "{title}"
  ),
  "text_to_category": Template(
    "[BOS] text: {text} [SEP] give the category path: [EOS]", "{category}"
  ),
  "sid_to_category": Template(
    "[BOS] item id: {sid} [SEP] give the category path: [EOS]", "{category}"
  ),
}

# Phase 2: query-item co-occurrence (no user features).
PHASE2 = {
  "query_to_title": Template(
    "[BOS] query: {query} [SEP] give the title of a clicked item: [EOS]", "{title}"
  ),
  "title_to_query": Template(
    "[BOS] item title: {title} [SEP] give a query that clicks it: [EOS]", "{query}"
  ),
  "sidq_to_sidi": Template(
    "[BOS] query id: {sid_q} [SEP] give the id of a clicked item: [EOS]", "{sid_i}"
  ),
  "sidi_to_sidq": Template(
    "[BOS] item id: {sid_i} [SEP] give the id of a query that clicks it: [EOS]",
    "{sid_q}",
  ),
}


# The same tasks with one special token per segment label and per task
# ("tokens" style, the default): the English labels above cost about 60 of
# the ~150 phase-3 prompt tokens (the small sentencepiece model splits them
# into near-characters) and carry nothing the model needs; the task marker
# at the end says what to generate, so tasks with the same input segment
# (query -> its SID vs query -> a clicked title) stay distinct.
PHASE1_TOKENS = {
  "query_to_sid": Template("[BOS][Q]{query}[GEN_QID]", "{sid}"),
  "sid_to_query": Template("[BOS][QID]{sid}[GEN_Q]", "{query}"),
  "title_to_sid": Template("[BOS][TITLE]{title}[GEN_IID]", "{sid}"),
  "sid_to_title": Template("[BOS][IID]{sid}[GEN_TITLE]", "{title}"),
  "text_to_category": Template("[BOS][TEXT]{text}[GEN_CAT]", "{category}"),
  "sid_to_category": Template("[BOS][IID]{sid}[GEN_CAT]", "{category}"),
}
PHASE2_TOKENS = {
  "query_to_title": Template("[BOS][Q]{query}[GEN_TITLE]", "{title}"),
  "title_to_query": Template("[BOS][TITLE]{title}[GEN_Q]", "{query}"),
  "sidq_to_sidi": Template("[BOS][QID]{sid_q}[GEN_IID]", "{sid_i}"),
  "sidi_to_sidq": Template("[BOS][IID]{sid_i}[GEN_QID]", "{sid_q}"),
  "query_to_sidi": Template("[BOS][Q]{query}[QID]{sid_q}[GEN_IID]", "{sid_i}"),
}
PHASE2["query_to_sidi"] = Template(
  "[BOS] query: {query} [SEP] query id: {sid_q} [SEP] give the id of a clicked "
  "item: [EOS]",
  "{sid_i}",
)
PROMPT_STYLES = ("tokens", "words")

# OneSearch-V2's four stage-1 keyword CoT tasks (SPEC §4.1, §6.3), registered
# only with ``MuSeqConfig.cot_tasks``; their task markers are added to the
# vocabulary only then (``VocabLayout.markers``), so the main job's id layout
# is unchanged. "Keyword SIDs" are the KHQE codes of the keyword texts
# (``v2.keyword_sids``), several joined like the keywords.
COT_MARKERS = ("[GEN_KW]", "[GEN_KWID]")
# task kind (without "s1_") -> (input segments, marker, target field); the
# "user" tasks add the uid and Seq_short segments (the clicks that calibrate
# the personalised keywords) where the phase-3 prompt keeps them.
_COT_TASKS = {
  "query_to_keywords": (("query",), "[GEN_KW]", "keywords"),
  "sidq_to_keyword_sids": (("sid_q",), "[GEN_KWID]", "keyword_sids"),
  "user_query_to_keywords": (("uid", "query", "seq_short"), "[GEN_KW]", "keywords"),
  "user_sidq_to_keyword_sids": (
    ("uid", "sid_q", "seq_short"),
    "[GEN_KWID]",
    "keyword_sids",
  ),
}
COT_KINDS = tuple(f"s1_{k}" for k in _COT_TASKS)
_COT_WORDS = {
  "[GEN_KW]": "give related keywords: ",
  "[GEN_KWID]": "give the ids of related keywords: ",
}


def cot_templates(config: MuSeqConfig) -> dict[str, Template]:
  """The four CoT task templates (keys without the "s1_" prefix).

  "tokens" style, e.g. ``[BOS][Q]{query}[GEN_KW]`` -> ``{keywords}`` and
  ``[BOS][UID]{uid}[QID]{sid_q}[RC]{seq_short}[GEN_KWID]`` ->
  ``{keyword_sids}``; "words" style: the phase-3 labels joined by ``[SEP]``
  and an instruction before ``[EOS]``. The uid segment follows
  ``config.user_id`` ("none": dropped) and Seq_short ``use_seq_short``.
  """
  style = config.prompt_style
  label = _PHASE3_LABELS[style]
  keep = {"uid": config.user_id != "none", "seq_short": config.use_seq_short}
  opening, join, _ = _PHASE3_FRAME[style]
  out = {}
  for kind, (segments, marker, target) in _COT_TASKS.items():
    parts = [label[s] + "{" + s + "}" for s in segments if keep.get(s, True)]
    if style == "tokens":
      inputs = opening + "".join(parts) + marker
    else:
      inputs = opening + join.join(parts) + join + _COT_WORDS[marker] + "[EOS]"
    out[kind] = Template(inputs, "{" + target + "}")
  return out


def phase1_templates(config: MuSeqConfig) -> dict[str, Template]:
  """Phase-1 templates of the configured prompt style."""
  return dict(PHASE1_TOKENS if config.prompt_style == "tokens" else PHASE1)


def phase2_templates(config: MuSeqConfig) -> dict[str, Template]:
  """Phase-2 templates of the configured prompt style. ``phrase_to_sidi``
  (query-like item phrases, ``data/item_phrases.py``) is ``query_to_sidi``'s
  template: a phrase is read as a query."""
  out = dict(PHASE2_TOKENS if config.prompt_style == "tokens" else PHASE2)
  out["phrase_to_sidi"] = out["query_to_sidi"]
  return out


PHASE3_SEGMENTS = (
  "uid",
  "query",
  "sid_q",
  "seq_q",
  "seq_short",
  "long",
  "profile",
  "keywords",
)
# Phase-3 segment labels per style: segment -> label, and how the prompt is
# opened, joined and closed.
_PHASE3_LABELS = {
  "tokens": {
    "uid": "[UID]",
    "query": "[Q]",
    "sid_q": "[QID]",
    "seq_q": "[RQ]",
    "seq_short": "[RC]",
    "long": "[LT]",
    "profile": "[PF]",
    "keywords": "[TEXT]",
  },
  "words": {
    "uid": "user id: ",
    "query": "query: ",
    "sid_q": "query id: ",
    "seq_q": "recent queries: ",
    "seq_short": "recently clicked items: ",
    "long": "long-term behaviour: ",
    "profile": "user: ",
    "keywords": "related keywords: ",
  },
}
_PHASE3_FRAME = {  # (open, join, close)
  "tokens": ("[BOS]", "", "[GEN_IID]"),
  "words": ("[BOS] ", " [SEP] ", " [SEP] give the appropriate item id: [EOS]"),
}


def phase3_template(config: MuSeqConfig) -> Template:
  """The personalised prompt, with the segments the ablations keep.

  "tokens" style: ``[BOS][UID]uid[Q]query[QID]SID_q[RQ]q1[SEP]q2..[RC]SIDs
  [LT][EMB]..[PF]profile[GEN_IID]``; "words" style: the English labels,
  segments joined by ``[SEP]``, the official prompt's instruction last.

  With ``config.keywords`` on (OneSearch-V2's keyword thoughts as input,
  "+RAG") a last segment ``[TEXT]kw1[SEP]kw2..`` ("related keywords: " in
  the words style) follows the profile, where the official V2 prompt puts
  its keyword span (just before the instruction). It reuses the ``[TEXT]``
  label (free text) rather than a new special, so the vocabulary, and with
  it the main job, is the same whether the switch is on or off. With
  ``config.keywords_in = "teacher"`` (self-distillation) this prompt has no
  keyword segment: it is the student's (and serving's) prompt, and
  ``teacher_template`` is the same prompt with the segment.

  With ``config.direct_cot`` (the "direct CoT" experiment) the keywords
  leave the input (the V1 prompt) and open the target instead:
  ``{keywords}[GEN_IID]{target}``, i.e. ``kw1[SEP]kw2[GEN_IID]<a_..>...``
  ("none" when the session has no keyword), so the model writes its thought
  before the SID; ``[GEN_IID]`` ends the thought in both styles.
  """
  label = _PHASE3_LABELS[config.prompt_style]
  keep = {
    "uid": config.user_id != "none",
    "seq_short": config.use_seq_short,
    "long": config.use_long_seq,
    "profile": config.use_profile,
    "keywords": config.keywords_in_prompt and not config.direct_cot,
  }
  parts = []
  for seg in PHASE3_SEGMENTS:
    if not keep.get(seg, True):
      continue
    body = "[EMB]" * config.n_emb_tokens if seg == "long" else "{" + seg + "}"
    parts.append(label[seg] + body)
  opening, join, close = _PHASE3_FRAME[config.prompt_style]
  target = "{keywords}[GEN_IID]{target}" if config.direct_cot else "{target}"
  return Template(opening + join.join(parts) + close, target)


def teacher_template(config: MuSeqConfig) -> Template:
  """The self-distillation teacher's phase-3 prompt: ``phase3_template``
  with the keyword segment (whatever ``config.keywords_in`` says), so the
  student prompt is exactly this one with the segment's span removed."""
  if config.keywords == "none":
    raise ValueError("teacher_template: MuSeqConfig.keywords is 'none'")
  return phase3_template(dataclasses.replace(config, keywords_in="prompt"))


def phase3_fields(
  user_id: str,
  query: str,
  features: museq.UserFeatures,
  table: SIDTable,
  config: MuSeqConfig,
  keywords: tuple[str, ...] = (),
) -> dict[str, Any]:
  """The fields of ``phase3_template`` for one session (training and serving).

  The one place that turns Mu-Seq features into prompt fields: the seqio
  phase-3 / eval tasks (``corpus.build_corpus``) and the host-side prompter
  (``session_prompts.SessionPrompter``) both call it.

  Args:
    user_id: the user (hashed for ``config.user_id == "hashed"``).
    query: the query text.
    features: its Mu-Seq features (``museq.MuSeqIndex.features``).
    table: the SID table (every item of ``features`` has a SID).
    config: Mu-Seq settings.
    keywords: the session's keyword thoughts (used with ``config.keywords``
      on; ``v2.keyword_source.prompt_keywords``).

  Returns:
    String fields "uid", "query", "sid_q", "seq_q", "seq_short", "profile"
    (and "keywords", joined like Seq_q, when ``config.keywords`` is on) and
    the int item-row lists "long_click", "long_order", "long_rsu" (rows of
    ``table.item_centroids``). A query without a SID gets ``sid_q = EMPTY``
    ("none"); the training tasks skip such sessions, so only serving sees it.
  """
  f = features
  c = table.code_width
  if config.user_id == "hashed":
    uid = f"<u_{museq_math.hashed_user_bucket(user_id, config.user_hash_buckets)}>"
  elif f.uid_codes is None:
    uid = EMPTY
  else:
    uid = sid_string(f.uid_codes[:c], table.opq_codes) + sid_string(
      f.uid_codes[c:], table.opq_codes
    )
  rows = table.item_row
  words = config.prompt_style == "words"
  out = {
    "uid": uid,
    "query": query,
    "sid_q": table.query_sid(query) if query in table.query_row else EMPTY,
    "seq_q": (LIST_SEP if words else "[SEP]").join(f.seq_q) or EMPTY,
    "seq_short": (" " if words else "").join(table.item_sid(i) for i in f.seq_short)
    or EMPTY,
    "profile": f.profile,
    "long_click": [rows[i] for i in f.long_click],
    "long_order": [rows[i] for i in f.long_order],
    "long_rsu": [rows[i] for i in f.long_rsu],
  }
  if config.keywords != "none":
    out["keywords"] = (LIST_SEP if words else "[SEP]").join(keywords) or EMPTY
  return out


def template_words() -> list[str]:
  """Every literal text of every template (sentencepiece training text)."""
  templates = list(PHASE1.values()) + list(PHASE2.values())
  templates.append(phase3_template(MuSeqConfig(prompt_style="words")))
  out = []
  for t in templates:
    for text in (t.inputs, t.targets):
      out += [lit for lit, _, _, _ in string.Formatter().parse(text) if lit]
  return sorted(set(out + [LIST_SEP, EMPTY]))


def render(template: str, fields: dict[str, str]) -> str:
  """Fills a template in Python (KeyError on a missing field)."""
  return template.format(**fields)


def render_tf(template: str, features: dict[str, tf.Tensor]) -> tf.Tensor:
  """Fills a template with scalar string tensors (inside tf.data)."""
  pieces = []
  for literal, name, _, _ in string.Formatter().parse(template):
    if literal:
      pieces.append(tf.constant(literal))
    if name:
      pieces.append(features[name])
  if not pieces:
    return tf.constant("")
  return tf.strings.join(pieces)
