"""evaluate_rankings / write_results on a hand-built set; baselines end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onesearch_jax.eval import evaluate, examples


def _hand_set() -> examples.EvalSet:
  # 4 sessions over 6 items; rows 0-2 have clicks, rows 1 and 3 orders.
  s = lambda *v: np.asarray(v)  # noqa: E731
  return examples.EvalSet(
    item_ids=tuple(f"i{n}" for n in range(6)),
    queries=("a", "b", "a", "c"),
    user_ids=("u0", "u1", "u2", "u0"),
    session_ids=("s0", "s1", "s2", "s3"),
    times=s(0, 1, 2, 3),
    has_click=s(True, True, True, False),
    has_order=s(False, True, False, True),
    click_targets=s([0, -1], [2, 3], [5, -1], [-1, -1]),
    order_targets=s([-1, -1], [3, -1], [-1, -1], [4, -1]),
    rel_items=s([0, 1], [2, -1], [0, 1], [-1, -1]),
    rel_grades=s([3, 1], [2, 0], [3, 1], [0, 0]),
    query_freq=s("head", "torso", "head", "tail"),
    user_slice=s("warm", "cold", "warm", "warm"),
    click_item_slice=s("warm", "warm", "cold", "warm"),
    order_item_slice=s("warm", "cold", "warm", "warm"),
    train_query_counts={"a": 3, "b": 1},
    skips={},
  )


def test_evaluate_rankings_hand_computed(tmp_path):
  es = _hand_set()
  rankings = {
    "perfect": np.asarray([[0, 1, 2], [2, 3, 1], [5, 0, 1], [4, 0, 1]]),
    "bad": np.asarray([[5, -1, -1], [0, 1, -1], [1, 2, 3], [0, 1, 2]]),
  }
  res = evaluate.evaluate_rankings(
    es, rankings, ks=(1, 3), diagnostics={"perfect": {"valid_sid_rate": 1.0}}
  )
  assert res["sets"] == {"click": 3, "order": 2}
  p, b = res["systems"]["perfect"], res["systems"]["bad"]
  assert p["click"]["all"]["hr@1"] == 1.0 and p["order"]["all"]["recall@3"] == 1.0
  # Click recall@1: row 0 1/1, row 1 1/2, row 2 1/1.
  assert p["click"]["all"]["recall@1"] == pytest.approx(2.5 / 3)
  # bad: click rows -> row 0 miss, row 1 miss, row 2 miss; order row 1 miss, row 3 miss.
  assert b["click"]["all"]["hr@3"] == 0.0 and b["order"]["all"]["hr@3"] == 0.0
  # Slices: click set, torso = row 1 only.
  assert p["click"]["query_freq=torso"]["n"] == 1
  assert p["click"]["query_freq=torso"]["recall@1"] == 0.5
  assert p["click"]["item=cold"]["n"] == 1 and p["order"]["item=cold"]["n"] == 1
  assert p["click"]["user=cold"]["n"] == 1 and p["order"]["query_freq=tail"]["n"] == 1
  # Graded NDCG: rows 0 and 2 share query "a" (labels 0:3, 1:1); "bad" row 2
  # ranks 1 then (unlabelled) 2, 3 -> DCG = 1; IDCG = 7 + 1/log2(3).
  ideal = 7 + 1 / np.log2(3)
  row0 = 0.0  # item 5 is unlabelled, then padding
  row1 = 0.0  # "b" labels only item 2, which bad[1] = [0, 1, -1] misses
  row2 = 1 / ideal
  assert b["click"]["all"]["n_graded"] == 3
  assert b["click"]["all"]["gndcg@3"] == pytest.approx(
    (row0 + row1 + row2) / 3, rel=1e-5
  )
  assert p["diagnostics"] == {"valid_sid_rate": 1.0} and "diagnostics" not in b

  paths = evaluate.write_results(res, tmp_path)
  md = open(paths["md"]).read()
  assert "| perfect | 1.0000 |" in md and "| bad | 0.0000 |" in md
  assert "## Slices, click set" in md and "## Beam diagnostics" in md
  assert "| perfect | query_freq=torso | 1 | 1 |" in md
  loaded = json.load(open(paths["json"]))
  # Order set: row 1's target 3 is at rank 2, row 3's target 4 at rank 1.
  assert loaded["systems"]["perfect"]["order"]["all"]["hr@1"] == 0.5
  assert loaded["systems"]["perfect"]["order"]["all"]["mrr@3"] == 0.75
  assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rankings_rejects_bad_shapes():
  es = _hand_set()
  with pytest.raises(ValueError, match="shape"):
    evaluate.evaluate_rankings(es, {"x": np.zeros((3, 5), np.int32)}, ks=(1,))
  with pytest.raises(ValueError, match="columns"):
    evaluate.evaluate_rankings(es, {"x": np.zeros((4, 2), np.int32)}, ks=(3,))
  with pytest.raises(ValueError, match="item row 6"):
    evaluate.evaluate_rankings(es, {"x": np.full((4, 3), 6)}, ks=(1,))


def test_remap_rows():
  rows = np.asarray([[2, 0, -1], [1, 1, 2]])
  got = evaluate.remap_rows(rows, ["a", "b", "c"], ["c", "x", "a"])
  assert got.tolist() == [[0, 2, -1], [-1, -1, 0]]


@pytest.mark.slow
def test_run_baselines_end_to_end_tiny_world(tiny_world_dir, tiny_sid_build, tmp_path):
  from onesearch_jax.khqe import artefact

  _, sid_dir, _, _ = tiny_sid_build  # the session's fast build (tests/conftest.py)
  art = artefact.load(sid_dir)
  es = examples.build_eval_set(
    tiny_world_dir, sid_items=art.item_ids, sid_queries=art.query_texts
  )
  timings = {}
  rankings = evaluate.run_baselines(
    tiny_world_dir, sid_dir, eval_set=es, k_max=100, log=None, timings=timings
  )
  assert set(rankings) == {"bm25", "dense", "mca", "sidq_pop", "query_memory"}
  for r in rankings.values():
    assert r.shape == (len(es), 100) and r.dtype == np.int32
  res = evaluate.evaluate_rankings(es, rankings, ks=(10, 100))
  for name in rankings:
    hr = res["systems"][name]["click"]["all"]["hr@100"]
    assert 0.1 < hr <= 1.0, (name, hr)
  # Text and cluster rankings follow the query: far from query-blind.
  assert res["systems"]["bm25"]["qsens@10"] < 0.2
  assert res["systems"]["sidq_pop"]["qsens@10"] < 0.5
  loss0, loss1 = timings["mca_train_logloss"]
  assert loss1 < loss0
  paths = evaluate.write_results(res, tmp_path / "eval")
  assert "| mca |" in open(paths["md"]).read()


def test_ranking_from_beams_and_combine_set_rankings():
  from onesearch_jax.eval.sid_items import SidItemIndex

  es = _hand_set()
  # The index lists the items in another order than the eval set.
  ids = ["i5", "i4", "i3", "i2", "i1", "i0"]
  codes = np.asarray([[0], [1], [1], [2], [3], [3]])
  ix = SidItemIndex.from_arrays(ids, codes, np.asarray([0, 2, 1, 0, 0, 5.0]))
  beams = np.asarray([[3, 1, 1], [0, -1, 2], [-1, -1, -1], [2, 2, 2]])
  rows, dups = evaluate.ranking_from_beams(ix, beams, es, k_max=4)
  # SID 3 -> i0 (pop 5), i1; SID 1 -> i4 (pop 2), i3; SID 0 -> i5; SID 2 -> i2.
  assert rows.tolist() == [[0, 1, 4, 3], [5, 2, -1, -1], [-1] * 4, [2, -1, -1, -1]]
  assert dups.tolist() == [1, 0, 0, 2]
  click = np.asarray([[0, 1], [2, 3], [5, 4]])  # rows 0, 1, 2
  order = np.asarray([[2, 3], [4, 0]])  # rows 1, 3
  got, differ = evaluate.combine_set_rankings(es, {"click": click, "order": order})
  assert got.tolist() == [[0, 1], [2, 3], [5, 4], [4, 0]] and differ == 0
  order[0] = [3, 2]
  assert evaluate.combine_set_rankings(es, {"click": click, "order": order})[1] == 1
  with pytest.raises(ValueError, match="order set 2"):
    evaluate.combine_set_rankings(es, {"order": click})
