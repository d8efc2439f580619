"""Reward-model inputs: per-session context arrays and relevance rows.

The reward model sees the generator's input space only (SPEC §4.2): the
behaviour uid (Mu-Seq SID_short ⊕ SID_long, or a hashed user bucket), the
query (its SID codes and hashed words), the short click sequence (item SID
codes) and the profile (gender, age bucket), plus the candidate item's SID
codes. Context arrays are indexed by the session row of an InteractionLog:

  uid        [S, 2C] int32   behaviour SID (0s where the user has none)
  uid_valid  [S] float32
  user_hash  [S] int32       hashed user id bucket in [0, user_buckets)
  seq        [S, W, C] int32 last W clicked items' codes (oldest first)
  seq_mask   [S, W] float32
  gender, age [S] int32
  query_codes [S, C] int32   query SID codes (0s if the SID table lacks it)
  query_valid [S] float32
  query_words [S, Lq] int32  hashed words (0 = pad), ids in [1, word_buckets)

plus (use_stats) `stats`, the train-split statistics of any (session, item)
pair (pars/rm_stats.py: item CTR / CVR / counts, user-category, -brand,
-style and price affinity, query-category and query-item click shares).
With release_stats, the ranking rows' statistics objects join them
(pars/release_stats.py: looked up as of the session's time).

Mu-Seq features come from data/museq.MuSeqIndex with train_only for train
sessions (a test session sees earlier interactions of both splits), so no
test-day click enters a training example.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from onesearch_jax.data import museq
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars import release_stats, rm_stats
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.world.reader import World


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """Sizes of the hashed inputs and windows."""

  seq_window: int = 5  # W (the paper's Seq_short window)
  query_words: int = 6  # Lq hashed words per query
  word_buckets: int = 4096  # hashed word vocabulary (0 = pad)
  user_buckets: int = 1024  # hashed user ids
  long_max: int = 200  # Mu-Seq long window for SID_long (the paper: ~1000)
  use_stats: bool = True  # train-split statistics features (pars/rm_stats.py)
  # The ranking rows' statistics objects, looked up as of the session's time
  # (pars/release_stats.py; the KuaiSearch release's *_statistical_features).
  release_stats: bool = False

  def __post_init__(self):
    if min(self.seq_window, self.query_words, self.word_buckets, self.user_buckets) < 1:
      raise ValueError(f"FeatureConfig sizes must be >= 1: {self}")


def _hash(text: str, buckets: int) -> int:
  digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "big") % buckets


def query_word_ids(query: str, cfg: FeatureConfig) -> np.ndarray:
  """[Lq] int32 hashed words of a query (whitespace split; a CJK run with no
  spaces is split into characters), ids in [1, word_buckets), 0 = pad."""
  words = query.split()
  if len(words) <= 1 and any(ord(ch) > 0x2E80 for ch in query):
    words = [ch for ch in query if not ch.isspace()]
  out = np.zeros(cfg.query_words, np.int32)
  for j, w in enumerate(words[: cfg.query_words]):
    out[j] = 1 + _hash(w, cfg.word_buckets - 1)
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class QueryFeatures:
  """Per distinct query (rows of InteractionLog.queries or relevance)."""

  codes: np.ndarray  # [Q, C] int32
  valid: np.ndarray  # [Q] float32
  words: np.ndarray  # [Q, Lq] int32


def query_features(queries, sid_table: SIDTable, cfg: FeatureConfig) -> QueryFeatures:
  codes = np.zeros((len(queries), sid_table.code_width), np.int32)
  valid = np.zeros(len(queries), np.float32)
  words = np.zeros((len(queries), cfg.query_words), np.int32)
  for i, q in enumerate(queries):
    row = sid_table.query_row.get(q)
    if row is not None:
      codes[i] = sid_table.query_codes[row]
      valid[i] = 1.0
    words[i] = query_word_ids(q, cfg)
  return QueryFeatures(codes, valid, words)


@dataclasses.dataclass(frozen=True, eq=False)
class RMContext:
  """Session context arrays (see the module docstring) + the item codes."""

  uid: np.ndarray
  uid_valid: np.ndarray
  user_hash: np.ndarray
  seq: np.ndarray
  seq_mask: np.ndarray
  gender: np.ndarray
  age: np.ndarray
  query_codes: np.ndarray
  query_valid: np.ndarray
  query_words: np.ndarray
  item_codes: np.ndarray  # [N, C] int32 (0s for items without a SID)
  n_genders: int
  n_ages: int
  code_ranges: tuple[int, ...]
  config: FeatureConfig
  missing_query_sid: int  # sessions whose query has no SID
  # Statistics features (use_stats and / or release_stats; None = neither).
  stats: rm_stats.StatsBlocks | None = None

  @property
  def n_stats(self) -> int:
    return 0 if self.stats is None else len(self.stats.names)

  def arrays(self) -> dict[str, np.ndarray]:
    """The per-session arrays (device inputs of the model)."""
    return {
      "uid": self.uid,
      "uid_valid": self.uid_valid,
      "user_hash": self.user_hash,
      "seq": self.seq,
      "seq_mask": self.seq_mask,
      "gender": self.gender,
      "age": self.age,
      "query_codes": self.query_codes,
      "query_valid": self.query_valid,
      "query_words": self.query_words,
    }


def build_context(
  world: World,
  interactions: InteractionLog,
  sid_table: SIDTable,
  cfg: FeatureConfig = FeatureConfig(),
) -> RMContext:
  """Mu-Seq + query + profile context of every session of `interactions`."""
  item_codes = {
    item: interactions.item_codes[i]
    for i, item in enumerate(interactions.item_ids)
    if interactions.has_sid[i]
  }
  mcfg = museq.MuSeqConfig(
    short_window=cfg.seq_window, long_max=cfg.long_max, query_window=1
  )
  index = museq.MuSeqIndex(
    world.users,
    world.items,
    interactions.recall_rows,
    item_codes,
    interactions.code_ranges,
    mcfg,
  )
  s, c, w = interactions.n_sessions, interactions.code_width, cfg.seq_window
  uid = np.zeros((s, 2 * c), np.int32)
  uid_valid = np.zeros(s, np.float32)
  seq = np.zeros((s, w, c), np.int32)
  seq_mask = np.zeros((s, w), np.float32)
  item_row = interactions.item_index()
  for k, r in enumerate(interactions.recall_rows):
    f = index.features(
      str(r["user_id"]),
      str(r["query"]),
      int(r["time_index"]),
      train_only=bool(interactions.session_train[k]),
    )
    if f.uid_codes is not None:
      uid[k] = f.uid_codes
      uid_valid[k] = 1.0
    for j, item in enumerate(f.seq_short[-w:]):
      seq[k, j] = interactions.item_codes[item_row[item]]
      seq_mask[k, j] = 1.0
  q = query_features(interactions.queries, sid_table, cfg)
  user_hash = np.asarray(
    [_hash(u, cfg.user_buckets) for u in interactions.user_ids], np.int32
  )[interactions.session_user]
  return RMContext(
    uid=uid,
    uid_valid=uid_valid,
    user_hash=user_hash,
    seq=seq,
    seq_mask=seq_mask,
    gender=interactions.user_gender[interactions.session_user],
    age=interactions.user_age[interactions.session_user],
    query_codes=q.codes[interactions.session_query],
    query_valid=q.valid[interactions.session_query],
    query_words=q.words[interactions.session_query],
    item_codes=np.maximum(interactions.item_codes, 0),
    n_genders=len(interactions.genders),
    n_ages=len(interactions.ages),
    code_ranges=interactions.code_ranges,
    config=cfg,
    missing_query_sid=int(s - q.valid[interactions.session_query].sum()),
    stats=_stats(world, interactions, cfg),
  )


def _stats(world: World, interactions: InteractionLog, cfg: FeatureConfig):
  blocks = []
  if cfg.use_stats:
    blocks.append(rm_stats.RMStats.build(world, interactions))
  if cfg.release_stats:
    blocks.append(release_stats.ReleaseStats.build(world, interactions))
  return rm_stats.StatsBlocks(blocks) if blocks else None


@dataclasses.dataclass(frozen=True, eq=False)
class RelevanceRows:
  """Labelled (query, item) pairs: features + grade; split into train/held."""

  query: QueryFeatures  # per row
  item: np.ndarray  # [R] int32 item rows
  grade: np.ndarray  # [R] int32 in 0..3
  held_out: np.ndarray  # [R] bool (hash-based 20 % hold-out)
  query_index: np.ndarray  # [R] int32 index into log.queries (-1 unknown)
  skipped: int  # rows without an item_id or with an unknown item


def relevance_rows(
  world: World, interactions: InteractionLog, sid_table: SIDTable, cfg: FeatureConfig
) -> RelevanceRows:
  """The relevance labels tied to an item: by their item_id (the simulator's
  extension field) or, for real KuaiSearch rows without one, by title
  (``World.relevance_match``, world/relevance_match.py).

  Rows tied to no item (``World.relevance_pairs``) or whose item has no SID
  are skipped and counted; the hold-out is the 20 % with hash(query|item) % 5
  == 0, stable under reordering.
  """
  item_row = interactions.item_index()
  qrow = {q: i for i, q in enumerate(interactions.queries)}
  queries, items, grades, held, qidx = [], [], [], [], []
  skipped = 0
  matched = world.matched_relevance().item_ids
  for r, item in zip(world.relevance, matched, strict=True):
    i = item_row.get(item) if item is not None else None
    if i is None or not interactions.has_sid[i]:
      skipped += 1
      continue
    q = str(r["query"])
    queries.append(q)
    items.append(i)
    grades.append(int(r["score"]))
    held.append(_hash(f"{q}|{item}", 5) == 0)
    qidx.append(qrow.get(q, -1))
  return RelevanceRows(
    query=query_features(queries, sid_table, cfg),
    item=np.asarray(items, np.int32),
    grade=np.asarray(grades, np.int32),
    held_out=np.asarray(held, bool),
    query_index=np.asarray(qidx, np.int32),
    skipped=skipped,
  )
