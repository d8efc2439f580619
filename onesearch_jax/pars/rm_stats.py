"""Train-split statistics of (session, item) pairs: the reward model's
"what the logs say" inputs, the signals the cascade's ranker has (and a few
it lacks), without any retrieval score.

For a pair (session s, item i), with u = the session's user and q = its
query, all counts over the TRAIN split:

  log_clicks, log_imps, log_orders   log1p of item i's clicks / impressions / orders
  ctr        (clicks + 1) / (imps + 10)            smoothed item CTR
  cvr        (orders + 0.1) / (clicks + 1)         smoothed item CVR
  user_l1, user_l3, user_brand, user_style
             share of u's clicks whose item has i's L1 / L3 category, brand,
             style attribute (0 when u has no click or i has no value)
  user_price_fit
             −|p_i − mean_u p| with p = log price − the L3 median log price
             (the user's usual price level in a category), 0 without clicks
  query_l3   share of q's clicks in i's L3 category
  query_item share of q's clicks that went to i
  log_user_clicks, log_query_clicks   log1p of u's / q's click totals (confidence)

Leave-session-out: for a train session the session's own impressions,
clicks and orders are subtracted from every count, so an impression never
sees its own label (the MCA ranker does the same). A test session has no
train interactions, so its features are the full train statistics.

Features are standardised with the mean / std over the train impressions
(`RMStats.features` returns the standardised [..., F] float32 array).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.world.reader import World

NAMES = (
  "log_clicks",
  "log_imps",
  "log_orders",
  "ctr",
  "cvr",
  "user_l1",
  "user_l3",
  "user_brand",
  "user_style",
  "user_price_fit",
  "query_l3",
  "query_item",
  "log_user_clicks",
  "log_query_clicks",
)


def _codes(values: list[str]) -> np.ndarray:
  """Strings -> int codes (sorted vocabulary); '' -> -1."""
  vocab = {v: n for n, v in enumerate(sorted({v for v in values if v}))}
  return np.asarray([vocab[v] if v else -1 for v in values], np.int64)


def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
  """counts of `query` keys in sorted unique `keys` (0 where absent)."""
  if keys.size == 0:
    return np.zeros(query.shape, np.float64)
  pos = np.clip(np.searchsorted(keys, query), 0, keys.size - 1)
  return np.where(keys[pos] == query, counts[pos], 0).astype(np.float64)


def smoothed_ctr(clicks: np.ndarray, imps: np.ndarray) -> np.ndarray:
  """(clicks + 1) / (imps + 10), counts floored at 0 (the ``ctr`` feature)."""
  return (np.maximum(clicks, 0) + 1.0) / (np.maximum(imps, 0) + 10.0)


class _Share:
  """Share of a group's (user's / query's) train clicks on items with a given
  attribute value, leaving the asking session out."""

  def __init__(self, session_group, attr, click_s, click_i, n_sessions):
    self.group = np.asarray(session_group, np.int64)
    self.attr = np.asarray(attr, np.int64)
    self.v = int(self.attr.max()) + 1 if self.attr.size else 1
    a = self.attr[click_i]
    ok = a >= 0
    self.keys, self.counts = np.unique(
      self.group[click_s[ok]] * self.v + a[ok], return_counts=True
    )
    self.own_keys, self.own_counts = np.unique(
      click_s[ok].astype(np.int64) * self.v + a[ok], return_counts=True
    )
    n_groups = int(self.group.max()) + 1 if self.group.size else 1
    self.total = np.bincount(self.group[click_s], minlength=n_groups).astype(np.float64)
    self.own_total = np.bincount(click_s, minlength=n_sessions).astype(np.float64)

  def __call__(self, session: np.ndarray, item: np.ndarray):
    """(share, clicks of the group without this session), session's shape."""
    g = self.group[session]
    a = self.attr[item]
    cnt = _lookup(self.keys, self.counts, g * self.v + a) - _lookup(
      self.own_keys, self.own_counts, session.astype(np.int64) * self.v + a
    )
    tot = self.total[g] - self.own_total[session]
    share = np.where((a >= 0) & (tot > 0), cnt / np.maximum(tot, 1.0), 0.0)
    return share, tot


@dataclasses.dataclass(eq=False)
class RMStats:
  """Statistics features of (session, item) pairs of one InteractionLog."""

  names = NAMES  # the feature columns

  log: InteractionLog
  item_imps: np.ndarray  # [N] train impressions
  item_clicks: np.ndarray
  item_orders: np.ndarray
  rel_price: np.ndarray  # [N] log price - L3 median log price (0 unknown)
  shares: dict  # name -> _Share
  price_sum: np.ndarray  # [U] sum of rel_price over the user's train clicks
  price_own: np.ndarray  # [S] the session's own part of it
  mean: np.ndarray  # [F] over train impressions (raw features)
  std: np.ndarray

  @classmethod
  def build(cls, world: World, log: InteractionLog) -> RMStats:
    items = world.items
    n = log.n_items
    train_imp = log.train_impressions()
    i_imp = log.imp_item[train_imp].astype(np.int64)
    imps = np.bincount(i_imp, minlength=n).astype(np.float64)
    clicked = log.clicked_keys[log.session_train[log.clicked_keys // n]]
    ordered = log.purchased_keys[log.session_train[log.purchased_keys // n]]
    click_s, click_i = clicked // n, clicked % n
    clicks = np.bincount(click_i, minlength=n).astype(np.float64)
    orders = np.bincount(ordered % n, minlength=n).astype(np.float64)
    brand = _codes([str(r.get("brand_id") or "") for r in items])
    style = _codes([str((r.get("attributes") or {}).get("style") or "") for r in items])
    price = np.asarray([float(r.get("item_price") or 0.0) for r in items], np.float64)
    logp = np.log(np.maximum(price, 1e-6))
    rel_price = np.zeros(n)
    known = price > 0
    for c in np.unique(log.item_l3):
      m = (log.item_l3 == c) & known
      if m.any():
        rel_price[m] = logp[m] - np.median(logp[m])
    s = log.n_sessions
    user, query = log.session_user, log.session_query
    shares = {
      "user_l1": _Share(user, log.item_l1, click_s, click_i, s),
      "user_l3": _Share(user, log.item_l3, click_s, click_i, s),
      "user_brand": _Share(user, brand, click_s, click_i, s),
      "user_style": _Share(user, style, click_s, click_i, s),
      "query_l3": _Share(query, log.item_l3, click_s, click_i, s),
      "query_item": _Share(query, np.arange(n), click_s, click_i, s),
    }
    u = log.session_user[click_s]
    price_sum = np.bincount(u, weights=rel_price[click_i], minlength=len(log.user_ids))
    price_own = np.bincount(click_s, weights=rel_price[click_i], minlength=s)
    out = cls(
      log, imps, clicks, orders, rel_price, shares, price_sum, price_own,
      np.zeros(len(NAMES)), np.ones(len(NAMES)),
    )  # fmt: skip
    raw = out.raw(log.imp_session[train_imp], log.imp_item[train_imp])
    out.mean = raw.mean(0) if raw.size else out.mean
    out.std = raw.std(0) + 1e-6 if raw.size else out.std
    return out

  def raw(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """[..., F] unstandardised features (item -1 -> item 0's, caller masks)."""
    log = self.log
    session, item = np.broadcast_arrays(np.asarray(session), np.asarray(item))
    shape = session.shape
    s = session.reshape(-1).astype(np.int64)
    i = np.maximum(item.reshape(-1), 0).astype(np.int64)
    train = log.session_train[s]
    keys = s * log.n_items + i

    def own(sorted_keys):
      return (InteractionLog.member(sorted_keys, keys) & train).astype(np.float64)

    imps = self.item_imps[i] - own(log.impressed_keys)
    clicks = self.item_clicks[i] - own(log.clicked_keys)
    orders = self.item_orders[i] - own(log.purchased_keys)
    cols = {
      "log_clicks": np.log1p(np.maximum(clicks, 0)),
      "log_imps": np.log1p(np.maximum(imps, 0)),
      "log_orders": np.log1p(np.maximum(orders, 0)),
      "ctr": smoothed_ctr(clicks, imps),
      "cvr": (np.maximum(orders, 0) + 0.1) / (np.maximum(clicks, 0) + 1.0),
    }
    for name, share in self.shares.items():
      cols[name], tot = share(s, i)
      if name == "user_l1":
        cols["log_user_clicks"] = np.log1p(tot)
        u_tot = tot
      if name == "query_l3":
        cols["log_query_clicks"] = np.log1p(tot)
    u = log.session_user[s]
    mean_p = (self.price_sum[u] - self.price_own[s]) / np.maximum(u_tot, 1.0)
    cols["user_price_fit"] = np.where(
      u_tot > 0, -np.abs(self.rel_price[i] - mean_p), 0.0
    )
    return np.stack([cols[k] for k in NAMES], -1).reshape(shape + (len(NAMES),))

  def features(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """[..., F] float32 standardised features of (session, item) pairs."""
    return ((self.raw(session, item) - self.mean) / self.std).astype(np.float32)


class StatsBlocks:
  """Statistics feature blocks side by side: ``features`` [..., sum F] is
  the blocks' standardised features concatenated in order."""

  def __init__(self, blocks):
    self.blocks = tuple(blocks)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(n for b in self.blocks for n in b.names)

  def features(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    return np.concatenate([b.features(session, item) for b in self.blocks], -1)
