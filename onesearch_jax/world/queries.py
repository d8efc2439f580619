"""Search intents and the short queries users type for them (typos, synonyms).

The Intent and which items satisfy it live in intent.py, the complex kinds
(negation, use case, alternative) in complex_intents.py.
"""

from __future__ import annotations

import numpy as np

from onesearch_jax.world import lexicon
from onesearch_jax.world.catalog import Catalog, CategoryIndex
from onesearch_jax.world.complex_intents import COMPLEX_TYPES, ComplexIntents
from onesearch_jax.world.intent import QUERY_ATTRS, Intent, match_counts

__all__ = ["QUERY_TYPES", "Intent", "QueryMaker", "match_counts"]

# Query types and their shares among fresh (non-repeat) searches.
QUERY_TYPE_PROBS: dict[str, float] = {
  "category": 0.25,
  "category_attribute": 0.37,
  "brand_type": 0.15,
  "model": 0.08,
  "vague": 0.15,
}
# Complex kinds (complex_intents.py) follow; drawn only when
# WorldConfig.complex_query_share > 0.
QUERY_TYPES = (*QUERY_TYPE_PROBS, "repeat", *COMPLEX_TYPES)

_VAGUE_SLOTS = ("style", "season", "audience", "scene")


def _typo(word: str, rng: np.random.Generator) -> str:
  """One keyboard slip: drop, swap or double a character."""
  k = int(rng.integers(1, len(word) - 1))
  kind = int(rng.integers(0, 3))
  if kind == 0:
    return word[:k] + word[k + 1 :]
  if kind == 1:
    return word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :]
  return word[:k] + word[k] + word[k:]


class QueryMaker:
  """Draws intents for a user and renders them as query strings."""

  def __init__(
    self,
    catalog: Catalog,
    index: CategoryIndex,
    typo_rate: float,
    synonym_rate: float,
    complex_query_share: float = 0.0,
  ):
    """Args: the catalogue and its index; WorldConfig's typo_rate,
    synonym_rate and complex_query_share (share of fresh searches drawn as a
    complex kind; at 0 the generator is consumed exactly as without it)."""
    self.catalog = catalog
    self.index = index
    self.typo_rate = typo_rate
    self.synonym_rate = synonym_rate
    self.complex_query_share = complex_query_share
    self.complex = ComplexIntents(catalog, index, self._anchor_item)
    self._type_names = tuple(QUERY_TYPE_PROBS)
    self._type_p = np.array(list(QUERY_TYPE_PROBS.values()))
    tree = catalog.tree
    # Within an L1, an L3 is searched in proportion to its item count.
    self._l3_of_l1 = [np.nonzero(tree.l3_l1 == k)[0] for k in range(len(tree.l1_names))]
    counts = np.bincount(catalog.l3, minlength=len(tree.l3_names)).astype(np.float64)
    self._l3_p = [(counts[c] + 0.5) / (counts[c] + 0.5).sum() for c in self._l3_of_l1]
    self._vocab_index = {
      t: {v: k for k, v in enumerate(vs)} for t, vs in catalog.attr_vocab.items()
    }

  def _anchor_item(self, pool: np.ndarray, rng: np.random.Generator) -> int:
    """A popularity-weighted item of a pool (what users have seen and want)."""
    pool = pool[:4096]  # pools are most-popular first; the rest weighs ~nothing
    w = np.exp(self.catalog.log_pop[pool] - self.catalog.log_pop[pool].max())
    return int(pool[np.searchsorted(np.cumsum(w), rng.random() * w.sum())])

  def draw(self, l1: int, fav_brands: np.ndarray, rng: np.random.Generator) -> Intent:
    """A fresh intent in L1 l1 for a user with these favourite brands there."""
    cat = self.catalog
    tree = cat.tree
    c3s = self._l3_of_l1[l1]
    l3 = int(c3s[np.searchsorted(np.cumsum(self._l3_p[l1]), rng.random())])
    l2 = int(tree.l3_parent[l3])
    # The complex/simple choice is drawn only when the switch is on, so a
    # world without it consumes the same random numbers as before it existed.
    if self.complex_query_share > 0 and rng.random() < self.complex_query_share:
      kind = self.complex.kind(rng)
      intent = self.complex.draw(kind, l1, l2, l3, rng)
      return intent or Intent("category", l1, l2, l3, ())
    qtype = self._type_names[
      int(np.searchsorted(np.cumsum(self._type_p), rng.random() * self._type_p.sum()))
    ]
    pool = self.index.members("l3", l3)
    if pool.size == 0:
      qtype = "category"
    if qtype == "category":
      return Intent("category", l1, l2, l3, ())
    if qtype == "model" and "model" not in lexicon.ATTRIBUTES_BY_L1[tree.l1_names[l1]]:
      qtype = "category_attribute"  # no model codes in this family
    if qtype == "vague":
      pool = self.index.members("l2", l2)
      slots = []
      for _try in range(3):
        item = self._anchor_item(pool, rng)
        slots = [
          (t, int(cat.attrs[t][item])) for t in _VAGUE_SLOTS if cat.attrs[t][item] >= 0
        ]
        if slots:
          break
      if not slots:
        return Intent("category", l1, l2, l3, ())
      t, v = slots[int(rng.integers(0, len(slots)))]
      return Intent("vague", l1, l2, -1, ((t, v),))
    item = self._anchor_item(pool, rng)
    if qtype == "category_attribute":
      present = [t for t in QUERY_ATTRS if cat.attrs[t][item] >= 0]
      if not present:
        return Intent("category", l1, l2, l3, ())
      k = 1 + int(rng.random() < 0.35 and len(present) > 1)
      chosen = sorted(rng.choice(len(present), size=k, replace=False))
      return Intent(
        "category_attribute",
        l1,
        l2,
        l3,
        tuple((present[j], int(cat.attrs[present[j]][item])) for j in chosen),
      )
    if qtype == "brand_type":
      b = (
        int(fav_brands[int(rng.integers(0, fav_brands.size))])
        if rng.random() < 0.5
        else int(cat.brand[item])
      )
      extra = [t for t in QUERY_ATTRS if cat.attrs[t][item] >= 0]
      if extra and rng.random() < 0.25:
        t = extra[int(rng.integers(0, len(extra)))]
        return Intent(
          "brand_type", l1, l2, l3, (("brand", b), (t, int(cat.attrs[t][item])))
        )
      return Intent("brand_type", l1, l2, l3, (("brand", b),))
    # model: a specific product the user has in mind.
    if cat.attrs["model"][item] < 0:
      return Intent("brand_type", l1, l2, l3, (("brand", int(cat.brand[item])),))
    return Intent(
      "model", l1, l2, l3, (("brand", int(cat.brand[item])), ("model", item))
    )

  def repeat(self, item: int) -> Intent:
    """Buying a consumable again: brand + type of the item bought before."""
    cat = self.catalog
    l3 = int(cat.l3[item])
    l2 = int(cat.tree.l3_parent[l3])
    l1 = int(cat.tree.l2_parent[l2])
    return Intent(
      "repeat", l1, l2, l3, (("brand", int(cat.brand[item])),), target_item=item
    )

  def _entity(self, l3: int, rng: np.random.Generator) -> str:
    word = self.catalog.tree.l3_names[l3]
    syn = lexicon.SYNONYMS.get(word)
    if syn and rng.random() < self.synonym_rate:
      return syn[int(rng.integers(0, len(syn)))]
    return word

  def _attribute_words(
    self, constraints: tuple[tuple[str, int], ...], rng: np.random.Generator
  ) -> tuple[list[str], list[str]]:
    """(words before, words after) the entity for attribute constraints."""
    pre, post = [], []
    for t, v in constraints:
      value = self.catalog.attr_vocab[t][v]
      if t == "audience":
        (post.append(f"for {value}") if rng.random() < 0.5 else pre.append(value))
      elif t == "specifications":
        post.append(value)
      else:
        pre.append(value)
    return pre, post

  def render(self, intent: Intent, rng: np.random.Generator) -> str:
    """The query string a user types for an intent (lowercase, short)."""
    cat = self.catalog
    c = dict(intent.constraints)
    if intent.qtype == "category":
      words = [self._entity(intent.l3, rng)]
    elif intent.qtype == "vague":
      ((t, v),) = intent.constraints
      value = cat.attr_vocab[t][v]
      l2 = cat.tree.l2_names[intent.l2]
      if t == "audience":
        text = f"{l2} for {value}" if rng.random() < 0.6 else f"gift for {value}"
      else:
        text = f"{value} {l2}"
      words = [text]
    elif intent.qtype == "category_attribute":
      pre, post = self._attribute_words(intent.constraints, rng)
      words = [*pre, self._entity(intent.l3, rng), *post]
    elif intent.qtype in COMPLEX_TYPES:
      entity = self._entity(intent.l3, rng)
      words = [
        self.complex.render(
          intent, entity, lambda cons: self._attribute_words(cons, rng), rng
        )
      ]
    elif intent.qtype in ("brand_type", "repeat"):
      words = [cat.brand_names[c["brand"]], self._entity(intent.l3, rng)]
      for t, v in intent.constraints:
        if t != "brand":
          words.insert(1, cat.attr_vocab[t][v])
      if intent.qtype == "repeat" and rng.random() < 0.3:
        spec = cat.attrs["specifications"][intent.target_item]
        if spec >= 0:
          words.append(cat.attr_vocab["specifications"][spec])
    else:  # model
      item = c["model"]
      code = cat.model_code(item)
      r = rng.random()
      if r < 0.5:
        words = [cat.brand_names[c["brand"]], code]
      elif r < 0.8:
        words = [code, self._entity(intent.l3, rng)]
      else:
        words = [cat.brand_names[c["brand"]], code, self._entity(intent.l3, rng)]
    query = " ".join(words)
    if rng.random() < self.typo_rate:
      tokens = query.split(" ")
      long = [k for k, w in enumerate(tokens) if len(w) >= 4]
      if long:
        k = long[int(rng.integers(0, len(long)))]
        tokens[k] = _typo(tokens[k], rng)
        query = " ".join(tokens)
    return query
