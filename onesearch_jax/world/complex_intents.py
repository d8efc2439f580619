"""Complex search intents (OneSearch-V2's "complex queries"): negation, use
case (one hidden hop) and alternative (substitution).

Drawn instead of a simple intent for ``WorldConfig.complex_query_share`` of
the fresh searches (queries.QueryMaker; off by default):

* ``negation``: a category (+ one attribute of a popular item, 35%) that
  excludes a brand (50%) or an attribute value (colour, material, pattern,
  style, origin) that the anchor item does not have. The excluded value is
  another popular item's of the same category, so users exclude what they
  see: "running shoes not tordo", "sofa without velvet". Items satisfy the
  exclusion when their value differs, an item without a value included.
* ``use_case``: the query names a use (``lexicon.USE_CASES``) and the intent
  wants the attribute values that use implies, which the query never names:
  "jacket for hiking in the rain" -> function waterproof + scene outdoor.
  Resolving the use to those values is the hop a model must make. The use is
  one whose values a popular item of the category has (4 tries), else any use
  of the L1.
* ``alternative``: "alternative to tordo to831" / "like to831 but cheaper":
  the named item's L3, another brand, a price not above the named item's.
  Only L1s with model codes (shoes, kitchen, electronics) have them; elsewhere
  the search becomes a negation.

A kind that cannot be drawn (no use case for the L1, no model codes) falls
back to negation, and a negation without a second brand in the L1 to a plain
category intent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onesearch_jax.world import lexicon
from onesearch_jax.world.catalog import Catalog, CategoryIndex, l1_attribute_values
from onesearch_jax.world.intent import MAX_PRICE, NOT, QUERY_ATTRS, Intent

# Kinds of complex queries and their shares among complex searches.
COMPLEX_TYPE_PROBS: dict[str, float] = {
  "negation": 0.4,
  "use_case": 0.35,
  "alternative": 0.25,
}
COMPLEX_TYPES = tuple(COMPLEX_TYPE_PROBS)

# Attribute types a negation may exclude, and its wordings.
NEGATABLE = ("color", "material", "pattern", "style", "location")
BRAND_NEGATIONS = ("{q} not {x}", "{q} except {x}", "{q} but not {x}")
ATTR_NEGATIONS = ("{q} not {x}", "{q} without {x}", "{q} no {x}")
USE_CASE_WORDINGS = ("{e} for {c}", "{e} good for {c}", "best {e} for {c}")
ALTERNATIVE_WORDINGS = (
  "alternative to {b} {m}",
  "like {m} but cheaper",
  "cheaper {e} than {b} {m}",
)

Anchor = Callable[[np.ndarray, np.random.Generator], int]


def use_case_constraints(
  catalog: Catalog,
) -> list[list[tuple[str, tuple[tuple[str, int], ...]]]]:
  """Per L1 of the catalogue, its use cases as (phrase, constraints).

  Raises:
    ValueError: a lexicon.USE_CASES pair names a value its L1's items cannot
      carry (the table is wrong).
  """
  tree = catalog.tree
  out: list[list[tuple[str, tuple[tuple[str, int], ...]]]] = [[] for _ in tree.l1_names]
  for phrase, (l1s, pairs) in lexicon.USE_CASES.items():
    for a in l1s:
      for t, v in pairs:
        if v not in l1_attribute_values(t, a):
          raise ValueError(
            f"lexicon.USE_CASES[{phrase!r}]: {t}={v!r} is not a value of L1 {a!r}"
          )
      if a in tree.l1_names:
        cons = tuple((t, catalog.attr_vocab[t].index(v)) for t, v in pairs)
        out[tree.l1_names.index(a)].append((phrase, cons))
  return out


class ComplexIntents:
  """Draws and renders the complex kinds (see the module docstring)."""

  def __init__(self, catalog: Catalog, index: CategoryIndex, anchor: Anchor):
    self.catalog = catalog
    self.index = index
    self.anchor = anchor
    self._p = np.array(list(COMPLEX_TYPE_PROBS.values()))
    self._uses = use_case_constraints(catalog)

  def kind(self, rng: np.random.Generator) -> str:
    """A complex kind drawn from COMPLEX_TYPE_PROBS."""
    return COMPLEX_TYPES[int(np.searchsorted(np.cumsum(self._p), rng.random()))]

  def draw(
    self, kind: str, l1: int, l2: int, l3: int, rng: np.random.Generator
  ) -> Intent | None:
    """An intent of ``kind`` in L3 l3, or None (an empty category, or a
    negation without a second brand in the L1)."""
    pool = self.index.members("l3", l3)
    if pool.size == 0:
      return None
    intent = None
    if kind == "use_case":
      intent = self._use_case(l1, l2, l3, pool, rng)
    elif kind == "alternative":
      intent = self._alternative(l1, l2, l3, pool, rng)
    return intent or self._negation(l1, l2, l3, pool, rng)

  def _negation(
    self, l1: int, l2: int, l3: int, pool: np.ndarray, rng: np.random.Generator
  ) -> Intent | None:
    cat = self.catalog
    item = self.anchor(pool, rng)
    positive: tuple[tuple[str, int], ...] = ()
    present = [t for t in QUERY_ATTRS if cat.attrs[t][item] >= 0]
    if present and rng.random() < 0.35:
      t = present[int(rng.integers(0, len(present)))]
      positive = ((t, int(cat.attrs[t][item])),)
    by_brand = rng.random() < 0.5
    for _try in range(4):
      other = self.anchor(pool, rng)
      if by_brand and cat.brand[other] != cat.brand[item]:
        neg = (NOT + "brand", int(cat.brand[other]))
        return Intent("negation", l1, l2, l3, (*positive, neg))
      if not by_brand:
        types = [
          t
          for t in NEGATABLE
          if t not in dict(positive)
          and cat.attrs[t][other] >= 0
          and cat.attrs[t][other] != cat.attrs[t][item]
        ]
        if types:
          t = types[int(rng.integers(0, len(types)))]
          neg = (NOT + t, int(cat.attrs[t][other]))
          return Intent("negation", l1, l2, l3, (*positive, neg))
    brands = np.nonzero(cat.brand_l1 == l1)[0]
    brands = brands[brands != cat.brand[item]]
    if brands.size == 0:
      return None
    neg = (NOT + "brand", int(brands[int(rng.integers(0, brands.size))]))
    return Intent("negation", l1, l2, l3, (*positive, neg))

  def _use_case(
    self, l1: int, l2: int, l3: int, pool: np.ndarray, rng: np.random.Generator
  ) -> Intent | None:
    cat = self.catalog
    uses = self._uses[l1]
    if not uses:
      return None
    fits: list[int] = []
    for _try in range(4):
      item = self.anchor(pool, rng)
      fits = [
        k
        for k, (_, cons) in enumerate(uses)
        if all(cat.attrs[t][item] == v for t, v in cons)
      ]
      if fits:
        break
    if not fits:
      fits = list(range(len(uses)))
    phrase, cons = uses[fits[int(rng.integers(0, len(fits)))]]
    return Intent("use_case", l1, l2, l3, cons, cue=phrase)

  def _alternative(
    self, l1: int, l2: int, l3: int, pool: np.ndarray, rng: np.random.Generator
  ) -> Intent | None:
    cat = self.catalog
    if "model" not in lexicon.ATTRIBUTES_BY_L1[cat.tree.l1_names[l1]]:
      return None
    coded = pool[cat.attrs["model"][pool] >= 0]
    if coded.size == 0:
      return None
    item = self.anchor(coded, rng)
    cons = ((NOT + "brand", int(cat.brand[item])), (MAX_PRICE, item))
    return Intent("alternative", l1, l2, l3, cons)

  def render(
    self,
    intent: Intent,
    entity: str,
    positive_words: Callable[[tuple[tuple[str, int], ...]], tuple[list, list]],
    rng: np.random.Generator,
  ) -> str:
    """The query text of a complex intent (before typos).

    Args:
      intent: a complex intent.
      entity: the L3 word as typed (maybe a synonym).
      positive_words: (words before, words after) the entity for positive
        attribute constraints (queries.QueryMaker's category_attribute form).
      rng: the generator.
    """
    cat = self.catalog
    if intent.qtype == "use_case":
      form = USE_CASE_WORDINGS[_pick(len(USE_CASE_WORDINGS), rng)]
      return form.format(e=entity, c=intent.cue)
    if intent.qtype == "alternative":
      item = dict(intent.constraints)[MAX_PRICE]
      form = ALTERNATIVE_WORDINGS[_pick(len(ALTERNATIVE_WORDINGS), rng)]
      brand = cat.brand_names[cat.brand[item]]
      return form.format(b=brand, m=cat.model_code(item), e=entity)
    positive = tuple(c for c in intent.constraints if not c[0].startswith(NOT))
    ((kind, v),) = [c for c in intent.constraints if c[0].startswith(NOT)]
    pre, post = positive_words(positive)
    q = " ".join([*pre, entity, *post])
    kind = kind[len(NOT) :]
    if kind == "brand":
      form = BRAND_NEGATIONS[_pick(len(BRAND_NEGATIONS), rng)]
      return form.format(q=q, x=cat.brand_names[v])
    form = ATTR_NEGATIONS[_pick(len(ATTR_NEGATIONS), rng)]
    return form.format(q=q, x=cat.attr_vocab[kind][v])


def _pick(n: int, rng: np.random.Generator) -> int:
  return int(rng.integers(0, n))
