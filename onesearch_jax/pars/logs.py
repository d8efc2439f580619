"""The world's search log as flat numpy arrays (what PARS computes on).

`InteractionLog.build(world, sid_table)` turns the recall table into:

  sessions  [S]: user, time, split, query index, session category (L1, L3)
  impressions [M]: session, item, 1-based position, clicked, purchased
  items     [N]: L1 / L3 category index, SID local codes [N, C], has_sid

plus sorted int64 keys (session * N + item) for the purchased / clicked /
impressed sets and the train-split purchases per user, so membership of any
(session, item) pair is a vectorised `searchsorted`.

Choices (the schema does not say):
  * The session category is the most frequent L3 category of the session's
    clicked items, else of its impressed items (ties: smallest index).
  * A clicked (purchased) item that was not impressed still counts as a
    click (purchase) of the session; such rows are counted in
    `skips['click_not_impressed']` / `['order_not_clicked']` (the reader
    only warns about them).
  * Ids that the SID table lacks get `has_sid = False` and codes -1 (counted
    in `skips['item_without_sid']`); sessions whose user or item is unknown
    cannot occur (the reader rejects them).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np

from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.world.reader import World


def _factorise(values) -> tuple[np.ndarray, tuple[str, ...]]:
  uniq = sorted(set(values))
  index = {v: i for i, v in enumerate(uniq)}
  return np.asarray([index[v] for v in values], np.int32), tuple(uniq)


def _session_modes(
  n_sessions: int,
  item_cat: np.ndarray,
  *pairs: np.ndarray,
) -> np.ndarray:
  """[S] int32 most frequent category per session, ties -> the smallest, -1
  for a session with no row.

  Args:
    n_sessions: S.
    item_cat: [N] category index per item.
    *pairs: (session [M], item row [M]) arrays, repeated rows counting again;
      several pairs are pooled.
  """
  sess = np.concatenate(pairs[0::2]).astype(np.int64)
  cat = item_cat[np.concatenate(pairs[1::2]).astype(np.int64)].astype(np.int64)
  out = np.full(n_sessions, -1, np.int32)
  if sess.size == 0:
    return out
  width = int(cat.max()) + 1
  keys, counts = np.unique(sess * width + cat, return_counts=True)
  ks, kc = keys // width, keys % width
  order = np.lexsort((kc, -counts, ks))  # by session, count down, category up
  first = order[np.r_[True, ks[order][1:] != ks[order][:-1]]]
  out[ks[first]] = kc[first]
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class InteractionLog:
  """Flat arrays of one world's sessions, impressions and items.

  Attributes:
    item_ids: N item ids (row order of every item array).
    item_l1, item_l3: [N] int32 category indices.
    item_codes: [N, C] int32 SID local codes (-1 where has_sid is False).
    has_sid: [N] bool.
    user_ids: U user ids; user_gender, user_age: [U] int32 profile indices.
    genders, ages: the profile vocabularies.
    session_ids: S session ids; session_user [S] int32; session_time [S]
      int64; session_train [S] bool (split == 'train'); session_query [S]
      int32 index into `queries`; session_l3, session_l1 [S] int32 (-1 when
      the session shows nothing).
    queries: distinct query strings.
    imp_session, imp_item, imp_pos: [M] int32 (pos is 1-based).
    imp_click, imp_order: [M] bool.
    purchased_keys, clicked_keys, impressed_keys: sorted int64 keys
      session * N + item of the session's purchased / clicked / shown items.
    user_train_purchase_keys: sorted int64 keys user * N + item of train
      purchases; user_train_purchase_counts [same] int32 multiplicities.
    skips: counted oddities (see the module docstring).
  """

  item_ids: tuple[str, ...]
  item_l1: np.ndarray
  item_l3: np.ndarray
  item_codes: np.ndarray
  has_sid: np.ndarray
  code_ranges: tuple[int, ...]
  user_ids: tuple[str, ...]
  user_gender: np.ndarray
  user_age: np.ndarray
  genders: tuple[str, ...]
  ages: tuple[str, ...]
  session_ids: tuple[str, ...]
  session_user: np.ndarray
  session_time: np.ndarray
  session_train: np.ndarray
  session_query: np.ndarray
  session_l3: np.ndarray
  session_l1: np.ndarray
  queries: tuple[str, ...]
  imp_session: np.ndarray
  imp_item: np.ndarray
  imp_pos: np.ndarray
  imp_click: np.ndarray
  imp_order: np.ndarray
  purchased_keys: np.ndarray
  clicked_keys: np.ndarray
  impressed_keys: np.ndarray
  user_train_purchase_keys: np.ndarray
  user_train_purchase_counts: np.ndarray
  skips: collections.Counter
  recall_rows: tuple[dict[str, Any], ...] = ()

  @property
  def n_items(self) -> int:
    return len(self.item_ids)

  @property
  def n_sessions(self) -> int:
    return len(self.session_ids)

  @property
  def code_width(self) -> int:
    return self.item_codes.shape[1]

  def key(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """int64 key session * N + item (item -1 maps to a key no set holds)."""
    item = np.asarray(item, np.int64)
    key = np.asarray(session, np.int64) * self.n_items + item
    return np.where(item < 0, -1, key)

  @staticmethod
  def member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """bool: keys present in sorted_keys (vectorised)."""
    keys = np.asarray(keys, np.int64)
    if sorted_keys.size == 0:
      return np.zeros(keys.shape, bool)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, sorted_keys.size - 1)
    return sorted_keys[pos] == keys

  def session_index(self) -> dict[str, int]:
    return {s: i for i, s in enumerate(self.session_ids)}

  def item_index(self) -> dict[str, int]:
    return {s: i for i, s in enumerate(self.item_ids)}

  def train_impressions(self) -> np.ndarray:
    """[M_train] impression rows of train-split sessions."""
    return np.flatnonzero(self.session_train[self.imp_session])

  def test_impressions(self) -> np.ndarray:
    return np.flatnonzero(~self.session_train[self.imp_session])

  @classmethod
  def build(cls, world: World, sid_table: SIDTable) -> InteractionLog:
    """Arrays of `world` with item SIDs from `sid_table`."""
    skips: collections.Counter = collections.Counter()
    items = world.items
    item_ids = tuple(str(r["item_id"]) for r in items)
    item_index = {x: i for i, x in enumerate(item_ids)}
    l1, _ = _factorise([str(r["category_level1_id"]) for r in items])
    l3, _ = _factorise([str(r["category_level3_id"]) for r in items])
    width = sid_table.code_width
    codes = np.full((len(item_ids), width), -1, np.int32)
    has_sid = np.zeros(len(item_ids), bool)
    for i, item in enumerate(item_ids):
      row = sid_table.item_row.get(item)
      if row is None:
        skips["item_without_sid"] += 1
        continue
      codes[i] = sid_table.item_codes[row]
      has_sid[i] = True
    users = world.users
    user_ids = tuple(str(r["user_id"]) for r in users)
    user_index = {x: i for i, x in enumerate(user_ids)}
    gender, genders = _factorise([str(r.get("gender", "unknown")) for r in users])
    age, ages = _factorise([str(r.get("age_bucket", "unknown")) for r in users])

    recall = sorted(
      world.recall, key=lambda r: (int(r["time_index"]), str(r["session_id"]))
    )
    n, n_s = len(item_ids), len(recall)
    s_user = np.asarray([user_index[str(r["user_id"])] for r in recall], np.int32)
    s_train = np.asarray([r["split"] == "train" for r in recall], bool)
    query_rows = [str(r["query"]) for r in recall]

    def flat(field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
      # (session, item row) per listed id, in log order, and the list lengths.
      lists = [r[field] for r in recall]
      lengths = np.fromiter(map(len, lists), np.int64, n_s)
      rows = np.fromiter(
        (item_index[x] for ids in lists for x in ids), np.int64, int(lengths.sum())
      )
      return np.repeat(np.arange(n_s, dtype=np.int64), lengths), rows, lengths

    shown_s, shown_i, shown_n = flat("impressed_item_ids")
    clk_s, clk_i, clk_n = flat("clicked_item_ids")
    pur_s, pur_i, _ = flat("purchased_item_ids")
    # The sessions' distinct shown / clicked / purchased items as sorted keys.
    shown = np.unique(shown_s * n + shown_i)
    clk = np.unique(clk_s * n + clk_i)
    pur = np.unique(pur_s * n + pur_i)
    if n_s:  # (session, item) pairs clicked but not shown, bought but not clicked
      skips["click_not_impressed"] += int((~cls.member(shown, clk)).sum())
      skips["order_not_clicked"] += int((~cls.member(clk, pur)).sum())
    imp_key = shown_s * n + shown_i
    starts = np.cumsum(shown_n) - shown_n
    imp_p = np.arange(shown_i.size, dtype=np.int64) - np.repeat(starts, shown_n) + 1
    s_l3 = _session_modes(
      n_s, l3, clk_s, clk_i, shown_s[clk_n[shown_s] == 0], shown_i[clk_n[shown_s] == 0]
    )
    # Train purchases per user: one per (session, item), counted over sessions.
    pur_sess, pur_item = (pur // n, pur % n) if n else (pur, pur)
    train_pur = s_train[pur_sess]
    upk, upc = np.unique(
      s_user[pur_sess[train_pur]].astype(np.int64) * n + pur_item[train_pur],
      return_counts=True,
    )
    s_query, queries = _factorise(query_rows)
    l3_to_l1 = np.full(int(l3.max()) + 1 if l3.size else 0, -1, np.int32)
    l3_to_l1[l3] = l1
    s_l1 = np.where(s_l3 >= 0, l3_to_l1[np.maximum(s_l3, 0)], -1).astype(np.int32)
    return cls(
      item_ids=item_ids,
      item_l1=l1,
      item_l3=l3,
      item_codes=codes,
      has_sid=has_sid,
      code_ranges=tuple(sid_table.code_ranges),
      user_ids=user_ids,
      user_gender=gender,
      user_age=age,
      genders=genders,
      ages=ages,
      session_ids=tuple(str(r["session_id"]) for r in recall),
      session_user=s_user,
      session_time=np.asarray([int(r["time_index"]) for r in recall], np.int64),
      session_train=s_train,
      session_query=s_query,
      session_l3=s_l3,
      session_l1=s_l1,
      queries=queries,
      imp_session=shown_s.astype(np.int32),
      imp_item=shown_i.astype(np.int32),
      imp_pos=imp_p.astype(np.int32),
      imp_click=cls.member(clk, imp_key),
      imp_order=cls.member(pur, imp_key),
      purchased_keys=pur,
      clicked_keys=clk,
      impressed_keys=shown,
      user_train_purchase_keys=upk,
      user_train_purchase_counts=upc.astype(np.int32),
      skips=skips,
      recall_rows=tuple(recall),
    )
