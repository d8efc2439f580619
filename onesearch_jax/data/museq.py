"""Mu-Seq: multi-view user behaviour features (SPEC §3), pure numpy.

For one search session (user u, query q, time t) the features are:

* ``uid`` = ``SID_short ⊕ SID_long`` (10 codes): ``behaviour_sid`` of the
  short window (the last <= 5 clicked items) and of the long history (the last
  <= 1000 clicked items). ORDERING CHOICE: sequences are oldest first, so the
  index i = 1..m of ``λ_i = exp(√i) / Σ_t exp(√t)`` grows toward the most
  recent item, which therefore gets the largest weight (the softmax over √i is
  increasing in i; SPEC open question 4). The weighted sum runs position-wise
  over the integer local codes, then ``ceil`` (with a 1e-6 tolerance so that
  an exact integer such as 3.0000000001 stays 3), then a clamp to each
  position's range [0, k_l) (OPQ positions: [0, opq_codes); the token string
  adds the +256 offset afterwards).
* ``Seq_q``: the user's last <= 5 search queries (oldest first, one per
  session, repeats kept).
* ``Seq_short``: the last <= 5 clicked items (oldest first).
* long-term sequences (each the last <= ``long_max`` items, oldest first):
  click (clicked items), order (purchased items) and RSU = the user's past
  clicks whose category at ``rsu_category_level`` equals the query's
  category. The query's category is the most clicked category for q in the
  train split before t (ties: smallest category id); a query never clicked
  before t has no category and an empty RSU. Each sequence is reduced to the
  per-level sums of the items' RQ centroid vectors -> 3 x 3 = 9 vectors [9, D]
  (click L1..L3, order L1..L3, RSU L1..L3) plus a [9] mask (1 = non-empty).
* cold start: a user with no usable click before t gets the default sequence,
  the ``default_seq_len`` items most clicked for q in the train split before t
  (by PV = click count, ties by item id). It stands in for both the short and
  the long click sequence; it is ordered least clicked first, so the most
  clicked item gets the largest λ.
* profile: "<age_bucket> <gender>" as text; with ``profile_brands`` = k > 0
  followed by the names of the user's k most clicked brands (before t, ties:
  the most recently clicked first) among their clicks in the query's level-1
  category (the level-1 parent of the query's RSU category; none when the
  query has no category or the user no such click). SPEC §3.4 leaves the
  profile's fields open (open question 6); brand preference is the
  long-term behaviour feature an e-commerce profile carries, and the one the
  RSU centroid sums cannot express (RQ centroids code the category, not the
  brand).

No leakage: every feature of a session at time t uses only interactions with
``time_index < t`` (a session never sees its own clicks, nor any other session
at the same instant). A TRAIN session additionally sees only train-split
interactions, so test-day interactions never enter a training example; a TEST
session sees the user's earlier interactions of both splits (the online
situation). Co-occurrence statistics (query category, default sequence) always
use the train split only.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from onesearch_jax.data.museq_math import behaviour_sid, sliding_window_pairs

USER_ID_MODES = ("behaviour", "hashed", "none")
LONG_REDUCE = ("sum", "mean")
KEYWORDS_IN = ("prompt", "teacher")  # MuSeqConfig.keywords_in
ITEM_PHRASES = ("none", "items", "clicks")  # MuSeqConfig.item_phrases


@dataclasses.dataclass(frozen=True)
class MuSeqConfig:
  """Mu-Seq settings and the ablation switches of the paper's Table 6."""

  short_window: int = 5  # max items in Seq_short (paper: 5)
  query_window: int = 5  # max queries in Seq_q (paper: 5)
  long_max: int = 1000  # max items per long-term sequence (paper: ~10^3)
  default_seq_len: int = 5  # cold-start default sequence length
  user_id: str = "behaviour"  # "behaviour" (uid SID) | "hashed" (<u_h>) | "none"
  user_hash_buckets: int = 1000  # hashed user-id vocabulary (user_id="hashed")
  use_seq_short: bool = True  # ablation: drop Seq_short from the prompt
  use_long_seq: bool = True  # ablation: no long-seq [EMB] slot, zero feature
  sliding_window: bool = True  # ablation: no sliding-window samples
  use_profile: bool = True  # drop the profile text
  # Brand names appended to the profile: the user's most clicked brands in
  # the query's level-1 category before t (0 = none, the main job until now).
  profile_brands: int = 0
  rsu_category_level: int = 2  # category level (1..3) that defines RSU
  long_reduce: str = "sum"  # per-level centroid "sum" (paper) or "mean"
  n_emb_tokens: int = 3  # [EMB] placeholders (Q-Former outputs N_M)
  window_rate: float = 1.0  # mixture rate multiplier of the window task
  # Train tasks' rows in a full seeded shuffle at the source (reshuffled each
  # epoch), before seqio's example shuffle buffer. False: the rows keep the
  # corpus order (chronological for the phase-3 tasks) and only the
  # SFTConfig.shuffle_buffer window (2,000 examples) mixes them, so a run
  # that sees one epoch walks the training days in order. Shuffling raw rows
  # costs ~nothing; a large example buffer would preprocess every row first.
  shuffle_rows: bool = False
  # Prompt labels: "tokens" = one special token per segment label and task
  # (data/prompts.py, ~40% shorter phase-3 prompts), "words" = English labels.
  prompt_style: str = "tokens"
  # Keyword thoughts in the phase-3 prompt (OneSearch-V2 "+RAG"; docs/V2.md):
  # "none" (off, the main job), "builtin" (the dictionary generator,
  # v2/keyword_thoughts.py), "builtin:negation" (the same, negated query
  # words as "not <keyword>") or "cache:<path>" (a JSONL keyword cache file).
  keywords: str = "none"
  # Where the keywords go: "prompt" (every phase-3 prompt: training, eval and
  # serving, the "+RAG" row) or "teacher" (self-distillation,
  # SFTConfig.sdft: only the teacher prompt of the phase-3 training tasks,
  # their "teacher_inputs" feature; every "inputs" prompt, serving's too,
  # has none).
  keywords_in: str = "prompt"
  # OneSearch-V2 keyword CoT (docs/V2.md; both need ``keywords`` on):
  # cot_tasks registers the four stage-1 CoT tasks (query -> keywords,
  # SID_q -> keyword SIDs, and both with the user) and adds their task
  # markers [GEN_KW] [GEN_KWID] to the vocabulary; direct_cot moves the
  # keywords from the phase-3 input to the target, before the SID
  # ("kw1[SEP]kw2[GEN_IID]<a_..>..."; the "direct CoT" experiment).
  cot_tasks: bool = False
  direct_cot: bool = False
  # Query-like item phrases (data/item_phrases.py): "none" (off, the main
  # job), or register the ``s2_phrase_to_sidi`` task ("{brand} {entity}",
  # "{attribute} {entity}" + the phrase's SID_q -> an item's SID) with
  # "items" targets (each item of the phrase once) or "clicks" targets (the
  # phrase's items drawn in proportion to their train clicks). An SFT phase
  # samples it only where SFTConfig.phase_tasks names it. Needs a SID
  # artefact with its text encoder (the phrases' SID_q) and the in-memory
  # item table.
  item_phrases: str = "none"

  def __post_init__(self):
    if self.item_phrases not in ITEM_PHRASES:
      raise ValueError(
        f"MuSeqConfig.item_phrases must be one of {ITEM_PHRASES}, got "
        f"{self.item_phrases!r}"
      )
    if self.keywords_in not in KEYWORDS_IN:
      raise ValueError(
        f"MuSeqConfig.keywords_in must be one of {KEYWORDS_IN}, got "
        f"{self.keywords_in!r}"
      )
    if (self.cot_tasks or self.direct_cot) and self.keywords == "none":
      raise ValueError(
        "MuSeqConfig.cot_tasks and direct_cot need a keyword source: set "
        "MuSeqConfig.keywords to 'builtin' or 'cache:<path>'"
      )
    if self.direct_cot and self.keywords_in != "prompt":
      raise ValueError(
        "MuSeqConfig.direct_cot puts the keywords in the target; it cannot be "
        f"combined with keywords_in={self.keywords_in!r}"
      )
    if self.keywords not in ("none", "builtin", "builtin:negation") and not (
      self.keywords.startswith("cache:") and len(self.keywords) > len("cache:")
    ):
      raise ValueError(
        "MuSeqConfig.keywords must be 'none', 'builtin', 'builtin:negation' or "
        "'cache:<path>', got "
        f"{self.keywords!r}"
      )
    if self.user_id not in USER_ID_MODES:
      raise ValueError(f"user_id must be one of {USER_ID_MODES}, got {self.user_id!r}")
    if self.prompt_style not in ("tokens", "words"):
      raise ValueError(
        f"prompt_style must be 'tokens' or 'words', got {self.prompt_style!r}"
      )
    if self.profile_brands < 0:
      raise ValueError(
        f"MuSeqConfig.profile_brands must be >= 0, got {self.profile_brands}"
      )
    if self.long_reduce not in LONG_REDUCE:
      raise ValueError(f"long_reduce must be one of {LONG_REDUCE}")
    if self.rsu_category_level not in (1, 2, 3):
      raise ValueError("rsu_category_level must be 1, 2 or 3")
    if min(self.short_window, self.query_window, self.long_max) < 1:
      raise ValueError("windows must be >= 1")
    if self.user_id == "hashed" and self.user_hash_buckets < 1:
      raise ValueError("user_hash_buckets must be >= 1")

  @property
  def keywords_in_prompt(self) -> bool:
    """The phase-3 prompt (``inputs``) carries the keyword segment."""
    return self.keywords != "none" and self.keywords_in == "prompt"

  @property
  def teacher_keywords(self) -> bool:
    """The phase-3 training tasks carry a teacher prompt with the keywords."""
    return self.keywords != "none" and self.keywords_in == "teacher"


# The V2 switches and their "off" values: left out of ``config_dict`` when
# off, so hashes of configs written before the fields existed stay the same.
V2_SWITCHES_OFF = {
  "keywords": "none",
  "keywords_in": "prompt",
  "cot_tasks": False,
  "direct_cot": False,
  # Not V2 switches, but left out the same way while off (data order; the
  # profile's brand names; the item phrase task), so runs without them hash
  # what they did before.
  "shuffle_rows": False,
  "profile_brands": 0,
  "item_phrases": "none",
}


def config_dict(config: MuSeqConfig) -> dict:
  """``dataclasses.asdict`` without the V2 switches that are off
  (``V2_SWITCHES_OFF``)."""
  return drop_off_switches(dataclasses.asdict(config))


def drop_off_switches(raw: dict) -> dict:
  """``raw`` (a MuSeqConfig as a dict) without the V2 switches that are off."""
  return {
    k: v for k, v in raw.items() if k not in V2_SWITCHES_OFF or v != V2_SWITCHES_OFF[k]
  }


# ------------------------------------------------------------ the index

_NO_EVENTS: tuple[list, list] = ([], [])


def _timed(events: list) -> tuple[list, list[int]]:
  """(events, their times): a time-sorted event list and its bisect keys."""
  return events, [e.time for e in events]


@dataclasses.dataclass(frozen=True)
class _Event:
  time: int
  order: int  # global position (file order tie-break)
  session_id: str
  query: str
  item: str  # "" for a query event
  split: str


@dataclasses.dataclass(frozen=True)
class UserFeatures:
  """Mu-Seq features of one session (everything before its time).

  Attributes:
    uid_codes: [2C] int32 SID_short ⊕ SID_long, or None (no behaviour at all).
    seq_q: recent queries, oldest first.
    seq_short: recent clicked item ids, oldest first (default sequence when
      cold).
    seq_short_times: their time_index (-1 for default-sequence items).
    seq_short_sessions: the session of each click ("" for default items).
    long_click, long_order, long_rsu: item ids, oldest first.
    profile: "<age_bucket> <gender>" (then up to ``profile_brands`` brand
      names).
    cold_start: no usable click before t (default sequence used).
    query_category: the query's category id at the RSU level ("" unknown).
  """

  uid_codes: np.ndarray | None
  seq_q: tuple[str, ...]
  seq_short: tuple[str, ...]
  seq_short_times: tuple[int, ...]
  seq_short_sessions: tuple[str, ...]
  long_click: tuple[str, ...]
  long_order: tuple[str, ...]
  long_rsu: tuple[str, ...]
  profile: str
  cold_start: bool
  query_category: str


@dataclasses.dataclass(frozen=True)
class Session:
  """One search session of the recall table."""

  user_id: str
  session_id: str
  query: str
  time: int
  split: str
  clicked: tuple[str, ...]
  purchased: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Example:
  """A phase-3 (or eval) example before prompt rendering.

  Attributes:
    session: the session the target comes from.
    features: the Mu-Seq features.
    targets: target item ids (one for training, all for eval).
    window: True for a sliding-window augmentation sample.
  """

  session: Session
  features: UserFeatures
  targets: tuple[str, ...]
  window: bool = False


class MuSeqIndex:
  """Time-ordered behaviour of every user, for feature extraction at any t.

  Args:
    users: user rows (user_id, gender, age_bucket).
    items: item rows (item_id, category_level{1,2,3}_id).
    recall: recall rows (sessions).
    item_codes: item id -> [C] local codes (items without a SID are dropped
      from sequences and counted in ``skips``).
    code_ranges: [C] exclusive code bounds (for the behaviour uid).
    config: Mu-Seq settings.
  """

  def __init__(
    self,
    users,
    items,
    recall,
    item_codes: dict[str, np.ndarray],
    code_ranges: Sequence[int],
    config: MuSeqConfig,
  ):
    self.config = config
    self.code_ranges = tuple(code_ranges)
    self.item_codes = item_codes
    self.skips: collections.Counter = collections.Counter()
    level = config.rsu_category_level
    self.item_category = {
      r["item_id"]: str(r.get(f"category_level{level}_id", "")) for r in items
    }
    self.item_brand: dict[str, str] = {}
    self.item_l1: dict[str, str] = {}
    self.category_l1: dict[str, str] = {}
    if config.profile_brands:
      self._brand_tables(items)
    self.profiles = {
      r["user_id"]: f"{r.get('age_bucket', 'unknown')} {r.get('gender', 'unknown')}"
      for r in users
    }
    ordered = sorted(
      enumerate(recall), key=lambda p: (int(p[1]["time_index"]), p[1]["session_id"])
    )
    self.sessions: list[Session] = []
    clicks = collections.defaultdict(list)
    orders = collections.defaultdict(list)
    queries = collections.defaultdict(list)
    q_clicks = collections.defaultdict(list)  # train clicks per query
    for order, (_, r) in enumerate(ordered):
      s = Session(
        user_id=str(r["user_id"]),
        session_id=str(r["session_id"]),
        query=str(r["query"]),
        time=int(r["time_index"]),
        split=str(r["split"]),
        clicked=tuple(r["clicked_item_ids"]),
        purchased=tuple(r["purchased_item_ids"]),
      )
      self.sessions.append(s)
      mk = lambda item, s=s, order=order: _Event(  # noqa: B023
        s.time, order, s.session_id, s.query, item, s.split
      )
      queries[s.user_id].append(mk(""))
      for item in s.clicked:
        if item not in item_codes:
          self.skips["click_item_without_sid"] += 1
          continue
        clicks[s.user_id].append(mk(item))
        if s.split == "train":
          q_clicks[s.query].append(mk(item))
      for item in s.purchased:
        if item not in item_codes:
          self.skips["order_item_without_sid"] += 1
          continue
        orders[s.user_id].append(mk(item))
    tables = {"clicks": clicks, "orders": orders, "queries": queries}
    tables["q_clicks"] = q_clicks
    # name -> key -> (events, their times), every split and the train split
    # alone: "before t" is one bisect of a time-sorted list either way.
    self._events = {
      name: {k: _timed(ev) for k, ev in table.items()} for name, table in tables.items()
    }
    self._train_events = {
      name: {
        k: _timed([e for e in ev if e.split == "train"]) for k, ev in table.items()
      }
      for name, table in tables.items()
    }
    # Item codes as one matrix (rows in item_codes order) for _codes.
    self._code_row = {item: k for k, item in enumerate(item_codes)}
    width = len(self.code_ranges)
    self._code_matrix = (
      np.stack([np.asarray(c) for c in item_codes.values()])
      if item_codes
      else np.zeros((0, width), np.int32)
    )
    self._memo: dict[tuple, UserFeatures] = {}
    # (query, number of its train clicks before t) -> query_stats result.
    self._query_memo: dict[tuple[str, int], tuple[tuple[str, ...], str]] = {}

  def _brand_tables(self, items) -> None:
    """item -> brand name, item -> level-1 category, RSU category -> its
    level-1 parent (``profile_brands``). Items without a brand name are
    counted in ``skips["item_without_brand"]``; a catalogue with none at all
    is an error."""
    for n, r in enumerate(items):
      l1 = str(r.get("category_level1_id") or r.get("category_level1_name") or "")
      if not l1:
        raise ValueError(
          f"MuSeqConfig.profile_brands: item row {n} ({r.get('item_id')!r}) has "
          "no category_level1_id / category_level1_name field"
        )
      self.item_l1[r["item_id"]] = l1
      self.category_l1.setdefault(self.item_category[r["item_id"]], l1)
      brand = str(r.get("brand_name") or "").strip()
      if brand:
        self.item_brand[r["item_id"]] = brand
      else:
        self.skips["item_without_brand"] += 1
    if not self.item_brand:
      raise ValueError(
        "MuSeqConfig.profile_brands needs items with a brand_name field: "
        f"none of the {len(self.item_l1)} item rows has one"
      )

  def _profile_brands(self, clicks: list[_Event], category: str) -> list[str]:
    """The user's ``profile_brands`` most clicked brands among ``clicks``
    (oldest first) in the level-1 category of ``category`` (ties: the most
    recent click first)."""
    l1 = self.category_l1.get(category, "") if category else ""
    if not l1:
      return []
    counts: collections.Counter = collections.Counter()
    last: dict[str, int] = {}
    for k, e in enumerate(clicks):
      brand = self.item_brand.get(e.item)
      if brand and self.item_l1.get(e.item) == l1:
        counts[brand] += 1
        last[brand] = k
    ranked = sorted(counts, key=lambda b: (-counts[b], -last[b]))
    return ranked[: self.config.profile_brands]

  def _before(self, name: str, key: str, t: int, train_only: bool) -> list[_Event]:
    """The events of ``key`` in table ``name`` strictly before t (oldest
    first), of the train split alone when ``train_only``."""
    table = (self._train_events if train_only else self._events)[name]
    events, times = table.get(key, _NO_EVENTS)
    return events[: bisect.bisect_left(times, t)]

  def query_stats(self, query: str, t: int) -> tuple[list[str], str]:
    """Train-split click statistics of a query before t.

    Returns:
      (default sequence: the ``default_seq_len`` most clicked item ids, least
      clicked first; the most clicked category id at the RSU level or "").
    """
    events, times = self._train_events["q_clicks"].get(query, _NO_EVENTS)
    n = bisect.bisect_left(times, t)
    # The statistics depend on t only through the clicks before it: sessions
    # of a query with the same number of earlier clicks share them.
    key = (query, n)
    if key not in self._query_memo:
      self._query_memo[key] = self._query_stats(events[:n])
    default, category = self._query_memo[key]
    return list(default), category

  def _query_stats(self, events: list[_Event]) -> tuple[tuple[str, ...], str]:
    items = collections.Counter(e.item for e in events)
    top = sorted(items.items(), key=lambda p: (-p[1], p[0]))
    default = tuple(item for item, _ in top[: self.config.default_seq_len])[::-1]
    cats = collections.Counter(self.item_category.get(e.item, "") for e in events)
    cats.pop("", None)
    category = min(cats, key=lambda c: (-cats[c], c)) if cats else ""
    return default, category

  def _codes(self, items: Sequence[str]) -> np.ndarray:
    """[m, C] codes of ``items`` (ids of ``item_codes``)."""
    return self._code_matrix[[self._code_row[i] for i in items]]

  def features(
    self, user_id: str, query: str, t: int, *, train_only: bool
  ) -> UserFeatures:
    """Mu-Seq features of a session of ``user_id`` searching ``query`` at t.

    Args:
      user_id: the user.
      query: the current query.
      t: the session's time_index; only interactions strictly before t count.
      train_only: see only train-split interactions (training examples).

    Returns:
      The features (memoised: sliding-window samples reuse them).
    """
    key = (user_id, query, t, train_only)
    if key not in self._memo:
      self._memo[key] = self._features(user_id, query, t, train_only)
    return self._memo[key]

  def _features(self, user_id, query, t, train_only) -> UserFeatures:
    cfg = self.config
    clicks = self._before("clicks", user_id, t, train_only)[-cfg.long_max :]
    orders = self._before("orders", user_id, t, train_only)[-cfg.long_max :]
    past_q = self._before("queries", user_id, t, train_only)[-cfg.query_window :]
    default, category = self.query_stats(query, t)
    cold = not clicks
    if cold:
      short_items = default[-cfg.short_window :]
      short_times = [-1] * len(short_items)
      short_sessions = [""] * len(short_items)
      long_items = default
    else:
      short = clicks[-cfg.short_window :]
      short_items = [e.item for e in short]
      short_times = [e.time for e in short]
      short_sessions = [e.session_id for e in short]
      long_items = [e.item for e in clicks]
    uid = None
    if short_items:
      uid = np.concatenate(
        [
          behaviour_sid(self._codes(short_items), self.code_ranges),
          behaviour_sid(self._codes(long_items), self.code_ranges),
        ]
      )
    rsu = [
      e.item
      for e in clicks
      if category and self.item_category.get(e.item, "") == category
    ]
    return UserFeatures(
      uid_codes=uid,
      seq_q=tuple(e.query for e in past_q),
      seq_short=tuple(short_items),
      seq_short_times=tuple(short_times),
      seq_short_sessions=tuple(short_sessions),
      long_click=tuple(e.item for e in clicks),
      long_order=tuple(e.item for e in orders),
      long_rsu=tuple(rsu),
      profile=" ".join(
        [self.profiles.get(user_id, "unknown"), *self._profile_brands(clicks, category)]
      ),
      cold_start=cold,
      query_category=category,
    )

  def _session_by_id(self) -> dict[str, Session]:
    if not hasattr(self, "_by_id"):
      self._by_id = {s.session_id: s for s in self.sessions}
    return self._by_id

  def train_examples(self) -> list[Example]:
    """One example per (train session, clicked item with a SID)."""
    out = []
    for s in self.sessions:
      if s.split != "train":
        continue
      targets = [i for i in s.clicked if i in self.item_codes]
      if not targets:
        continue
      f = self.features(s.user_id, s.query, s.time, train_only=True)
      out.extend(Example(s, f, (item,)) for item in targets)
    return out

  def window_examples(self) -> list[Example]:
    """Sliding-window samples over Seq_short of every train session with clicks.

    For Seq_short = s_1..s_m (real clicks, not a default sequence) of a train
    session, each j = 1..m-1 gives the sample (s_1..s_j) -> s_{j+1}: the query
    and all other features are those of the session where s_{j+1} was clicked
    (computed before that session's time), Seq_short is the prefix restricted
    to clicks strictly earlier than s_{j+1} (a prefix left empty by that rule
    gives no sample), and the uid's SID_short is recomputed on the prefix.
    Samples are made once per session (not per clicked target).
    """
    by_id = self._session_by_id()
    out = []
    for s in self.sessions:
      if s.split != "train" or not any(i in self.item_codes for i in s.clicked):
        continue
      f = self.features(s.user_id, s.query, s.time, train_only=True)
      if f.cold_start:
        continue
      m = len(f.seq_short)
      for j, nxt in sliding_window_pairs(m):
        t_next = f.seq_short_times[nxt]
        prefix = [
          item
          for item, ti in zip(f.seq_short[:j], f.seq_short_times[:j], strict=True)
          if ti < t_next
        ]
        if not prefix:
          self.skips["window_prefix_same_time"] += 1
          continue
        src = by_id[f.seq_short_sessions[nxt]]
        g = self.features(s.user_id, src.query, t_next, train_only=True)
        uid = g.uid_codes
        if uid is not None:
          c = len(self.code_ranges)
          uid = np.concatenate(
            [behaviour_sid(self._codes(prefix), self.code_ranges), uid[c:]]
          )
        g = dataclasses.replace(
          g,
          uid_codes=uid,
          seq_short=tuple(prefix),
          seq_short_times=tuple(f.seq_short_times[: len(prefix)]),
          seq_short_sessions=tuple(f.seq_short_sessions[: len(prefix)]),
        )
        out.append(Example(src, g, (f.seq_short[nxt],), window=True))
    return out

  def eval_examples(self, kind: str) -> list[Example]:
    """Test-split examples: one per session with >= 1 clicked ("click") or
    purchased ("order") item with a SID; targets = all of them."""
    if kind not in ("click", "order"):
      raise ValueError(f"eval kind must be 'click' or 'order', got {kind!r}")
    out = []
    for s in self.sessions:
      if s.split != "test":
        continue
      items = s.clicked if kind == "click" else s.purchased
      targets = tuple(i for i in items if i in self.item_codes)
      if not targets:
        continue
      f = self.features(s.user_id, s.query, s.time, train_only=False)
      out.append(Example(s, f, targets))
    return out
