"""The item catalogue: category tree, brands, sellers, attributes, titles, latents.

Items live in numpy arrays (one entry per item), so a catalogue of a million
items costs a few tens of MB; titles and JSON rows are built on demand, chunk by
chunk, from those arrays (a pure function of them).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from onesearch_jax.world import lexicon
from onesearch_jax.world.config import WorldConfig

SECONDS_PER_DAY = 86_400

# Attribute types an item may carry besides entity and brand (always present),
# with the chance that an applicable one is written in the title.
ATTRIBUTE_PROBS: dict[str, float] = {
  "anchor": 0.05,
  "marketing": 0.5,
  "series": 0.25,
  "location": 0.3,
  "season": 0.35,
  "audience": 0.5,
  "style": 0.45,
  "color": 0.85,
  "material": 0.6,
  "pattern": 0.4,
  "modifier": 0.35,
  "model": 0.6,
  "function": 0.5,
  "specifications": 0.7,
  "scene": 0.25,
  "price": 0.15,
}
# Types every family may carry (the rest come from lexicon.ATTRIBUTES_BY_L1).
_UNIVERSAL = ("anchor", "marketing", "series", "price")


def attribute_values(attr: str, l1: str) -> tuple[str, ...]:
  """The vocabulary of one attribute type in one L1 ('' entries excluded)."""
  table = {
    "anchor": lexicon.ANCHORS,
    "marketing": lexicon.MARKETING,
    "series": lexicon.SERIES,
    "location": lexicon.LOCATIONS,
    "season": lexicon.SEASONS,
    "audience": lexicon.AUDIENCES,
    "style": lexicon.STYLES,
    "color": lexicon.COLORS,
    "pattern": lexicon.PATTERNS,
    "modifier": lexicon.MODIFIERS,
    "scene": lexicon.SCENES,
    "price": tuple(lexicon.PRICE_WORDS.values()),
    "model": (),  # model codes are generated per brand
  }
  if attr in table:
    return table[attr]
  family = {
    "material": lexicon.MATERIALS,
    "function": lexicon.FUNCTIONS,
    "specifications": lexicon.SPECIFICATIONS,
  }[attr]
  return family.get(l1, ())


def l1_attribute_values(attr: str, l1: str) -> tuple[str, ...]:
  """The values items of L1 ``l1`` may carry for ``attr`` (() when the type
  does not apply to the L1)."""
  if attr not in _UNIVERSAL and attr not in lexicon.ATTRIBUTES_BY_L1[l1]:
    return ()
  return attribute_values(attr, l1)


@dataclasses.dataclass(frozen=True)
class CategoryTree:
  """The 3-level tree flattened: names and parent indices per level."""

  l1_names: tuple[str, ...]
  l2_names: tuple[str, ...]
  l2_parent: np.ndarray  # [n_l2] int, L1 index
  l3_names: tuple[str, ...]
  l3_parent: np.ndarray  # [n_l3] int, L2 index

  @classmethod
  def from_lexicon(cls, n_l1: int = 0) -> CategoryTree:
    """The lexicon's tree, keeping its first n_l1 L1 categories (0 = all)."""
    l1, l2, l2p, l3, l3p = [], [], [], [], []
    names = list(lexicon.CATEGORY_TREE)
    for a in names[: n_l1 or len(names)]:
      subtree = lexicon.CATEGORY_TREE[a]
      l1.append(a)
      for b, leaves in subtree.items():
        l2p.append(len(l1) - 1)
        l2.append(b)
        for c in leaves:
          l3p.append(len(l2) - 1)
          l3.append(c)
    return cls(tuple(l1), tuple(l2), np.array(l2p), tuple(l3), np.array(l3p))

  @property
  def l3_l1(self) -> np.ndarray:
    """[n_l3] the L1 index of each L3."""
    return self.l2_parent[self.l3_parent]


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
  """n distinct pronounceable brand names."""
  syl = lexicon.BRAND_SYLLABLES
  names: list[str] = []
  seen: set[str] = set()
  while len(names) < n:
    k = 2 + int(rng.random() < 0.4)
    name = "".join(syl[j] for j in rng.integers(0, len(syl), k))
    if name not in seen and len(name) >= 4:
      seen.add(name)
      names.append(name)
  return names


@dataclasses.dataclass
class Catalog:
  """All items as parallel arrays plus the vocabularies they index into."""

  config: WorldConfig
  tree: CategoryTree
  brand_names: list[str]  # [n_brands]
  brand_l1: np.ndarray  # [n_brands] L1 index
  brand_tier: np.ndarray  # [n_brands] 0 low, 1 mid, 2 high price tier
  seller_names: list[str]  # [n_sellers]; seller b < n_brands is brand b's store
  l3: np.ndarray  # [N] L3 index
  brand: np.ndarray  # [N] brand index
  seller: np.ndarray  # [N] seller index
  price: np.ndarray  # [N] float64 list price (2 decimals)
  log_pop: np.ndarray  # [N] float64 log popularity weight (Zipf)
  publish_time: np.ndarray  # [N] int64 time_index of first appearance
  model_num: np.ndarray  # [N] int, the number in the model code
  attr_vocab: dict[str, list[str]]  # type -> global value list
  attrs: dict[str, np.ndarray]  # type -> [N] int value index, -1 = absent
  title_order: np.ndarray  # [N] int 0/1, two title layouts

  @property
  def n_items(self) -> int:
    return int(self.l3.shape[0])

  def item_id(self, i: int) -> str:
    return f"i{i}"

  def model_code(self, i: int) -> str:
    name = self.brand_names[self.brand[i]]
    return f"{name[:2]}{self.model_num[i]}"

  def attributes(self, i: int) -> dict[str, str]:
    """type -> value as written in the title (entity and brand included)."""
    out = {
      "entity": self.tree.l3_names[self.l3[i]],
      "brand": self.brand_names[self.brand[i]],
    }
    for t, arr in self.attrs.items():
      v = arr[i]
      if v >= 0:
        out[t] = self.model_code(i) if t == "model" else self.attr_vocab[t][v]
    return out

  def title(self, i: int, attributes: dict[str, str] | None = None) -> str:
    """The item title, a fixed layout of its attribute values."""
    a = attributes if attributes is not None else self.attributes(i)
    g = a.get
    head = [g("anchor"), g("marketing"), a["brand"], g("series")]
    desc = [
      g("location"),
      g("season"),
      g("style"),
      g("color"),
      g("material"),
      g("pattern"),
      g("modifier"),
    ]
    if self.title_order[i]:
      desc.reverse()
    tail = [a["entity"], g("model"), g("function"), g("specifications")]
    if "audience" in a:
      tail.append(f"for {a['audience']}")
    if "scene" in a:
      tail.append(f"{a['scene']} use")
    if "price" in a:
      tail.append(a["price"])
    return " ".join(w for w in head + desc + tail if w)

  def row(self, i: int) -> dict[str, Any]:
    """The items.jsonl row of item i."""
    tree = self.tree
    c3 = int(self.l3[i])
    c2 = int(tree.l3_parent[c3])
    c1 = int(tree.l2_parent[c2])
    a = self.attributes(i)
    b = int(self.brand[i])
    s = int(self.seller[i])
    return {
      "item_id": self.item_id(i),
      "item_title": self.title(i, a),
      "brand_id": f"b{b}",
      "brand_name": self.brand_names[b],
      "seller_id": f"s{s}",
      "seller_name": self.seller_names[s],
      "category_level1_id": f"c1_{c1}",
      "category_level1_name": tree.l1_names[c1],
      "category_level2_id": f"c2_{c2}",
      "category_level2_name": tree.l2_names[c2],
      "category_level3_id": f"c3_{c3}",
      "category_level3_name": tree.l3_names[c3],
      "item_price": float(self.price[i]),
      "attributes": a,
      "publish_time_index": int(self.publish_time[i]),
    }

  def rows(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
    for i in range(start, stop):
      yield self.row(i)


def build_catalog(config: WorldConfig, rng: np.random.Generator) -> Catalog:
  """Draws the whole catalogue (arrays only) from the config.

  Args:
    config: the world config.
    rng: the generator to draw from (consumed).

  Returns:
    The catalogue.
  """
  tree = CategoryTree.from_lexicon(config.n_l1)
  n = config.n_items
  n_l1, n_l3 = len(tree.l1_names), len(tree.l3_names)
  l3_l1 = tree.l3_l1

  # Brands: brands_per_l1 per L1, Zipf popularity within the L1, a price tier.
  bp = config.brands_per_l1
  brand_names = _brand_names(n_l1 * bp, rng)
  brand_l1 = np.repeat(np.arange(n_l1), bp)
  brand_tier = rng.choice(3, size=n_l1 * bp, p=[0.35, 0.45, 0.2])
  sellers = [f"{name} official store" for name in brand_names]
  words, suffixes = lexicon.SELLER_WORDS, lexicon.SELLER_SUFFIXES
  for k in range(n_l1 * config.sellers_per_l1):
    w1, w2 = words[k % len(words)], words[(k // len(words) + k) % len(words)]
    sellers.append(f"{w1} {w2} {suffixes[k % len(suffixes)]} {k}")

  # Categories: Zipf traffic over a random order of L3s.
  cat_rank = rng.permutation(n_l3) + 1
  cat_p = cat_rank.astype(np.float64) ** -config.category_zipf
  cat_p /= cat_p.sum()
  l3 = rng.choice(n_l3, size=n, p=cat_p)
  l1 = l3_l1[l3]

  # Brand within the item's L1: Zipf over brand rank.
  brand_rank_p = np.arange(1, bp + 1, dtype=np.float64) ** -1.0
  brand_rank_p /= brand_rank_p.sum()
  brand = l1 * bp + rng.choice(bp, size=n, p=brand_rank_p)
  official = rng.random(n) < 0.4
  third = (
    n_l1 * bp + l1 * config.sellers_per_l1 + rng.integers(0, config.sellers_per_l1, n)
  )
  seller = np.where(official, brand, third)

  # Price: L1 base x L3 factor x brand tier x noise.
  l3_factor = rng.lognormal(0.0, 0.5, n_l3)
  base = np.array([lexicon.BASE_PRICE[a] for a in tree.l1_names])
  tier_mult = np.array([0.55, 1.0, 2.0])[brand_tier[brand]]
  price = base[l1] * l3_factor[l3] * tier_mult * rng.lognormal(0.0, 0.3, n)
  price = np.round(np.maximum(price, 0.5), 2)

  # Popularity: Zipf over a random item order, nudged up for popular brands.
  pop_rank = rng.permutation(n) + 1
  log_pop = -config.popularity_zipf * np.log(pop_rank) - 0.3 * np.log1p(brand % bp)

  # Cold-start items appear on a later day (the test day included).
  publish_time = np.zeros(n, dtype=np.int64)
  new = rng.random(n) < config.new_item_fraction
  days = rng.integers(1, config.n_days, n)
  secs = rng.integers(0, SECONDS_PER_DAY, n)
  publish_time[new] = days[new] * SECONDS_PER_DAY + secs[new]

  # Attributes: applicable by L1, present with ATTRIBUTE_PROBS, value uniform
  # over the L1's vocabulary except style, which leans to a per-brand style.
  attr_vocab: dict[str, list[str]] = {}
  attrs: dict[str, np.ndarray] = {}
  brand_style = rng.integers(0, len(lexicon.STYLES), n_l1 * bp)
  for t, prob in ATTRIBUTE_PROBS.items():
    vocab: list[str] = []
    for a in tree.l1_names:
      for v in attribute_values(t, a):
        if v not in vocab:
          vocab.append(v)
    attr_vocab[t] = vocab if t != "model" else ["<model>"]
    arr = np.full(n, -1, dtype=np.int32)
    present = rng.random(n) < prob
    draws = rng.random(n)
    for k, a in enumerate(tree.l1_names):
      if t not in _UNIVERSAL and t not in lexicon.ATTRIBUTES_BY_L1[a]:
        continue
      idx = np.nonzero(present & (l1 == k))[0]
      if t == "model":
        arr[idx] = 0
        continue
      allowed = np.array([vocab.index(v) for v in attribute_values(t, a)])
      if allowed.size == 0:
        continue
      arr[idx] = allowed[(draws[idx] * allowed.size).astype(np.int64)]
    if t == "style":
      lean = (arr >= 0) & (rng.random(n) < 0.6)
      arr[lean] = brand_style[brand[lean]]
    if t == "price":
      tier = brand_tier[brand]
      arr = np.where(present & (tier == 0), 0, np.where(present & (tier == 2), 1, -1))
      arr = arr.astype(np.int32)
    attrs[t] = arr
  model_num = rng.integers(1, 100, n) * 10 + rng.integers(0, 10, n) * (
    rng.random(n) < 0.5
  )
  title_order = (rng.random(n) < 0.3).astype(np.int8)

  return Catalog(
    config=config,
    tree=tree,
    brand_names=brand_names,
    brand_l1=brand_l1,
    brand_tier=brand_tier,
    seller_names=sellers,
    l3=l3,
    brand=brand,
    seller=seller,
    price=price,
    log_pop=log_pop,
    publish_time=publish_time,
    model_num=model_num,
    attr_vocab=attr_vocab,
    attrs=attrs,
    title_order=title_order,
  )


def write_latents(
  catalog: Catalog, path: str | os.PathLike, rng: np.random.Generator
) -> None:
  """Writes item latents float32 [N, D] to an .npy file, chunk by chunk.

  The latent of an item is a sum of embeddings of what its text says (L1, L3,
  brand, attribute values) plus noise, L2-normalised, so that items with
  similar titles have similar latents (the collaborative signal KHQE aligns).

  Args:
    catalog: the catalogue.
    path: the .npy file to write.
    rng: the generator for the embedding tables and noise.
  """
  cfg = catalog.config
  d = cfg.latent_dim
  tree = catalog.tree
  e_l1 = rng.normal(size=(len(tree.l1_names), d))
  e_l3 = rng.normal(size=(len(tree.l3_names), d))
  e_brand = rng.normal(size=(len(catalog.brand_names), d))
  e_attr = {t: rng.normal(size=(len(v), d)) for t, v in catalog.attr_vocab.items()}
  out = np.lib.format.open_memmap(
    path, mode="w+", dtype=np.float32, shape=(catalog.n_items, d)
  )
  l3_l1 = tree.l3_l1
  for start in range(0, catalog.n_items, cfg.chunk_items):
    sl = slice(start, min(start + cfg.chunk_items, catalog.n_items))
    l3 = catalog.l3[sl]
    z = e_l1[l3_l1[l3]] + e_l3[l3] + 0.7 * e_brand[catalog.brand[sl]]
    for t, arr in catalog.attrs.items():
      a = arr[sl]
      z += 0.3 * np.where((a >= 0)[:, None], e_attr[t][np.maximum(a, 0)], 0.0)
    z += 0.3 * rng.normal(size=z.shape)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    out[sl] = z.astype(np.float32)
  out.flush()
  del out


class CategoryIndex:
  """Item indices grouped by L3, L2 and L1 (for retrieval pools)."""

  def __init__(self, catalog: Catalog):
    tree = catalog.tree
    self._groups = {}
    for level, keys in (
      ("l3", catalog.l3),
      ("l2", tree.l3_parent[catalog.l3]),
      ("l1", tree.l3_l1[catalog.l3]),
    ):
      # Within a group, items are sorted by popularity (most popular first).
      order = np.lexsort((-catalog.log_pop, keys))
      n_groups = {
        "l3": len(tree.l3_names),
        "l2": len(tree.l2_names),
        "l1": len(tree.l1_names),
      }[level]
      bounds = np.searchsorted(keys[order], np.arange(n_groups + 1))
      self._groups[level] = (order, bounds)

  def members(self, level: str, k: int) -> np.ndarray:
    """Item indices of group k at level 'l1' | 'l2' | 'l3', most popular first."""
    order, bounds = self._groups[level]
    return order[bounds[k] : bounds[k + 1]]
