"""Knobs of the simulated e-commerce world (sizes, behaviour, calibration)."""

from __future__ import annotations

import dataclasses

EVAL_DAYS = ("test", "validation")

# Fields left out of config_dict() while they hold these (off) values, so the
# manifest and the world stage's inputs hash of a world without them keep the
# bytes they had before the fields existed.
OFF_SWITCHES = {"complex_query_share": 0.0}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Every knob of the simulator; the same config writes byte-identical files."""

  seed: int = 0  # root of every random draw
  # Sizes.
  n_items: int = 10_000  # items in the catalogue (incl. cold-start items)
  n_users: int = 2_000  # users (incl. cold-start users)
  n_days: int = 14  # days of log; the last day is the test split
  # "test": the last day is the test split (the main job). "validation": the
  # last day's sessions are dropped and the day before it becomes the
  # "test" split, so recipes are chosen on a day carved from the training
  # days and the real test day is never looked at (days before are identical).
  eval_day: str = "test"
  sessions_per_user_day: float = 1.5  # mean search sessions per active user-day
  n_l1: int = 0  # level-1 categories used: the first n of the lexicon (0 = all 12)
  brands_per_l1: int = 20  # brands in each level-1 category
  sellers_per_l1: int = 30  # third-party sellers in each level-1 category
  latent_dim: int = 32  # width of extras/item_latent.npy
  impressions_per_session: int = 10  # items shown per search (display order)
  # Catalogue and popularity.
  popularity_zipf: float = 1.3  # exponent of the item popularity Zipf law
  category_zipf: float = 0.8  # exponent of the L3 category size/traffic Zipf law
  new_item_fraction: float = 0.1  # items published after day 0 (cold-start items)
  # Users.
  cold_user_fraction: float = 0.08  # users whose first day is the test day
  favourite_brands: int = 1  # favourite brands per user per L1
  drift_prob: float = 0.03  # per user-day chance that one favourite brand changes
  # Queries.
  typo_rate: float = 0.04  # share of queries with one character typo
  synonym_rate: float = 0.25  # share of category words replaced by a synonym
  repeat_purchase_prob: float = 0.25  # chance a session re-buys a consumable
  # Share of fresh (non-repeat) searches that draw a complex intent (negation,
  # use case, alternative: world/complex_intents.py) instead of a simple one;
  # in [0, 1). 0 (off): the generator is consumed as before the field existed.
  complex_query_share: float = 0.0
  # Search engine (the logging policy) and user behaviour.
  retrieval_pool: int = (
    2_000  # max popular candidates scored per session (+ tail sample)
  )
  engine_personalisation: float = 1.0  # weight of user affinity in display order
  engine_popularity: float = 1.0  # weight of log-popularity in display order
  position_decay: float = 0.6  # examination prob = position ** -decay
  click_bias: float = -3.6  # click logit intercept (sets CTR)
  click_brand_weight: float = 3.0  # click logit bonus for a favourite brand
  click_match_weight: float = 0.9  # click logit bonus per matched query attribute
  click_popularity_weight: float = 1.0  # click logit bonus for item quality in [0, 1]
  click_price_weight: float = 0.8  # click logit penalty per unit log-price misfit
  order_bias: float = -2.9  # order logit intercept given a click (sets CVR)
  # Outputs.
  ranking_negative_rate: float = 1.0  # kept share of non-clicked ranking rows
  relevance_pairs: int = 2_000  # rows in relevance.jsonl
  chunk_items: int = 50_000  # items generated/written per chunk (memory bound)

  def __post_init__(self):
    if self.n_days < 2:
      raise ValueError(f"n_days must be >= 2 (train + test day), got {self.n_days}")
    if self.eval_day not in EVAL_DAYS:
      raise ValueError(f"eval_day must be one of {EVAL_DAYS}, got {self.eval_day!r}")
    if self.eval_day == "validation" and self.n_days < 3:
      raise ValueError("eval_day='validation' needs n_days >= 3")
    if self.n_items < 50 or self.n_users < 10:
      raise ValueError("n_items must be >= 50 and n_users >= 10")
    if not 0 <= self.n_l1 <= 12:
      raise ValueError(f"n_l1 must be in 0..12, got {self.n_l1}")
    if not 0.0 < self.ranking_negative_rate <= 1.0:
      raise ValueError("ranking_negative_rate must be in (0, 1]")
    share = self.complex_query_share
    if (
      isinstance(share, bool)
      or not isinstance(share, int | float)
      or not 0.0 <= share < 1.0
    ):
      raise ValueError(
        f"WorldConfig.complex_query_share must be a number in [0, 1), got {share!r}"
      )

  @classmethod
  def tiny(cls, seed: int = 0) -> WorldConfig:
    """CI size: ~1k items, 300 users; writes in a few seconds."""
    return cls(
      seed=seed,
      n_items=1_000,
      n_users=300,
      n_days=10,
      sessions_per_user_day=3.0,
      n_l1=6,
      brands_per_l1=8,
      sellers_per_l1=6,
      relevance_pairs=600,
    )

  @classmethod
  def default(cls, seed: int = 0) -> WorldConfig:
    """The main job's world: 10k items, 2k users, 14 days (<~60 s on 2 cores)."""
    return cls(seed=seed, ranking_negative_rate=0.2)

  @classmethod
  def large(cls, seed: int = 0) -> WorldConfig:
    """Scale test: 1M items streamed in chunks; few users and days."""
    return cls(
      seed=seed,
      n_items=1_000_000,
      n_users=20_000,
      n_days=3,
      sessions_per_user_day=1.0,
      brands_per_l1=400,
      sellers_per_l1=300,
      ranking_negative_rate=0.2,
      relevance_pairs=5_000,
    )


def config_dict(config: WorldConfig) -> dict:
  """The config as written in manifest.json and hashed into the world stage's
  marker: ``dataclasses.asdict`` without the OFF_SWITCHES that are off."""
  return {
    k: v
    for k, v in dataclasses.asdict(config).items()
    if k not in OFF_SWITCHES or v != OFF_SWITCHES[k]
  }
