"""Search intents: a category plus constraints, and which items satisfy them.

A constraint is a ``(kind, value)`` pair. Kinds:

* an attribute type (``"color"``, ``"scene"``, ...): the item's value of that
  type is ``value`` (an index into ``catalog.attr_vocab[type]``);
* ``"brand"``: the item's brand is ``value``;
* ``"model"``: the item has the brand and model number of item ``value``;
* ``"not_" + type`` or ``"not_brand"`` (negative, ``NOT``): the item's value
  differs from ``value``; an item without a value of that type satisfies it;
* ``"max_price_of"``: the item's price is not above item ``value``'s price.

An item satisfying every constraint of an intent in its category is Exact
(grade 3, relevance.py); the engine and the click model reward each satisfied
constraint (sessions.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from onesearch_jax.world.catalog import Catalog

NOT = "not_"  # prefix of a negative constraint kind
MAX_PRICE = "max_price_of"  # price not above the referenced item's

# Attribute types a query may name (category_attribute, negation).
QUERY_ATTRS = (
  "color",
  "material",
  "style",
  "function",
  "audience",
  "season",
  "pattern",
  "specifications",
  "modifier",
  "scene",
  "location",
)


@dataclasses.dataclass(frozen=True)
class Intent:
  """What a user looks for: a category plus constraints on items."""

  qtype: str  # one of queries.QUERY_TYPES
  l1: int
  l2: int
  l3: int  # -1 for vague (L2-level) intents
  constraints: tuple[tuple[str, int], ...]  # (kind, value): the module docstring
  target_item: int = -1  # repeat purchase: the item bought before
  cue: str = ""  # use_case: the use phrase the query names (lexicon.USE_CASES)

  def to_json(self, catalog: Catalog) -> dict[str, Any]:
    """A JSON-able description (names, not indices).

    Positive constraints go to ``attributes``; negative ones to ``excluded``,
    the price ceiling to ``max_price`` (with the ``reference_item`` it comes
    from) and the use phrase to ``use_case``: these keys appear only when the
    intent has them, so simple intents keep their old form.
    """
    tree = catalog.tree
    attrs, excluded, extra = {}, {}, {}
    for t, v in self.constraints:
      if t == MAX_PRICE:
        extra["max_price"] = float(catalog.price[v])
        extra["reference_item"] = catalog.item_id(v)
      elif t.startswith(NOT):
        excluded[t[len(NOT) :]] = _value_name(catalog, t[len(NOT) :], v)
      else:
        attrs[t] = _value_name(catalog, t, v)
    out = {
      "type": self.qtype,
      "category_level1_name": tree.l1_names[self.l1],
      "category_level2_name": tree.l2_names[self.l2],
      "category_level3_name": tree.l3_names[self.l3] if self.l3 >= 0 else "",
      "attributes": attrs,
    }
    if excluded:
      out["excluded"] = excluded
    if self.cue:
      out["use_case"] = self.cue
    return {**out, **extra}


def _value_name(catalog: Catalog, kind: str, v: int) -> str:
  if kind == "brand":
    return catalog.brand_names[v]
  if kind == "model":
    return catalog.model_code(v)
  return catalog.attr_vocab[kind][v]


def _satisfies(catalog: Catalog, items: np.ndarray, kind: str, v: int) -> np.ndarray:
  """[n] bool: items satisfying one positive constraint."""
  if kind == "brand":
    return catalog.brand[items] == v
  if kind == "model":
    return (catalog.brand[items] == catalog.brand[v]) & (
      catalog.model_num[items] == catalog.model_num[v]
    )
  if kind == MAX_PRICE:
    return catalog.price[items] <= catalog.price[v]
  return catalog.attrs[kind][items] == v


def match_counts(catalog: Catalog, items: np.ndarray, intent: Intent) -> np.ndarray:
  """[n] number of the intent's constraints each item satisfies.

  A negative constraint (``not_<kind>``) counts when the positive one of the
  same kind and value does not hold (an absent attribute never equals a
  value), so an item satisfies all constraints exactly when the count is
  ``len(intent.constraints)``.

  Args:
    catalog: the catalogue.
    items: [n] item indices.
    intent: the intent.

  Returns:
    [n] int64 counts in 0..len(intent.constraints).
  """
  out = np.zeros(items.shape[0], dtype=np.int64)
  for t, v in intent.constraints:
    if t.startswith(NOT):
      out += ~_satisfies(catalog, items, t[len(NOT) :], v)
    else:
      out += _satisfies(catalog, items, t, v)
  return out
