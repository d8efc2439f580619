"""The public KuaiSearch release format read as it is: rank.jsonl, integer
ids, empty lists, category-3 0/UNKNOWN, statistics objects, relevance rows
without ids, sample files that do not reference each other
(tests/testdata/kuaisearch_release*/README.md lists what each row tests)."""

from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from onesearch_jax.eval import examples
from onesearch_jax.khqe import artefact, build, encoder, quantizer, text_vocab
from onesearch_jax.world import reader, relevance_match, stats
from onesearch_jax.world.ranking_statistics import ranking_statistics

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "tests" / "testdata"
RELEASE = TESTDATA / "kuaisearch_release"
CONSISTENT = TESTDATA / "kuaisearch_release_consistent"
RUN_GIN = TESTDATA / "kuaisearch_release_run.gin"

ID_FIELDS = {
  "users": ("user_id",),
  "items": (
    "item_id",
    "brand_id",
    "seller_id",
    "category_level1_id",
    "category_level2_id",
    "category_level3_id",
  ),
  "recall": ("user_id", "session_id"),
  "ranking": ("user_id", "session_id", "target_item_id"),
}
ID_LISTS = {
  "recall": ("impressed_item_ids", "clicked_item_ids", "purchased_item_ids"),
  "ranking": ("recently_clicked_item_ids", "recently_purchased_item_ids"),
}


def _raw(directory: pathlib.Path, name: str) -> list[dict]:
  with open(directory / name, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def release():
  return reader.load_world(RELEASE)


def test_fixture_has_the_release_shapes():
  """The fixture itself: no manifest, rank.jsonl, JSON integers for ids."""
  assert not (RELEASE / "manifest.json").exists()
  assert not (RELEASE / "ranking.jsonl").exists()
  for name, fields in ID_FIELDS.items():
    file = "rank.jsonl" if name == "ranking" else f"{name}.jsonl"
    for row in _raw(RELEASE, file):
      for field in fields:
        assert type(row[field]) is int, (file, field)
      for field in ID_LISTS.get(name, ()):
        assert all(type(v) is int for v in row[field]), (file, field)
  for row in _raw(RELEASE, "relevance.jsonl"):
    assert "item_id" not in row and type(row["score"]) is int


def test_dangling_rows_dropped_and_counted_by_reason(release):
  # Hand count (README): recall rows 2, 6 reference unknown items, rows 3, 5
  # unknown users; rank rows 4, 6 unknown items, rows 5, 8 unknown users.
  assert release.report.dangling == collections.Counter(
    {
      ("recall", "unknown_item_id"): 2,
      ("recall", "unknown_user_id"): 2,
      ("ranking", "unknown_item_id"): 2,
      ("ranking", "unknown_user_id"): 2,
    }
  )
  assert release.report.total_skipped == 0
  assert release.counts == dict(users=3, items=8, recall=3, ranking=4, relevance=8)
  # Every line is kept or counted.
  for name, file in (("recall", "recall.jsonl"), ("ranking", "rank.jsonl")):
    lines = len(_raw(RELEASE, file))
    assert release.counts[name] + release.report.dangling_in(name) == lines
  assert release.report.dangling_examples[("ranking", "unknown_item_id")] == [
    "rank.jsonl:4: field 'target_item_id': unknown item id \"777000000001\" "
    "(not in items.jsonl)",
    "rank.jsonl:6: field 'recently_clicked_item_ids[0]': unknown item id "
    '"888000000001" (not in items.jsonl)',
  ]
  assert [r["session_id"] for r in release.recall] == ["9001001", "9001004", "9001007"]


def test_ids_are_decimal_strings(release):
  for name, fields in ID_FIELDS.items():
    for row in release.table(name):
      for field in fields:
        assert isinstance(row[field], str) and row[field].isdigit(), (name, field)
      for field in ID_LISTS.get(name, ()):
        assert all(isinstance(v, str) for v in row[field]), (name, field)
  raw_items = _raw(RELEASE, "items.jsonl")
  assert [r["item_id"] for r in release.items] == [str(r["item_id"]) for r in raw_items]
  phone = next(r for r in release.items if r["item_id"] == "634501288716")
  assert (phone["category_level3_id"], phone["category_level3_name"]) == (
    "0",
    "UNKNOWN",
  )
  flask = next(r for r in release.recall if r["session_id"] == "9001004")
  assert flask["clicked_item_ids"] == [] and flask["purchased_item_ids"] == []
  assert flask["impressed_item_ids"] == ["634501288717", "634501288718"]
  assert flask["time_index"] == 14400


def test_integer_and_string_ids_are_the_same_id(tmp_path):
  """A user written as "2718281" in users.jsonl and as 2718281 in
  recall.jsonl is one user (our own layout, so dangling ids are errors)."""
  for name in ("items.jsonl", "relevance.jsonl"):
    shutil.copy(RELEASE / name, tmp_path / name)
  users = _raw(RELEASE, "users.jsonl")
  for row in users:
    row["user_id"] = str(row["user_id"])
  (tmp_path / "users.jsonl").write_text(
    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in users), encoding="utf-8"
  )
  recall = _raw(RELEASE, "recall.jsonl")[:1]  # user 2718281, known items
  (tmp_path / "recall.jsonl").write_text(
    json.dumps(recall[0], ensure_ascii=False) + "\n", encoding="utf-8"
  )
  (tmp_path / "ranking.jsonl").write_text("", encoding="utf-8")
  world = reader.load_world(tmp_path)
  assert world.recall[0]["user_id"] == "2718281"
  assert world.report.dangling == collections.Counter()
  # In our layout an unknown id is an error, with file, line and field.
  recall.append(_raw(RELEASE, "recall.jsonl")[2])  # user 3141592
  (tmp_path / "recall.jsonl").write_text(
    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recall), encoding="utf-8"
  )
  with pytest.raises(
    reader.SchemaError,
    match=r'^recall\.jsonl:2: field \'user_id\': unknown user id "3141592"',
  ):
    reader.load_world(tmp_path)


def test_dangling_error_policy_on_the_release(release):
  with pytest.raises(
    reader.SchemaError,
    match=r"^recall\.jsonl:2: field 'impressed_item_ids\[1\]': unknown item id",
  ):
    reader.load_world(RELEASE, dangling="error")
  skipped = reader.load_world(RELEASE, dangling="error", on_error="skip")
  assert skipped.report.skipped == release.report.dangling
  assert skipped.counts == release.counts
  with pytest.raises(ValueError, match="dangling must be one of"):
    reader.load_world(RELEASE, dangling="keep")


def test_statistics_objects_parsed(release):
  first = release.ranking[0]  # rank.jsonl:1
  assert first["user_statistical_features"] == {
    "user_show_cnt_30d_hist": 320.0,
    "user_click_cnt_30d_hist": 41.0,
    "user_order_cnt_30d_hist": 3.0,
    "user_gmv_30d_hist": 356.8,
  }
  assert first["target_item_statistical_features"]["item_click_cnt_30d_hist"] == 1204.0
  st = release.statistics()
  assert st.user_names == (
    "user_click_cnt_30d_hist",
    "user_gmv_30d_hist",
    "user_order_cnt_30d_hist",
    "user_show_cnt_30d_hist",
  )
  assert st.item_names == (
    "item_click_cnt_30d_hist",
    "item_order_cnt_30d_hist",
    "item_show_cnt_30d_hist",
  )
  assert st.user.shape == (4, 4) and st.item.shape == (4, 3)
  assert st.user.dtype == np.float32
  np.testing.assert_allclose(st.user[0], [41.0, 356.8, 3.0, 320.0], rtol=1e-6)
  # Kept rows 1, 2, 3, 7 of rank.jsonl: item show counts by hand.
  np.testing.assert_array_equal(st.item[:, 2], [15230.0, 8800.0, 2100.0, 98000.0])
  # rank.jsonl:3 writes its price as the integer 199: read as a float field.
  assert release.ranking[2]["target_item_price"] == 199
  assert release.ranking[0]["search_entrance"] == "mall"


def test_statistics_missing_key_is_nan():
  rows = [
    {"user_statistical_features": {"a": 1.0, "b": 2.0}},
    {"user_statistical_features": {"b": 5}, "target_item_statistical_features": {}},
  ]
  st = ranking_statistics(rows)
  assert st.user_names == ("a", "b") and st.item_names == ()
  assert st.user[0].tolist() == [1.0, 2.0]
  assert math.isnan(st.user[1, 0]) and st.user[1, 1] == 5.0
  assert st.item.shape == (2, 0)


def test_relevance_matched_by_title(release):
  # Hand-checked (README): rows 1, 4 (whitespace differs), 7 by title; row 2
  # shares its title with two items and the brand/seller pick one; row 3
  # shares it with two items of the same brand and seller; 5, 6, 8 match none.
  assert release.report.relevance == collections.Counter(
    {
      "by_title": 3,
      "by_title_brand_seller": 1,
      "ambiguous_title": 1,
      "no_title_match": 3,
    }
  )
  assert release.relevance_match.item_ids == (
    "634501288712",
    "634501288714",
    None,
    "634501288715",
    None,
    None,
    "634501288719",
    None,
  )
  assert all("item_id" not in r for r in release.relevance)  # rows as in the file
  P = relevance_match.RelevancePair
  assert release.relevance_pairs == (
    P("保温杯 大容量", "【直播专享】保温杯 316不锈钢 大容量 500ml", 3),
    P("手机", "华为 Mate 60 Pro 12GB+512GB 雅川青", 1),
    P("连衣裙 夏", "【新品】雪纺连衣裙 中长款 气质V领", 2),
    P("保温杯", "【限时秒杀】不锈钢保温饭盒 三层 便携", 0),
  )
  assert "relevance rows tied to items: ambiguous_title=1, by_title=3" in (
    release.report.format()
  )


def test_relevance_rule_on_hand_rows():
  items = [
    {"item_id": "1", "item_title": "A\u3000 b", "brand_name": "x", "seller_name": "s"},
    {"item_id": "2", "item_title": "【c】", "brand_name": "x", "seller_name": "s"},
  ]
  rel = {"query": "q", "brand": "x", "seller_name": "s", "score": 2}
  match = relevance_match.match_relevance(
    items,
    [
      dict(rel, item_title=" A b "),  # whitespace only differs
      dict(rel, item_title="[c]"),  # half-width brackets: not the same title
      dict(rel, item_title="whatever", item_id="9"),  # its own id wins
      dict(rel, item_title="【c】", item_id=""),  # empty id: matched by title
    ],
  )
  assert match.item_ids == ("1", None, "9", "2")
  assert match.outcomes == ("by_title", "no_title_match", "by_item_id", "by_title")
  assert match.pairs == (relevance_match.RelevancePair("q", "[c]", 2),)


def test_rank_jsonl_and_ranking_jsonl(tmp_path):
  for name in os.listdir(RELEASE):
    shutil.copy(RELEASE / name, tmp_path / name)
  assert reader.table_path(tmp_path, "ranking") == str(tmp_path / "rank.jsonl")
  shutil.copy(RELEASE / "rank.jsonl", tmp_path / "ranking.jsonl")
  with pytest.raises(
    reader.SchemaError,
    match=r"^rank\.jsonl: both ranking\.jsonl and rank\.jsonl exist; keep one$",
  ) as info:
    reader.load_world(tmp_path)
  assert info.value.reason == "ambiguous_file"
  (tmp_path / "ranking.jsonl").unlink()
  (tmp_path / "rank.jsonl").unlink()
  with pytest.raises(
    reader.SchemaError,
    match=r"^ranking\.jsonl: file is missing \(looked for ranking\.jsonl or "
    r"rank\.jsonl\)$",
  ):
    reader.load_world(tmp_path, dangling="drop")


def test_stats_read_rank_jsonl():
  s = stats.compute_stats(RELEASE)
  assert s["ranking_rows"] == 8  # every line: stats do not check references
  assert s["ranking_ctr"] == pytest.approx(4 / 8)


def test_reader_command_prints_counts_by_reason(capsys):
  assert reader.main(["reader", str(RELEASE)]) == 0
  out = capsys.readouterr().out
  assert "users=3, items=8, recall=3, ranking=4, relevance=8" in out
  assert "rows dropped for ids outside this directory: 8" in out
  for line in (
    "  recall: unknown_item_id: 2",
    "  recall: unknown_user_id: 2",
    "  ranking: unknown_item_id: 2",
    "  ranking: unknown_user_id: 2",
  ):
    assert line in out.splitlines()
  assert reader.main(["reader", str(RELEASE), "--dangling=error"]) == 1
  assert "recall.jsonl:2" in capsys.readouterr().err
  assert reader.main(["reader", str(RELEASE), "--dangling=maybe"]) == 2


def test_consistent_fixture_loads_whole():
  world = reader.load_world(CONSISTENT)
  assert world.counts == dict(users=4, items=12, recall=14, ranking=10, relevance=8)
  assert world.report.dangling == collections.Counter()
  assert world.report.total_skipped == 0
  assert world.report.relevance == collections.Counter(
    {"by_title": 7, "no_title_match": 1}
  )


def test_eval_set_labels_by_title():
  es = examples.build_eval_set(CONSISTENT)
  # Test sessions with a click: 9100011, 9100012, 9100013 (9100014 has none).
  assert es.session_ids == ("9100011", "9100012", "9100013")
  assert es.skips["relevance_item_unmatched"] == 1
  items = [json.loads(x)["item_id"] for x in open(CONSISTENT / "items.jsonl")]
  row = {str(i): n for n, i in enumerate(items)}
  labels = dict(zip(es.rel_items[1].tolist(), es.rel_grades[1].tolist(), strict=False))
  labels.pop(-1, None)
  # "保温杯 大容量": relevance rows 4 (score 2) and 5 (score 3), by title.
  assert labels == {row["720010011"]: 2, row["720010010"]: 3}


SID_CFG = build.BuildConfig(
  vocab=text_vocab.VocabConfig(vocab_size=600),
  encoder=encoder.EncoderConfig(dim=32, hidden_dim=64, max_len=24),
  train=encoder.EncoderTrainConfig(steps=10, batch_size=16),
  quantizer=quantizer.QuantizerConfig(
    levels=(4, 2, 2), opq_codes=4, n_iter=5, opq_iter=5
  ),
  keywords=build.keywords_lib.KeywordConfig(min_pv=1),
  variants=("+opq",),
)


def test_sid_build_on_the_release_sample(tmp_path):
  summary = build.build_sids(RELEASE, tmp_path, SID_CFG)
  art = artefact.load(tmp_path, summary.content_hash)
  # Items stand on their own: all 8 get a SID; queries come from the kept
  # recall/rank rows (3 distinct).
  assert list(art.item_ids) == [str(r["item_id"]) for r in _raw(RELEASE, "items.jsonl")]
  assert sorted(art.query_texts) == sorted(["碎花连衣裙", "保温杯", "小米手机"])
  assert sum(len(v) for v in art.sid_to_items().values()) == 8


@pytest.mark.slow  # ~65-80 s on 2 shared CPU cores: one run.py process
def test_run_py_on_the_consistent_release_fixture(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device (conftest's 8 only slow compiles)
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  wd = tmp_path / "wd"
  cmd = [
    sys.executable,
    str(ROOT / "run.py"),
    f"--world_dir={CONSISTENT}",
    f"--gin_file={RUN_GIN}",
    f"--workdir={wd}",
  ]
  proc = subprocess.run(
    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "relevance rows tied to items: by_title=7, no_title_match=1" in proc.stdout
  results = json.loads((wd / "eval" / "results.json").read_text(encoding="utf-8"))
  assert results["sets"] == {"click": 3, "order": 1}  # hand count, see above
  for name, system in results["systems"].items():
    hr = system["click"]["all"]["hr@4"]
    assert 0.0 <= hr <= 1.0, name
  assert not (wd / "world").exists()  # the real world is validated, not simulated
