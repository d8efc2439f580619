"""The keyword generator a ``MuSeqConfig.keywords`` setting names, and the
keywords of one phase-3 session.

* "none": no generator (the main job).
* "builtin": ``DictionaryKeywordGenerator`` over the keyword dictionary the
  KHQE stage mines from the same world (``khqe.keywords.mine_keywords``
  with the default ``KeywordConfig``, so the same entries as the SID
  artefact's keywords.tsv of a default build) and the simulator lexicon's
  synonyms (``world.lexicon.SYNONYMS``; on other data they only add
  patterns that may never occur).
* "cache:<path>": ``keyword_cache.load_keyword_cache(path)``.

The session's recent clicks (Mu-Seq's Seq_short) calibrate the built-in
generator; a cold-start user's default sequence (popular items, not the
user's) does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onesearch_jax.khqe.keywords import mine_keywords
from onesearch_jax.v2 import keyword_cache
from onesearch_jax.v2.keyword_thoughts import (
  NEGATION_CUES,
  DictionaryKeywordGenerator,
  KeywordGenerator,
  KeywordRequest,
  KeywordThoughtConfig,
  item_text,
)
from onesearch_jax.world import lexicon


def build_keyword_generator(
  setting: str,
  items: Sequence[Mapping[str, Any]],
  recall: Sequence[Mapping[str, Any]],
) -> KeywordGenerator | None:
  """The generator of a ``MuSeqConfig.keywords`` setting.

  Args:
    setting: "none" | "builtin" | "builtin:negation" (negated query words come
      out as "not <keyword>") | "cache:<path>".
    items: items.jsonl rows (the dictionary and the items' keywords).
    recall: recall.jsonl rows (the dictionary's PV, train split).

  Returns:
    None for "none".
  """
  if setting == "none":
    return None
  if setting in ("builtin", "builtin:negation"):
    dictionary, _ = mine_keywords(items, recall)
    texts = {str(r["item_id"]): item_text(r) for r in items}
    cues = NEGATION_CUES if setting == "builtin:negation" else ()
    return DictionaryKeywordGenerator(
      dictionary, texts, lexicon.SYNONYMS, KeywordThoughtConfig(negation_cues=cues)
    )
  if setting.startswith("cache:"):
    return keyword_cache.load_keyword_cache(setting[len("cache:") :])
  raise ValueError(f"unknown keywords setting {setting!r}")


def prompt_keywords(
  generator: KeywordGenerator | None, user_id: str, query: str, features: Any
) -> tuple[str, ...]:
  """The keywords of one session's phase-3 prompt.

  Args:
    generator: from ``build_keyword_generator`` (None: no keywords).
    user_id: the user.
    query: the query text.
    features: its ``museq.UserFeatures`` (``seq_short``, ``cold_start``).

  Returns:
    Keyword texts, most important first.
  """
  if generator is None:
    return ()
  recent = () if features.cold_start else tuple(features.seq_short)
  return generator.keywords(KeywordRequest(query, user_id, recent))
