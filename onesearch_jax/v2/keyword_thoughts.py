"""Keyword thoughts (SPEC §6.3): one generator interface, a built-in generator.

A ``KeywordGenerator`` turns a ``KeywordRequest`` (query, user, the user's
recently clicked items) into an ordered tuple of keywords, the "thought" the
V2 teacher prompt carries. Two implementations:

* ``DictionaryKeywordGenerator`` (built in, this module): the paper's three
  steps done with the KHQE keyword dictionary instead of an LLM:
  1. query analysis: Aho-Corasick matching of the normalised query against
     the dictionary and the synonyms of its entries
     (``khqe.keywords.KeywordMatcher``: longest hits first, word
     boundaries, a hit inside a longer kept hit dropped);
  2. keyword extraction: synonyms merged into one keyword per synonym
     group, duplicates removed, ordered by popularity (PV, then text);
  3. preference calibration by the user's behaviour: the keywords of the
     user's recently clicked items re-order and augment the list.
* ``keyword_cache.CachedKeywords``: keywords produced offline by any LLM,
  read from a JSONL file.

Choices (SPEC and the paper say only "filter or augment"):
  * A synonym group is a dictionary keyword and its synonyms (``synonyms``:
    keyword -> other names, the form of ``world.lexicon.SYNONYMS``). Every
    member found in the query stands for the group's most popular
    dictionary member; the group's PV is the sum of its members' PVs. A
    group none of whose members is in the dictionary is ignored (the
    dictionary says what is a keyword).
  * Calibration uses the ``recent_items`` most recent clicks that share at
    least one keyword with the query (clicks on another intent say nothing
    about this one). Query keywords those items also carry move first (PV
    order kept inside both parts); then up to ``max_personal`` keywords of
    those items whose tag (attribute type) no query keyword has are
    appended, most frequent among the items first (then PV, text): e.g. the
    user's usual brand for a query that names only a category. Nothing is
    removed: every query keyword stays.
  * A query with no keyword gets no keywords (no calibration either).
  * Negation (``KeywordThoughtConfig.negation_cues``, off unless the setting
    is "builtin:negation"): a dictionary match cannot tell "shoes not nike"
    from "nike shoes", so the query is cut at the first cue word and what
    follows comes out as "not <keyword>"; its attribute types count as
    named (the user's usual brand is not added when a brand is ruled out).
    Cue words are plain words, so a product called "no show socks" would be
    misread: the switch is for worlds with negated queries
    (``WorldConfig.complex_query_share``).
  * The output is capped at ``max_keywords``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

from onesearch_jax.khqe.keywords import Keyword, KeywordMatcher, normalise


@dataclasses.dataclass(frozen=True)
class KeywordRequest:
  """What a keyword generator is asked about.

  Attributes:
    query: the query text.
    user_id: the user ("" if unknown).
    recent_item_ids: the user's recently clicked items, oldest first
      (Mu-Seq's Seq_short).
  """

  query: str
  user_id: str = ""
  recent_item_ids: tuple[str, ...] = ()


class KeywordGenerator(Protocol):
  """Anything that gives the keywords of a request."""

  def keywords(self, request: KeywordRequest) -> tuple[str, ...]:
    """The request's keywords, most important first (may be empty)."""
    ...


@dataclasses.dataclass(frozen=True)
class KeywordThoughtConfig:
  """The built-in generator's settings."""

  max_keywords: int = 6  # at most this many keywords per request
  max_personal: int = 2  # at most this many added from the user's clicks
  recent_items: int = 5  # the most recent clicks that calibrate
  # Negation cues (whole words of the normalised query; () = off, the
  # "builtin" setting): the query is cut at the first cue, keywords after it
  # come out as "not <keyword>" after the query's own, and their attribute
  # types get no personal keyword ("builtin:negation" uses NEGATION_CUES).
  negation_cues: tuple[str, ...] = ()

  def __post_init__(self):
    if self.max_keywords < 1 or self.max_personal < 0 or self.recent_items < 0:
      raise ValueError(
        "KeywordThoughtConfig: max_keywords must be >= 1, max_personal and "
        f"recent_items >= 0, got {self}"
      )


# The cues of the "builtin:negation" setting, longest first ("but not"
# before "not").
NEGATION_CUES = ("but not", "without", "except", "not", "no")


def split_negation(query: str, cues: Sequence[str]) -> tuple[str, str]:
  """(text before the first negation cue, text after it) of the normalised
  query; (query, "") when no cue occurs as whole words, and the query as
  given when there are no cues (the analysis normalises it)."""
  if not cues:
    return query, ""
  text = normalise(query)
  alternatives = "|".join(re.escape(c) for c in sorted(cues, key=len, reverse=True))
  m = re.search(rf"(?<!\w)(?:{alternatives})(?!\w)", text)
  if m is None:
    return text, ""
  return text[: m.start()], text[m.end() :]


class DictionaryKeywordGenerator:
  """Query analysis with the KHQE keyword dictionary, calibrated by clicks."""

  def __init__(
    self,
    dictionary: Sequence[Keyword],
    item_texts: Mapping[str, str],
    synonyms: Mapping[str, Sequence[str]] | None = None,
    config: KeywordThoughtConfig = KeywordThoughtConfig(),
  ):
    """Builds the automaton over the dictionary and its synonyms.

    Args:
      dictionary: K keywords (``khqe.keywords.load_dictionary`` of the SID
        artefact's keywords.tsv, or ``mine_keywords``).
      item_texts: item id -> the text its keywords are matched in (title
        and attribute values, ``item_text``).
      synonyms: keyword -> other names of it (optional).
      config: the settings.
    """
    self.config = config
    self._item_texts = item_texts
    self._item_cache: dict[str, tuple[int, ...]] = {}
    by_text = {normalise(k.text): k for k in dictionary}
    # Union the synonym groups (a word may be listed under two keywords).
    parent: dict[str, str] = {t: t for t in by_text}

    def find(t: str) -> str:
      while parent[t] != t:
        parent[t] = parent[parent[t]]
        t = parent[t]
      return t

    for head, others in (synonyms or {}).items():
      members = [normalise(head)] + [normalise(o) for o in others]
      if not any(m in by_text for m in members):
        continue
      for m in members:
        parent.setdefault(m, m)
      root = find(members[0])
      for m in members[1:]:
        parent[find(m)] = root
    groups: dict[str, list[str]] = {}
    for t in parent:
      groups.setdefault(find(t), []).append(t)
    # One entry per group: the most popular dictionary member names it.
    self.entries: list[Keyword] = []
    pattern_entry: dict[str, int] = {}
    for members in groups.values():
      known = [by_text[m] for m in members if m in by_text]
      best = min(known, key=lambda k: (-k.pv, k.text))
      idx = len(self.entries)
      self.entries.append(
        Keyword(normalise(best.text), best.tag, sum(k.pv for k in known))
      )
      for m in members:
        pattern_entry[m] = idx
    self._patterns = sorted(pattern_entry)
    self._pattern_entry = [pattern_entry[p] for p in self._patterns]
    self._matcher = KeywordMatcher(self._patterns)

  def _rank_key(self, e: int) -> tuple[int, str]:
    return (-self.entries[e].pv, self.entries[e].text)

  def analyse(self, text: str) -> tuple[int, ...]:
    """Entries found in ``text``: synonyms merged, by PV (then text).

    Returns:
      Indices into ``self.entries``.
    """
    found = {self._pattern_entry[p] for p in self._matcher.match(text)}
    return tuple(sorted(found, key=self._rank_key))

  def item_keywords(self, item_id: str) -> tuple[int, ...]:
    """The entries of an item's text (() for an unknown item)."""
    if item_id not in self._item_cache:
      text = self._item_texts.get(item_id)
      self._item_cache[item_id] = () if text is None else self.analyse(text)
    return self._item_cache[item_id]

  def keywords(self, request: KeywordRequest) -> tuple[str, ...]:
    """Query keywords re-ordered and augmented by the recent clicks.

    Returns:
      At most ``config.max_keywords`` keyword texts (module docstring).
    """
    cfg = self.config
    wanted_text, negated_text = split_negation(request.query, cfg.negation_cues)
    query_kw = self.analyse(wanted_text)
    negated = [e for e in self.analyse(negated_text) if e not in query_kw]
    if not query_kw:
      return tuple(f"not {self.entries[e].text}" for e in negated)[: cfg.max_keywords]
    recent = request.recent_item_ids[-cfg.recent_items :] if cfg.recent_items else ()
    wanted = set(query_kw)
    items = [self.item_keywords(i) for i in reversed(recent)]
    items = [kws for kws in items if wanted & set(kws)]
    seen = Counter(e for kws in items for e in set(kws))
    confirmed = [e for e in query_kw if e in seen]
    ordered = confirmed + [e for e in query_kw if e not in seen]
    tags = {self.entries[e].tag for e in [*query_kw, *negated]}
    extra = sorted(
      (e for e in seen if e not in wanted and self.entries[e].tag not in tags),
      key=lambda e: (-seen[e],) + self._rank_key(e),
    )[: cfg.max_personal]
    texts = [self.entries[e].text for e in ordered]
    texts += [f"not {self.entries[e].text}" for e in negated]
    texts += [self.entries[e].text for e in extra]
    return tuple(texts)[: cfg.max_keywords]


def item_text(row: Mapping) -> str:
  """The text an item's keywords are matched in: title, then attribute values.

  Args:
    row: an items.jsonl row (``item_title``, optional ``attributes``).
  """
  values = [str(v) for _, v in sorted((row.get("attributes") or {}).items())]
  return " ; ".join([str(row["item_title"])] + values)
