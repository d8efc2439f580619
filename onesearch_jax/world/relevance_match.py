"""Tie relevance rows to catalogue items when the row carries no item id.

The public KuaiSearch relevance table has no ids, only the judged item's
text: ``item_title``, ``brand``, ``seller_name``, ``attr_value``. The rule
(docs/DATA.md, "Relevance rows without ids"):

  1. a row with a non-empty ``item_id`` (our extension field) keeps it:
     ``by_item_id``;
  2. else its title is compared with every item title after whitespace
     normalisation (``normalise_text``: runs of whitespace, the full-width
     space U+3000 included, become one space; leading and trailing
     whitespace is dropped; nothing else changes, so full-width punctuation
     and 【】 must match exactly). One item with that title: ``by_title``;
  3. several items with that title: those whose ``brand_name`` and
     ``seller_name`` equal the row's ``brand`` and ``seller_name`` (same
     normalisation); exactly one left: ``by_title_brand_seller``, else
     ``ambiguous_title``;
  4. no item with that title: ``no_title_match``.

Rows of cases 3 (ambiguous) and 4 stay text pairs (query, title, score).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

# Outcomes, in the order the rule tries them.
OUTCOMES = (
  "by_item_id",
  "by_title",
  "by_title_brand_seller",
  "ambiguous_title",
  "no_title_match",
)


def normalise_text(text: str) -> str:
  """``text`` with each whitespace run as one space, stripped."""
  return " ".join(str(text).split())


@dataclasses.dataclass(frozen=True)
class RelevancePair:
  """A judged (query, item title) pair that no catalogue item matches."""

  query: str
  title: str
  score: int  # 0..3 (ESCI: I=0, C=1, S=2, E=3)


@dataclasses.dataclass(frozen=True)
class RelevanceMatch:
  """The outcome for each relevance row.

  Attributes:
    item_ids: per row, the matched item id (a string) or None.
    outcomes: per row, one of OUTCOMES.
    counts: rows per outcome.
    pairs: the unmatched rows as text pairs, in file order.
  """

  item_ids: tuple[str | None, ...]
  outcomes: tuple[str, ...]
  counts: collections.Counter
  pairs: tuple[RelevancePair, ...]


class _TitleIndex:
  """Items by normalised title."""

  def __init__(self, items: Iterable[dict[str, Any]]):
    self.by_title: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for item in items:
      self.by_title[normalise_text(item["item_title"])].append(item)

  def lookup(self, row: dict[str, Any]) -> tuple[str | None, str]:
    """(item id or None, outcome) for a row without an item id."""
    found = self.by_title.get(normalise_text(row["item_title"]), [])
    if len(found) == 1:
      return str(found[0]["item_id"]), "by_title"
    if not found:
      return None, "no_title_match"
    want = (normalise_text(row["brand"]), normalise_text(row["seller_name"]))
    narrowed = [
      item
      for item in found
      if (normalise_text(item["brand_name"]), normalise_text(item["seller_name"]))
      == want
    ]
    if len(narrowed) == 1:
      return str(narrowed[0]["item_id"]), "by_title_brand_seller"
    return None, "ambiguous_title"


def match_relevance(
  items: Sequence[dict[str, Any]], relevance: Sequence[dict[str, Any]]
) -> RelevanceMatch:
  """Applies the module's rule to every relevance row.

  Args:
    items: item rows (``item_id``, ``item_title``, ``brand_name``,
      ``seller_name``).
    relevance: relevance rows (``query``, ``item_title``, ``brand``,
      ``seller_name``, ``score``, optional ``item_id``).

  Returns:
    The RelevanceMatch (rows are not modified).
  """
  index = _TitleIndex(items)
  ids, outcomes, pairs = [], [], []
  for row in relevance:
    if row.get("item_id") not in (None, ""):
      item_id, outcome = str(row["item_id"]), "by_item_id"
    else:
      item_id, outcome = index.lookup(row)
    ids.append(item_id)
    outcomes.append(outcome)
    if item_id is None:
      pairs.append(
        RelevancePair(str(row["query"]), str(row["item_title"]), int(row["score"]))
      )
  return RelevanceMatch(
    item_ids=tuple(ids),
    outcomes=tuple(outcomes),
    counts=collections.Counter(outcomes),
    pairs=tuple(pairs),
  )
