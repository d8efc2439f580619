"""The evaluation set: test sessions with a click or an order, with slices.

One row per test-split session that has at least one clicked or purchased
item (rows in the order ``data.museq.MuSeqIndex`` uses: by (time_index,
session_id)); the other test sessions are counted in
``skips["test_session_without_target"]``. A row carries both target sets:
the click set is the rows with ``has_click`` and targets ``click_targets``;
the order set the rows with
``has_order`` and targets ``order_targets``. These are exactly the sessions
and targets of ``data.tasks``' ``eval_click`` / ``eval_order`` examples
(targets = every clicked / purchased item that has a SID, in log order), so a
model decoded once per row is scored on both sets.

Item rows index ``EvalSet.item_ids`` (the world's items.jsonl order, which is
also the SID artefact's order).

Slices (thresholds in ``SliceConfig``, see docs/EVAL.md):
  * query frequency, from train-split session counts per query: queries are
    ranked by count (descending); ``head`` holds the most frequent queries
    that together make up ``head_share`` of train sessions, ``torso`` the next
    ``torso_share``; the rest, and queries never seen in train, are ``tail``.
    All queries with the count at a boundary fall on the more frequent side.
  * user: ``cold`` when the user has no train-split session, else ``warm``.
  * item: ``cold`` when no target item of the row (for that set) has a
    train-split click, else ``warm``.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from onesearch_jax.world import reader, relevance_match

KINDS = ("click", "order")
QUERY_FREQ = ("head", "torso", "tail")
COLD_WARM = ("cold", "warm")


@dataclasses.dataclass(frozen=True)
class SliceConfig:
  """Query-frequency slice thresholds (shares of train sessions)."""

  head_share: float = 0.5
  torso_share: float = 0.3

  def __post_init__(self):
    if not (0 < self.head_share and 0 <= self.torso_share) or (
      self.head_share + self.torso_share > 1
    ):
      raise ValueError(
        f"SliceConfig: head_share {self.head_share} and torso_share "
        f"{self.torso_share} must be positive with sum <= 1"
      )


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Test sessions with a click or an order (E rows).

  Attributes:
    item_ids: N item ids (item row = index).
    queries, user_ids, session_ids: E strings each.
    times: [E] int64 time_index.
    has_click, has_order: [E] bool.
    click_targets, order_targets: [E, T] int32 item rows (-1 pad).
    rel_items, rel_grades: [E, R] int32 item rows / grades 0..3 of the
      query's labelled items (-1 / 0 pad), from the relevance table.
    query_freq: [E] str in QUERY_FREQ.
    user_slice: [E] str in COLD_WARM.
    click_item_slice, order_item_slice: [E] str in COLD_WARM.
    train_query_counts: query -> train sessions (the slice source).
    skips: reason -> count of things left out (reported, never silent).
    item_categories: N level-1 category ids of the items (the query
      sensitivity pairs, ``eval.sensitivity``); () when unknown.
  """

  item_ids: tuple[str, ...]
  queries: tuple[str, ...]
  user_ids: tuple[str, ...]
  session_ids: tuple[str, ...]
  times: np.ndarray
  has_click: np.ndarray
  has_order: np.ndarray
  click_targets: np.ndarray
  order_targets: np.ndarray
  rel_items: np.ndarray
  rel_grades: np.ndarray
  query_freq: np.ndarray
  user_slice: np.ndarray
  click_item_slice: np.ndarray
  order_item_slice: np.ndarray
  train_query_counts: Mapping[str, int]
  skips: Mapping[str, int]
  item_categories: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.queries)

  def mask(self, kind: str) -> np.ndarray:
    """[E] bool: the rows of the click or order set."""
    return {"click": self.has_click, "order": self.has_order}[_kind(kind)]

  def targets(self, kind: str) -> np.ndarray:
    return {"click": self.click_targets, "order": self.order_targets}[_kind(kind)]

  def item_slice(self, kind: str) -> np.ndarray:
    return {"click": self.click_item_slice, "order": self.order_item_slice}[_kind(kind)]

  def slices(self, kind: str) -> dict[str, np.ndarray]:
    """Slice family -> [E] labels for one set (all rows; mask separately)."""
    return {
      "query_freq": self.query_freq,
      "user": self.user_slice,
      "item": self.item_slice(kind),
    }

  def rows_of(self, kind: str) -> np.ndarray:
    """Row indices of one set, in order (== data.tasks eval_{kind} order)."""
    return np.flatnonzero(self.mask(kind))


def _kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"eval set kind must be one of {KINDS}, got {kind!r}")
  return kind


def _pad(lists: Sequence[Sequence[int]], fill: int, dtype) -> np.ndarray:
  width = max([len(x) for x in lists] + [1])
  out = np.full((len(lists), width), fill, dtype)
  for i, x in enumerate(lists):
    out[i, : len(x)] = x
  return out


def query_frequency_slices(
  counts: Mapping[str, int], config: SliceConfig
) -> dict[str, str]:
  """Query -> head/torso/tail for every query with a train count > 0."""
  total = sum(counts.values())
  out: dict[str, str] = {}
  if total == 0:
    return out
  distinct = sorted(set(counts.values()), reverse=True)
  by_count = collections.defaultdict(list)
  for q, c in counts.items():
    by_count[c].append(q)
  cum = 0
  head_end = config.head_share * total
  torso_end = (config.head_share + config.torso_share) * total
  for c in distinct:
    label = "head" if cum < head_end else ("torso" if cum < torso_end else "tail")
    for q in by_count[c]:
      out[q] = label
    cum += c * len(by_count[c])
  return out


@dataclasses.dataclass(frozen=True)
class EvalTables:
  """The world tables evaluation reads (the big ranking table is not read)."""

  path: str
  items: list[dict]
  recall: list[dict]
  relevance: list[dict]


def read_eval_tables(world: str | os.PathLike | reader.World) -> EvalTables:
  """Items, recall and relevance of a world, each row checked by the schema
  reader (``world.reader.iter_rows``; a bad row raises naming file and line)."""
  if isinstance(world, EvalTables):
    return world
  if isinstance(world, reader.World):
    return EvalTables(world.path, world.items, world.recall, world.relevance)
  directory = os.fspath(world)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: not a world directory")
  tables = {}
  for name in ("items", "recall", "relevance"):
    path = os.path.join(directory, f"{name}.jsonl")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: missing (a world needs {name}.jsonl)")
    tables[name] = [row for _, row in reader.iter_rows(path, name)]
  return EvalTables(directory, **tables)


def build_eval_set(
  world: str | os.PathLike | reader.World | EvalTables,
  *,
  sid_items: Sequence[str] | None = None,
  sid_queries: Sequence[str] | None = None,
  slice_config: SliceConfig | None = None,
) -> EvalSet:
  """Builds the evaluation set of a world's test split.

  Args:
    world: a world directory (read with ``read_eval_tables``), a loaded
      ``World`` or ``EvalTables``.
    sid_items: item ids that have a SID (the artefact's); targets outside it
      are dropped and counted, like ``data.tasks``. None: every world item.
    sid_queries: queries that have a SID; sessions whose query is outside it
      are dropped and counted, like ``data.tasks``. None: every query.
    slice_config: query-frequency thresholds.

  Returns:
    The EvalSet.
  """
  slice_config = slice_config or SliceConfig()
  world = read_eval_tables(world)
  item_ids = tuple(str(r["item_id"]) for r in world.items)
  row_of = {i: n for n, i in enumerate(item_ids)}
  with_sid = set(item_ids) if sid_items is None else set(map(str, sid_items))
  query_ok = None if sid_queries is None else set(sid_queries)
  skips: collections.Counter = collections.Counter()

  train_q: collections.Counter = collections.Counter()
  train_users: set[str] = set()
  train_clicked: set[str] = set()
  for r in world.recall:
    if r["split"] == "train":
      train_q[r["query"]] += 1
      train_users.add(str(r["user_id"]))
      train_clicked.update(r["clicked_item_ids"])
  freq = query_frequency_slices(train_q, slice_config)

  # Relevance labels: by item_id when present, else by title
  # (world.relevance_match: whitespace-normalised title, then brand + seller).
  match = relevance_match.match_relevance(world.items, world.relevance)
  labels: dict[str, dict[int, int]] = collections.defaultdict(dict)
  for r, item_id, outcome in zip(
    world.relevance, match.item_ids, match.outcomes, strict=True
  ):
    if item_id is None:
      unmatched = outcome == "no_title_match"
      skips[
        "relevance_item_unmatched" if unmatched else "relevance_item_ambiguous"
      ] += 1
      continue
    if item_id not in row_of:
      skips["relevance_item_not_in_items"] += 1
      continue
    row = row_of[item_id]
    q = labels[r["query"]]
    q[row] = max(q.get(row, 0), int(r["score"]))  # repeated label: keep the highest

  ordered = sorted(
    (r for r in world.recall if r["split"] == "test"),
    key=lambda r: (int(r["time_index"]), str(r["session_id"])),
  )
  cols = collections.defaultdict(list)
  for r in ordered:
    targets = {}
    for kind, field in (("click", "clicked_item_ids"), ("order", "purchased_item_ids")):
      seen, keep = set(), []
      for i in r[field]:
        if i not in with_sid or i not in row_of:
          skips[f"{kind}_target_without_sid"] += 1
          continue
        if i in seen:
          skips[f"{kind}_target_repeated"] += 1
          continue
        seen.add(i)
        keep.append(i)
      targets[kind] = keep
    if not targets["click"] and not targets["order"]:
      skips["test_session_without_target"] += 1
      continue
    if query_ok is not None and r["query"] not in query_ok:
      skips["session_query_without_sid"] += 1
      continue
    q = str(r["query"])
    cols["queries"].append(q)
    cols["user_ids"].append(str(r["user_id"]))
    cols["session_ids"].append(str(r["session_id"]))
    cols["times"].append(int(r["time_index"]))
    for kind in KINDS:
      t = targets[kind]
      cols[f"{kind}_targets"].append([row_of[i] for i in t])
      cold = bool(t) and not any(i in train_clicked for i in t)
      cols[f"{kind}_item_slice"].append("cold" if cold else "warm")
    rel = sorted(labels.get(q, {}).items())
    cols["rel_items"].append([i for i, _ in rel])
    cols["rel_grades"].append([g for _, g in rel])
    cols["query_freq"].append(freq.get(q, "tail"))
    cols["user_slice"].append("warm" if str(r["user_id"]) in train_users else "cold")
  click_t = _pad(cols["click_targets"], -1, np.int32)
  order_t = _pad(cols["order_targets"], -1, np.int32)
  return EvalSet(
    item_ids=item_ids,
    queries=tuple(cols["queries"]),
    user_ids=tuple(cols["user_ids"]),
    session_ids=tuple(cols["session_ids"]),
    times=np.asarray(cols["times"], np.int64),
    has_click=(click_t >= 0).any(axis=1),
    has_order=(order_t >= 0).any(axis=1),
    click_targets=click_t,
    order_targets=order_t,
    rel_items=_pad(cols["rel_items"], -1, np.int32),
    rel_grades=_pad(cols["rel_grades"], 0, np.int32),
    query_freq=np.asarray(cols["query_freq"], dtype=object).astype(str),
    user_slice=np.asarray(cols["user_slice"], dtype=object).astype(str),
    click_item_slice=np.asarray(cols["click_item_slice"], dtype=object).astype(str),
    order_item_slice=np.asarray(cols["order_item_slice"], dtype=object).astype(str),
    train_query_counts=dict(train_q),
    skips={k: v for k, v in sorted(skips.items()) if v},
    item_categories=tuple(str(r.get("category_level1_id") or "") for r in world.items),
  )
