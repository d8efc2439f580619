"""The ranking table's statistics objects as reward-model features.

KuaiSearch ranking rows carry ``user_statistical_features`` and
``target_item_statistical_features``: counts over a window before the row's
session (``user_show_cnt_30d_hist``, ``item_click_cnt_30d_hist``, ...;
``world/ranking_statistics.py`` stacks them). The reward model scores
(session, item) pairs that were never ranked together (unshown negatives,
the generator's candidates), so a pair's values are looked up **as of the
session's time t** (a feature store's point-in-time lookup):

  user columns  the latest ranking row of the session's user with time <= t
  item columns  the latest ranking row of the item with time <= t (for an
                item shown in the session, that session's own row)

Each column becomes log1p(max(x, 0)) (counts and GMV are heavy-tailed; a
missing key is 0), plus one indicator per object that is 1 when no row was
found (its columns are 0 then). A row's statistics describe the time before
its session, so a lookup never sees the label of a session at or after t.
Features are standardised with the mean / std over the train impressions,
like ``rm_stats.RMStats``.

Choice (the papers are silent): the point-in-time lookup instead of using
the statistics only where the pair has a ranking row, so every scored pair
gets the same features whether or not it was shown.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.world import ranking_statistics
from onesearch_jax.world.reader import World


@dataclasses.dataclass(frozen=True, eq=False)
class _AsOf:
  """Rows of one object sorted by (owner, time), for point-in-time lookups.

  Attributes:
    owner: [R] int64 owner index (user or item row), sorted with ``time``.
    time: [R] int64 time_index.
    values: [R, F] float64 transformed values (log1p, NaN -> 0).
  """

  owner: np.ndarray
  time: np.ndarray
  values: np.ndarray

  @classmethod
  def build(cls, owner: np.ndarray, time: np.ndarray, raw: np.ndarray) -> _AsOf:
    keep = owner >= 0
    owner, time, raw = owner[keep], time[keep], raw[keep]
    order = np.lexsort((time, owner))  # by owner, then time; stable
    values = np.log1p(np.maximum(np.nan_to_num(raw[order].astype(np.float64)), 0.0))
    return cls(owner[order], time[order], values)

  def lookup(
    self, owner: np.ndarray, time: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    """([Q, F] values of the latest row with time <= t, [Q] bool found)."""
    q = owner.shape[0]
    f = self.values.shape[1]
    if self.owner.size == 0:
      return np.zeros((q, f)), np.zeros(q, bool)
    # Lexicographic (owner, time) search: the last row <= (owner, t).
    span = int(max(self.time.max(), time.max(initial=0))) + 1
    keys = self.owner * span + self.time
    pos = np.searchsorted(keys, owner * span + time, side="right") - 1
    safe = np.maximum(pos, 0)
    found = (pos >= 0) & (self.owner[safe] == owner)
    return np.where(found[:, None], self.values[safe], 0.0), found


@dataclasses.dataclass(eq=False)
class ReleaseStats:
  """Point-in-time statistics features of (session, item) pairs.

  Attributes:
    log: the InteractionLog whose session / item rows are looked up.
    user_names, item_names: the statistics' keys (sorted), the columns.
    user, item: the per-object row tables.
    skipped: ranking rows not used, by reason (unknown user / item).
    mean, std: [F] standardisation over the train impressions.
  """

  log: InteractionLog
  user_names: tuple[str, ...]
  item_names: tuple[str, ...]
  user: _AsOf
  item: _AsOf
  skipped: collections.Counter
  mean: np.ndarray
  std: np.ndarray

  @property
  def names(self) -> tuple[str, ...]:
    """Feature names: log1p columns, then the two missing indicators."""
    return tuple(f"log1p_{n}" for n in self.user_names + self.item_names) + (
      "user_stats_missing",
      "item_stats_missing",
    )

  @classmethod
  def build(cls, world: World, log: InteractionLog) -> ReleaseStats:
    rows = world.ranking
    stats = ranking_statistics.ranking_statistics(rows)
    users = {u: k for k, u in enumerate(log.user_ids)}
    items = log.item_index()
    skipped: collections.Counter = collections.Counter()
    user = np.empty(len(rows), np.int64)
    item = np.empty(len(rows), np.int64)
    time = np.empty(len(rows), np.int64)
    for r, row in enumerate(rows):
      user[r] = users.get(str(row["user_id"]), -1)
      item[r] = items.get(str(row["target_item_id"]), -1)
      time[r] = int(row["time_index"])
      if user[r] < 0:
        skipped["unknown_user"] += 1
      if item[r] < 0:
        skipped["unknown_item"] += 1
    out = cls(
      log,
      stats.user_names,
      stats.item_names,
      _AsOf.build(user, time, stats.user),
      _AsOf.build(item, time, stats.item),
      skipped,
      np.zeros(0),
      np.ones(0),
    )
    train = log.train_impressions()
    raw = out.raw(log.imp_session[train], log.imp_item[train])
    out.mean = raw.mean(0) if raw.size else np.zeros(raw.shape[-1])
    out.std = raw.std(0) + 1e-6 if raw.size else np.ones(raw.shape[-1])
    return out

  def raw(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """[..., F] unstandardised features (item -1 -> item 0's, caller masks)."""
    session, item = np.broadcast_arrays(np.asarray(session), np.asarray(item))
    shape = session.shape
    s = session.reshape(-1).astype(np.int64)
    i = np.maximum(item.reshape(-1), 0).astype(np.int64)
    t = self.log.session_time[s].astype(np.int64)
    u_val, u_found = self.user.lookup(self.log.session_user[s].astype(np.int64), t)
    i_val, i_found = self.item.lookup(i, t)
    missing = np.stack([~u_found, ~i_found], -1).astype(np.float64)
    out = np.concatenate([u_val, i_val, missing], -1)
    return out.reshape(shape + (out.shape[-1],))

  def features(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """[..., F] float32 standardised features of (session, item) pairs."""
    return ((self.raw(session, item) - self.mean) / self.std).astype(np.float32)
