"""PARS fixtures: a hand-built three-item world and its SID table."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.world.reader import SkipReport, World


def _item(item_id, l1, l3):
  return {
    "item_id": item_id,
    "item_title": f"title {item_id}",
    "category_level1_id": l1,
    "category_level3_id": l3,
  }


def _session(sid, user, t, split, shown, clicked, bought, query="red dress"):
  return {
    "user_id": user,
    "session_id": sid,
    "query": query,
    "impressed_item_ids": shown,
    "clicked_item_ids": clicked,
    "purchased_item_ids": bought,
    "time_index": t,
    "split": split,
  }


def hand_world() -> World:
  """Items A, B (category X) and C (category Y); users u1, u2.

  s1 (u1, train): shown A B, clicked A, bought A
  s2 (u1, train): shown B C, clicked B
  s3 (u2, test):  shown A
  """
  items = [_item("A", "L1x", "X"), _item("B", "L1x", "X"), _item("C", "L1y", "Y")]
  users = [
    {"user_id": "u1", "gender": "female", "age_bucket": "18-23"},
    {"user_id": "u2", "gender": "male", "age_bucket": "50+"},
  ]
  recall = [
    _session("s1", "u1", 10, "train", ["A", "B"], ["A"], ["A"]),
    _session("s2", "u1", 20, "train", ["B", "C"], ["B"], []),
    _session("s3", "u2", 30, "test", ["A"], [], [], query="phone"),
  ]
  relevance = [{"query": "red dress", "item_id": "A", "score": 3}]
  return World(
    path="", users=users, items=items, recall=recall, ranking=[],
    relevance=relevance, report=SkipReport(), manifest=None,
  )  # fmt: skip


HAND_CODES = np.array([[0, 1, 0, 2, 3], [1, 0, 1, 0, 1], [3, 1, 1, 3, 0]], np.int32)


def hand_table() -> SIDTable:
  t = SIDTable.synthetic(["A", "B", "C"], ["phone", "red dress"], levels=(4, 2, 2),
                         opq_codes=4, n_opq=2)  # fmt: skip
  return SIDTable(
    item_ids=t.item_ids, item_codes=HAND_CODES, query_texts=t.query_texts,
    query_codes=t.query_codes, levels=t.levels, opq_codes=t.opq_codes,
    rq_centroids=t.rq_centroids,
  )  # fmt: skip


@pytest.fixture()
def hand_log() -> InteractionLog:
  return InteractionLog.build(hand_world(), hand_table())


@pytest.fixture()
def world():
  return hand_world()


@pytest.fixture()
def sid_table():
  return hand_table()
