"""Search sessions: query -> engine impressions -> position-biased clicks -> orders.

The logging policy (the "engine") shows the items of the intended category
ordered by attribute match, popularity and a little personalisation. Users
examine position p with probability p ** -position_decay and click an examined
item with a logistic model of match, favourite brand, price fit and style; a
click becomes an order with a second logistic model. Sessions are processed in
time order, so every history feature (recent clicks, 30-day counts) only sees
the past.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from onesearch_jax.world import lexicon
from onesearch_jax.world.catalog import SECONDS_PER_DAY, Catalog, CategoryIndex
from onesearch_jax.world.config import WorldConfig
from onesearch_jax.world.population import Population, drift
from onesearch_jax.world.queries import Intent, QueryMaker, match_counts

HISTORY_LEN = 20  # recently clicked/purchased ids kept per user (KuaiSearch)
STAT_WINDOW_DAYS = 30  # window of the *_30d_hist statistical features


@dataclasses.dataclass
class QueryLogEntry:
  """What the simulator remembers about a distinct query string."""

  intent: Intent  # the intent of its first session
  count: int  # sessions that issued it
  impressed: np.ndarray  # items shown in its first session


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-x))


def simulate(
  config: WorldConfig,
  catalog: Catalog,
  pop: Population,
  rng: np.random.Generator,
  emit_recall: Callable[[dict[str, Any]], None],
  emit_ranking: Callable[[dict[str, Any]], None],
  log: Callable[[str], None] | None = None,
) -> dict[str, QueryLogEntry]:
  """Runs every day of the log, emitting recall and ranking rows in time order.

  Args:
    config: the world config.
    catalog: the catalogue.
    pop: the users (their preferences drift in place).
    rng: the generator (consumed).
    emit_recall: called with each recall.jsonl row.
    emit_ranking: called with each kept ranking.jsonl row.
    log: optional progress printer (one line per day).

  Returns:
    The query log: distinct query string -> first intent, count, impressions.
  """
  index = CategoryIndex(catalog)
  qm = QueryMaker(
    catalog,
    index,
    config.typo_rate,
    config.synonym_rate,
    config.complex_query_share,
  )
  tree = catalog.tree
  l3_l1 = tree.l3_l1
  item_l1 = l3_l1[catalog.l3]
  item_l2 = tree.l3_parent[catalog.l3]
  log_price = np.log(catalog.price)
  # Item quality in [0, 1] (rescaled log-popularity), the same scale at any size.
  lp = catalog.log_pop
  quality = (lp - lp.min()) / max(lp.max() - lp.min(), 1e-9)
  l3_med = np.zeros(len(tree.l3_names))
  for k in range(len(tree.l3_names)):
    members = index.members("l3", k)
    l3_med[k] = np.median(log_price[members]) if members.size else 0.0
  consumable_l1 = np.array([a in lexicon.CONSUMABLE_L1 for a in tree.l1_names])
  entrances = tuple(lexicon.SEARCH_ENTRANCE_PROBS)
  entrance_p = np.array(list(lexicon.SEARCH_ENTRANCE_PROBS.values()))
  entrance_p /= entrance_p.sum()

  n_days, n_users, n_items = config.n_days, pop.n_users, catalog.n_items
  k_show = config.impressions_per_session
  user_day = np.zeros((n_days, n_users, 4))  # show, click, order, gmv
  item_day = np.zeros((n_days, n_items, 3), dtype=np.int32)  # show, click, order
  recent_clicks: list[list[str]] = [[] for _ in range(n_users)]
  recent_orders: list[list[str]] = [[] for _ in range(n_users)]
  bought_consumables: list[list[int]] = [[] for _ in range(n_users)]
  query_log: dict[str, QueryLogEntry] = {}
  positions = np.arange(1, k_show + 1)
  exam_all = positions.astype(np.float64) ** -config.position_decay
  n_session = 0
  n_skipped = 0  # sessions dropped because no item was published yet

  for day in range(n_days):
    if day > 0:
      drift(pop, config, rng)
    lo = max(0, day - STAT_WINDOW_DAYS)
    u_hist = user_day[lo:day].sum(axis=0)
    i_hist = item_day[lo:day].sum(axis=0)
    active = np.nonzero(pop.start_day <= day)[0]
    k = rng.poisson(config.sessions_per_user_day * pop.activity[active])
    k = np.where(pop.start_day[active] == day, np.maximum(k, 1), k)  # newcomers search
    users = np.repeat(active, k)
    times = day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, users.size)
    order = np.lexsort((users, times))
    users, times = users[order], times[order]
    entr = rng.choice(len(entrances), size=users.size, p=entrance_p)
    split = "test" if day == n_days - 1 else "train"

    for s in range(users.size):
      u, t = int(users[s]), int(times[s])
      # 1. Intent and query.
      if bought_consumables[u] and rng.random() < config.repeat_purchase_prob:
        intent = qm.repeat(
          bought_consumables[u][int(rng.integers(0, len(bought_consumables[u])))]
        )
      else:
        aff = pop.l1_affinity[u]
        l1 = min(
          int(np.searchsorted(np.cumsum(aff), rng.random() * aff.sum())), aff.size - 1
        )
        intent = qm.draw(l1, pop.fav_brands[u, l1], rng)
      query = qm.render(intent, rng)

      # 2. Retrieval pool: the intended category, widened to L2 then L1 if thin.
      if intent.l3 >= 0:
        pool = index.members("l3", intent.l3)
        wider = (("l2", intent.l2), ("l1", intent.l1))
      else:
        pool = index.members("l2", intent.l2)
        wider = (("l1", intent.l1),)
      if pool.size > config.retrieval_pool:
        # Huge categories: the engine's recall keeps the most popular
        # items (members are sorted by popularity) plus a random tail sample.
        head = pool[: config.retrieval_pool]
        tail = pool[config.retrieval_pool :]
        pick = rng.integers(0, tail.size, config.retrieval_pool // 4)
        pool = np.concatenate([head, np.unique(tail[pick])])
      pool = pool[catalog.publish_time[pool] <= t]
      for level, key in wider:
        if pool.size >= k_show:
          break
        extra = index.members(level, key)
        extra = extra[(catalog.publish_time[extra] <= t) & ~np.isin(extra, pool)]
        pool = np.concatenate([pool, extra])
      if pool.size == 0:  # nothing published in the whole L1 yet: counted
        n_skipped += 1
        continue
      in_cat = (
        (catalog.l3[pool] == intent.l3)
        if intent.l3 >= 0
        else (item_l2[pool] == intent.l2)
      )
      matches = match_counts(catalog, pool, intent)
      fav = pop.is_fav(u, catalog.brand[pool], item_l1[pool])
      score = (
        2.0 * in_cat
        + 1.5 * matches
        + config.engine_popularity * catalog.log_pop[pool]
        + config.engine_personalisation * fav
        + rng.gumbel(size=pool.size)
      )
      if score.size > k_show:
        part = np.argpartition(-score, k_show)[:k_show]
        top = part[np.argsort(-score[part], kind="stable")]
      else:
        top = np.argsort(-score, kind="stable")
      shown = pool[top]
      n = shown.size

      # 3. Clicks (position-biased examination x attractiveness) and orders.
      misfit = np.abs(
        log_price[shown] - (l3_med[catalog.l3[shown]] + pop.price_pref[u])
      )
      style_ok = catalog.attrs["style"][shown] == pop.style_pref[u]
      target = shown == intent.target_item
      logit = (
        config.click_bias
        + config.click_match_weight * (matches[top] + in_cat[top])
        + config.click_brand_weight * fav[top]
        - config.click_price_weight * misfit
        + config.click_popularity_weight * quality[shown]
        + 0.5 * style_ok
        + 3.0 * target
      )
      clicked = rng.random(n) < exam_all[:n] * _sigmoid(logit)
      order_logit = config.order_bias + 1.0 * fav[top] - 0.8 * misfit + 2.5 * target
      ordered = clicked & (rng.random(n) < _sigmoid(order_logit))
      keep = clicked | (rng.random(n) < config.ranking_negative_rate)

      # 4. Rows (features from the past only), then history updates.
      session_id = f"q{n_session}"
      n_session += 1
      entrance = entrances[entr[s]]
      ids = [catalog.item_id(i) for i in shown.tolist()]
      clicked_ids = [ids[j] for j in np.nonzero(clicked)[0]]
      ordered_ids = [ids[j] for j in np.nonzero(ordered)[0]]
      emit_recall(
        {
          "user_id": pop.user_id(u),
          "session_id": session_id,
          "query": query,
          "impressed_item_ids": ids,
          "clicked_item_ids": clicked_ids,
          "purchased_item_ids": ordered_ids,
          "time_index": t,
          "split": split,
          "search_entrance": entrance,
        }
      )
      uh = u_hist[u]
      user_stats = {
        "user_show_cnt_30d_hist": float(uh[0]),
        "user_click_cnt_30d_hist": float(uh[1]),
        "user_order_cnt_30d_hist": float(uh[2]),
        "user_gmv_30d_hist": round(float(uh[3]), 2),
      }
      rc, ro = list(recent_clicks[u]), list(recent_orders[u])
      for j in np.nonzero(keep)[0].tolist():
        i = int(shown[j])
        ih = i_hist[i]
        emit_ranking(
          {
            "user_id": pop.user_id(u),
            "session_id": session_id,
            "user_fan_number": int(pop.fans[u]),
            "user_follow_number": int(pop.follows[u]),
            "time_index": t,
            "search_entrance": entrance,
            "recently_clicked_item_ids": rc,
            "recently_purchased_item_ids": ro,
            "query": query,
            "target_item_id": ids[j],
            "target_item_price": float(catalog.price[i]),
            "is_clicked": int(clicked[j]),
            "is_purchased": int(ordered[j]),
            "user_statistical_features": user_stats,
            "target_item_statistical_features": {
              "item_show_cnt_30d_hist": float(ih[0]),
              "item_click_cnt_30d_hist": float(ih[1]),
              "item_order_cnt_30d_hist": float(ih[2]),
            },
            "split": split,
            "position": j + 1,
          }
        )
      user_day[day, u] += (
        n,
        clicked.sum(),
        ordered.sum(),
        catalog.price[shown[ordered]].sum(),
      )
      item_day[day, shown, 0] += 1
      item_day[day, shown, 1] += clicked
      item_day[day, shown, 2] += ordered
      if clicked_ids:
        recent_clicks[u] = (recent_clicks[u] + clicked_ids)[-HISTORY_LEN:]
      if ordered_ids:
        recent_orders[u] = (recent_orders[u] + ordered_ids)[-HISTORY_LEN:]
        for i in shown[ordered].tolist():
          if consumable_l1[item_l1[i]] and i not in bought_consumables[u]:
            bought_consumables[u].append(i)
      entry = query_log.get(query)
      if entry is None:
        query_log[query] = QueryLogEntry(intent, 1, shown)
      else:
        entry.count += 1
    if log is not None:
      log(
        f"day {day + 1}/{n_days}: {users.size} sessions ({split}), "
        f"{n_session} written, {n_skipped} skipped (no published item)"
      )
  return query_log
