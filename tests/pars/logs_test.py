"""InteractionLog.build (vectorised) against a per-session brute force on a
random world with the awkward cases: repeated clicks, clicks that were not
shown, purchases that were not clicked, sessions that show nothing, category
ties, items without a SID."""

from __future__ import annotations

import collections

import numpy as np

from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.world.reader import World
from onesearch_jax.world.validation import SkipReport


def _random_world(seed: int) -> World:
  rng = np.random.default_rng(seed)
  n_items, n_users = 12, 4
  items = [
    {
      "item_id": f"i{k}",
      "item_title": f"title {k}",
      "category_level1_id": f"L1{k % 2}",
      "category_level3_id": f"L3{k % 4}",
    }
    for k in range(n_items)
  ]
  users = [
    {"user_id": f"u{k}", "gender": "f", "age_bucket": "18-23"} for k in range(n_users)
  ]
  recall = []
  for s in range(40):
    shown = [f"i{k}" for k in rng.choice(n_items, rng.integers(0, 6), replace=False)]
    pool = shown + [f"i{rng.integers(n_items)}"]  # sometimes a click not shown
    clicked = [pool[k] for k in rng.integers(0, len(pool), rng.integers(0, 4))]
    bought = [f"i{rng.integers(n_items)}" for _ in range(rng.integers(0, 2))]
    bought += clicked[: rng.integers(0, 2)]
    recall.append(
      {
        "user_id": f"u{rng.integers(n_users)}",
        "session_id": f"s{s:02d}",
        "query": f"q{rng.integers(5)}",
        "impressed_item_ids": shown,
        "clicked_item_ids": clicked,
        "purchased_item_ids": bought,
        "time_index": int(rng.integers(0, 10)),
        "split": "train" if rng.random() < 0.7 else "test",
      }
    )
  return World(
    path="", users=users, items=items, recall=recall, ranking=[], relevance=[],
    report=SkipReport(), manifest=None,
  )  # fmt: skip


def _brute_force(world: World) -> dict:
  """The arrays, one session at a time (the definitions of logs.py)."""
  item_ids = [r["item_id"] for r in world.items]
  n = len(item_ids)
  row = {x: i for i, x in enumerate(item_ids)}
  l3_names = sorted({r["category_level3_id"] for r in world.items})
  l3 = [l3_names.index(r["category_level3_id"]) for r in world.items]
  users = [r["user_id"] for r in world.users]
  recall = sorted(world.recall, key=lambda r: (r["time_index"], r["session_id"]))
  out = collections.defaultdict(list)
  skips = collections.Counter()
  pur, clk, shown, user_pur = set(), set(), set(), collections.Counter()
  for s, r in enumerate(recall):
    sh = [row[x] for x in r["impressed_item_ids"]]
    cl = [row[x] for x in r["clicked_item_ids"]]
    pu = [row[x] for x in r["purchased_item_ids"]]
    skips["click_not_impressed"] += len(set(cl) - set(sh))
    skips["order_not_clicked"] += len(set(pu) - set(cl))
    for p, i in enumerate(sh):
      out["imp"].append((s, i, p + 1, i in cl, i in pu))
    cats = collections.Counter(l3[i] for i in (cl or sh))
    best = max(cats.values(), default=0)
    out["l3"].append(min((c for c in cats if cats[c] == best), default=-1))
    pur |= {s * n + i for i in pu}
    clk |= {s * n + i for i in cl}
    shown |= {s * n + i for i in sh}
    if r["split"] == "train":
      user_pur.update(users.index(r["user_id"]) * n + i for i in set(pu))
  upk = sorted(user_pur)
  return {
    "imp": out["imp"],
    "l3": out["l3"],
    "keys": (sorted(pur), sorted(clk), sorted(shown)),
    "user_pur": (upk, [user_pur[k] for k in upk]),
    "skips": skips,
  }


def test_build_matches_the_per_session_definition():
  for seed in range(5):
    world = _random_world(seed)
    table = SIDTable.synthetic([f"i{k}" for k in range(10)], ["q0"], levels=(4, 2, 2))
    log = InteractionLog.build(world, table)
    want = _brute_force(world)
    got_imp = list(
      zip(
        log.imp_session.tolist(),
        log.imp_item.tolist(),
        log.imp_pos.tolist(),
        log.imp_click.tolist(),
        log.imp_order.tolist(),
        strict=True,
      )
    )
    assert got_imp == want["imp"]
    assert log.imp_session.dtype == log.imp_item.dtype == log.imp_pos.dtype == np.int32
    assert log.session_l3.tolist() == want["l3"] and log.session_l3.dtype == np.int32
    l3_to_l1 = dict(zip(log.item_l3.tolist(), log.item_l1.tolist(), strict=True))
    assert log.session_l1.tolist() == [l3_to_l1.get(c, -1) for c in want["l3"]]
    got_keys = (log.purchased_keys, log.clicked_keys, log.impressed_keys)
    assert [k.tolist() for k in got_keys] == [list(k) for k in want["keys"]]
    assert all(k.dtype == np.int64 for k in got_keys)
    assert log.user_train_purchase_keys.tolist() == want["user_pur"][0]
    assert log.user_train_purchase_counts.tolist() == want["user_pur"][1]
    assert log.skips["item_without_sid"] == 2  # i10, i11 have no SID
    for k in ("click_not_impressed", "order_not_clicked"):
      assert log.skips[k] == want["skips"][k]
    assert want["skips"]["click_not_impressed"] > 0 or seed  # the case occurs
    assert not log.has_sid[10:].any() and (log.item_codes[10:] == -1).all()
