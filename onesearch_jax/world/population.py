"""Users: profiles, preferences (category, brand, price, style) and their drift."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from onesearch_jax.world import lexicon
from onesearch_jax.world.catalog import Catalog
from onesearch_jax.world.config import WorldConfig

# L1 categories a gender leans to (added to the Dirichlet draw of affinities).
_GENDER_LEAN = {
  "female": ("clothing", "beauty", "bags", "baby", "home"),
  "male": ("electronics", "sports", "shoes", "food"),
}


@dataclasses.dataclass
class Population:
  """All users as parallel arrays; preferences are mutable (they drift)."""

  gender: np.ndarray  # [U] index into lexicon.GENDER_PROBS keys
  age: np.ndarray  # [U] index into lexicon.AGE_BUCKETS
  geo: np.ndarray  # [U] index into lexicon.LOCATIONS_GEO
  fans: np.ndarray  # [U] user_fan_number
  follows: np.ndarray  # [U] user_follow_number
  l1_affinity: np.ndarray  # [U, n_l1] probabilities of searching each L1
  fav_brands: np.ndarray  # [U, n_l1, F] favourite brand indices per L1
  price_pref: np.ndarray  # [U] preferred log-price offset vs the L3 median
  style_pref: np.ndarray  # [U] favourite style index (lexicon.STYLES)
  activity: np.ndarray  # [U] sessions-per-day multiplier
  start_day: np.ndarray  # [U] first day the user searches (cold users: late)

  @property
  def n_users(self) -> int:
    return int(self.gender.shape[0])

  def user_id(self, u: int) -> str:
    return f"u{u}"

  def row(self, u: int) -> dict[str, Any]:
    """The users.jsonl row of user u."""
    country, province, city = lexicon.LOCATIONS_GEO[self.geo[u]]
    return {
      "user_id": self.user_id(u),
      "gender": tuple(lexicon.GENDER_PROBS)[self.gender[u]],
      "age_bucket": lexicon.AGE_BUCKETS[self.age[u]],
      "fre_country": country,
      "fre_province": province,
      "fre_city": city,
    }

  def is_fav(self, u: int, brands: np.ndarray, l1: np.ndarray) -> np.ndarray:
    """[n] bool: brands[k] is a favourite of user u in L1 l1[k]."""
    return (self.fav_brands[u, l1] == brands[:, None]).any(axis=1)


def build_population(
  config: WorldConfig, catalog: Catalog, rng: np.random.Generator
) -> Population:
  """Draws users and their preferences.

  Args:
    config: the world config.
    catalog: the catalogue (brands per L1, category names).
    rng: the generator to draw from (consumed).

  Returns:
    The population.
  """
  u = config.n_users
  l1_names = catalog.tree.l1_names
  n_l1 = len(l1_names)
  genders = tuple(lexicon.GENDER_PROBS)
  gender = rng.choice(len(genders), size=u, p=list(lexicon.GENDER_PROBS.values()))
  age = rng.choice(len(lexicon.AGE_BUCKETS), size=u, p=lexicon.AGE_PROBS)
  geo = rng.integers(0, len(lexicon.LOCATIONS_GEO), u)
  fans = np.floor(rng.lognormal(2.0, 1.5, u)).astype(np.int64)
  follows = np.floor(rng.lognormal(3.0, 1.0, u)).astype(np.int64)

  aff = rng.dirichlet(np.full(n_l1, 0.25), size=u)
  for g, lean in _GENDER_LEAN.items():
    cols = [l1_names.index(a) for a in lean if a in l1_names]
    rows = gender == genders.index(g)
    aff[np.ix_(rows, cols)] += 0.15
  aff /= aff.sum(axis=1, keepdims=True)

  # Favourite brands lean to popular ones (Zipf) but every brand has fans.
  bp = config.brands_per_l1
  p = np.arange(1, bp + 1, dtype=np.float64) ** -0.7
  p /= p.sum()
  f = min(config.favourite_brands, bp)
  local = np.stack([rng.choice(bp, size=(u, f), p=p) for _ in range(n_l1)], axis=1)
  fav = local + (np.arange(n_l1) * bp)[None, :, None]

  price_pref = rng.normal(0.0, 0.45, u)
  style_pref = rng.integers(0, len(lexicon.STYLES), u)
  activity = rng.lognormal(-0.2, 0.6, u)

  start_day = np.zeros(u, dtype=np.int64)
  late = rng.random(u) < 0.15  # joined during the log: short histories
  start_day[late] = (
    rng.integers(1, config.n_days - 1, u)[late] if config.n_days > 2 else 0
  )
  cold = rng.random(u) < config.cold_user_fraction  # only on the test day
  start_day[cold] = config.n_days - 1
  return Population(
    gender,
    age,
    geo,
    fans,
    follows,
    aff,
    fav,
    price_pref,
    style_pref,
    activity,
    start_day,
  )


def drift(pop: Population, config: WorldConfig, rng: np.random.Generator) -> None:
  """One day of slow preference drift, in place: a few favourites change."""
  u = pop.n_users
  n_l1, f = pop.fav_brands.shape[1], pop.fav_brands.shape[2]
  bp = config.brands_per_l1
  who = np.nonzero(rng.random(u) < config.drift_prob)[0]
  l1 = rng.integers(0, n_l1, who.size)
  slot = rng.integers(0, f, who.size)
  pop.fav_brands[who, l1, slot] = l1 * bp + rng.integers(0, bp, who.size)
  pop.price_pref += rng.normal(0.0, 0.02, u)
  mix = rng.dirichlet(np.full(n_l1, 0.4), size=u)
  pop.l1_affinity = 0.98 * pop.l1_affinity + 0.02 * mix
