"""Query-like item phrases: short pseudo-queries made from an item's own
catalogue fields, paired with the item's SID (the ``s2_phrase_to_sidi``
task, ``MuSeqConfig.item_phrases``).

Why: on the validation day the generator gets an item's product type (SID
level 1) right as often as the cascade but its level-2 code (brand,
attributes within the type) far less often on torso and tail queries
(docs/TRAINING.md). Titles hold every word of an item at once; a phrase of
two words ties one attribute to the item's code, in the shape of a query.
The idea is ESCI's pseudo-queries (doc2query) made from structured
attributes instead of a text model.

Phrases of one item (deduplicated, in this order):

* ``"{brand_name} {entity}"``;
* ``"{value} {entity}"`` for each other attribute of ``attributes`` (the
  optional field of the items table; rows without it give the brand
  phrase only),

where ``entity`` is ``attributes["entity"]`` or, without it, the item's
level-3 category name. A phrase's SID_q is the query table's SID where the
phrase is a known query, else the SID artefact's text encoder + quantiser
code of the text (``v2.keyword_sids``: made the way a query's SID_q is).

Row order: the rows are sources of a mixture read from the start of the
list (``MuSeqConfig.shuffle_rows`` off), so a run that samples a few
thousand of them must see many items: round r holds the r-th phrase of
every item that has one, rounds in order, the items of a round in a seeded
permutation, and each item's phrases in a seeded order.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

# The seed of the row order (fixed: the corpus is data, not a training run).
ROW_ORDER_SEED = 0
# Attribute keys that are not a phrase's modifier.
_NOT_MODIFIERS = ("entity", "brand")


def phrases_of(item: Mapping[str, Any]) -> list[str]:
  """The phrases of one item row (``items.jsonl`` fields), in order.

  Args:
    item: an item row: ``brand_name``, ``category_level3_name`` and the
      optional ``attributes`` (attribute type -> value).

  Returns:
    The distinct phrases: the brand phrase first, then one per attribute in
    the row's key order. Empty words are left out (a phrase of an empty
    value is not made).
  """
  attrs = item.get("attributes") or {}
  entity = str(attrs.get("entity") or item["category_level3_name"]).strip()
  out: list[str] = []
  words = [(str(item["brand_name"]).strip(), entity)]
  words += [
    (str(v).strip(), entity) for k, v in attrs.items() if k not in _NOT_MODIFIERS
  ]
  for a, b in words:
    if not a or not b:
      continue
    p = f"{a} {b}"
    if p not in out:
      out.append(p)
  return out


def phrase_rows(
  items: Iterable[Mapping[str, Any]],
  item_sid: Callable[[str], str],
  has_sid: Callable[[str], bool],
  query_sid: Callable[[str], str | None],
  text_sids: Callable[[list[str]], list[str]],
  skips: collections.Counter,
  clicks: Mapping[str, int] | None = None,
) -> list[dict[str, str]]:
  """The ``s2_phrase_to_sidi`` rows of a catalogue.

  Args:
    items: item rows.
    item_sid: item id -> its SID string.
    has_sid: whether an item id has a SID (items without one are skipped and
      counted as ``s2_phrase_item_without_sid``).
    query_sid: phrase -> the query table's SID string, or None when the
      phrase is not a known query.
    text_sids: texts -> their SID strings (the artefact's encoder).
    skips: skip counter, updated.
    clicks: None ("items" targets): one row per (phrase, item) pair, in
      the round-robin order above. Else item id -> train clicks ("clicks"
      targets): a phrase shared by n items gives n rows whose target items
      are drawn with replacement in proportion to their clicks (what a
      user typing the phrase clicks, as the train log estimates it; a
      phrase none of whose items was clicked gives no row, counted as
      ``s2_phrase_without_clicks``), all rows in a seeded permutation.

  Returns:
    Rows ``{"query", "sid_q", "sid_i"}`` (the ``query_to_sidi`` template's
    fields), in the module's row order.
  """
  per_item: list[tuple[str, list[str]]] = []
  for it in items:
    if not has_sid(it["item_id"]):
      skips["s2_phrase_item_without_sid"] += 1
      continue
    ph = phrases_of(it)
    if ph:
      per_item.append((it["item_id"], ph))
  known = {}
  unknown = set()
  for _, ph in per_item:
    for p in ph:
      if p in known or p in unknown:
        continue
      s = query_sid(p)
      if s is None:
        unknown.add(p)
      else:
        known[p] = s
  unknown_list = sorted(unknown)
  sid_q = dict(known)
  sid_q.update(zip(unknown_list, text_sids(unknown_list), strict=True))
  rng = np.random.default_rng(ROW_ORDER_SEED)
  if clicks is not None:
    return _click_rows(per_item, sid_q, item_sid, clicks, rng, skips)
  ordered = [[ph[j] for j in rng.permutation(len(ph))] for _, ph in per_item]
  rows = []
  for r in range(max((len(ph) for ph in ordered), default=0)):
    for k in rng.permutation(len(per_item)):
      if r < len(ordered[k]):
        p = ordered[k][r]
        rows.append({"query": p, "sid_q": sid_q[p], "sid_i": item_sid(per_item[k][0])})
  return rows


def _click_rows(per_item, sid_q, item_sid, clicks, rng, skips):
  """The "clicks" targets of ``phrase_rows`` (see there)."""
  members: dict[str, list[str]] = {}
  for item_id, ph in per_item:
    for p in ph:
      members.setdefault(p, []).append(item_id)
  rows = []
  for p in sorted(members):
    ids = members[p]
    w = np.array([clicks.get(i, 0) for i in ids], np.float64)
    if w.sum() <= 0:
      skips["s2_phrase_without_clicks"] += 1
      continue
    for j in rng.choice(len(ids), size=len(ids), p=w / w.sum()):
      rows.append({"query": p, "sid_q": sid_q[p], "sid_i": item_sid(ids[j])})
  return [rows[k] for k in rng.permutation(len(rows))]
