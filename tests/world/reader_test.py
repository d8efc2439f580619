"""Tests of world/reader.py on hand-written rows (never the simulator)."""

from __future__ import annotations

import collections
import copy
import json
import pathlib
import re

import pytest

from onesearch_jax.world import reader, schema

ZH_DIR = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "kuaisearch_zh"


def _user(uid, city="北京"):
  return {
    "user_id": uid,
    "gender": "female",
    "age_bucket": "18-23",
    "fre_country": "中国",
    "fre_province": city,
    "fre_city": city,
  }


def _item(iid, title, **ext):
  row = {f.name: f"{f.name}_{iid}" for f in schema.ITEMS.fields if f.required}
  row.update(item_id=iid, item_title=title)
  row.update(ext)
  return row


def _session(sid, uid, imp, clk, pur, t=10, split="train", **ext):
  return {
    "user_id": uid,
    "session_id": sid,
    "query": "红色连衣裙女夏季",
    "impressed_item_ids": imp,
    "clicked_item_ids": clk,
    "purchased_item_ids": pur,
    "time_index": t,
    "split": split,
    **ext,
  }


def _ranking(sid, uid, target, **over):
  row = {
    "user_id": uid,
    "session_id": sid,
    "user_fan_number": 3,
    "user_follow_number": 7,
    "time_index": 10,
    "search_entrance": "mall",
    "recently_clicked_item_ids": ["i3"],
    "recently_purchased_item_ids": [],
    "query": "red dress",
    "target_item_id": target,
    "target_item_price": 19.5,
    "is_clicked": 1,
    "is_purchased": 0,
    "user_statistical_features": {"user_show_cnt_30d_hist": 12.0},
    "target_item_statistical_features": {"item_show_cnt_30d_hist": 4},
    "split": "train",
  }
  row.update(over)
  return row


def _relevance(query, title, score, **ext):
  return {
    "query": query,
    "item_title": title,
    "brand": "韩都衣舍",
    "seller_name": "旗舰店",
    "attr_value": "红色,夏季,雪纺",
    "score": score,
    **ext,
  }


def _base() -> dict[str, list]:
  """A small valid world: 2 users, 3 items, 2 sessions, 2+2 other rows."""
  return {
    "users": [_user("u1"), _user("u2", "深圳")],
    "items": [
      _item(
        "i1",
        "【夏季新款】红色连衣裙女夏季雪纺",
        item_price=129.0,
        attributes={"color": "红色", "season": "夏季"},
        publish_time_index=0,
      ),
      _item("i2", "Red summer dress", item_price=59),  # int for a float field
      _item("i3", "蓝月亮洗衣液"),  # no extension fields
    ],
    "recall": [
      _session("s1", "u1", ["i1", "i2", "i3"], ["i1"], ["i1"], search_entrance="mall"),
      _session("s2", "u2", ["i2"], [], [], t=20, split="test"),
    ],
    "ranking": [
      _ranking("s1", "u1", "i1", position=1),
      _ranking("s1", "u1", "i2", is_clicked=0),
    ],
    "relevance": [
      _relevance("红色连衣裙", "【夏季新款】红色连衣裙女夏季雪纺", 3, item_id="i1"),
      _relevance("red dress", "Red summer dress", 0),
    ],
  }


def _write(directory: pathlib.Path, tables, *, manifest=True, extra_lines=None):
  """Writes ``tables`` as jsonl; ``extra_lines`` {table: [raw line]} appended."""
  directory.mkdir(parents=True, exist_ok=True)
  files = {}
  for name in schema.TABLES:
    lines = [json.dumps(r, ensure_ascii=False) for r in tables[name]]
    lines += (extra_lines or {}).get(name, [])
    path = directory / f"{name}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    files[path.name] = reader.file_sha256(path)
  if manifest:
    counts = {n: len(tables[n]) + len((extra_lines or {}).get(n, [])) for n in tables}
    (directory / schema.MANIFEST).write_text(
      json.dumps(
        {
          "schema_version": 1,
          "source": "test",
          "config": {},
          "counts": counts,
          "files": files,
          "content_hash": reader.content_hash(files),
        }
      ),
      encoding="utf-8",
    )
  return directory


# ---------------------------------------------------------------- good input


def test_round_trip_identical(tmp_path):
  tables = _base()
  world = reader.load_world(_write(tmp_path, tables))
  for name in schema.TABLES:
    assert world.table(name) == tables[name], name
  assert world.counts == {
    "users": 2,
    "items": 3,
    "recall": 2,
    "ranking": 2,
    "relevance": 2,
  }
  assert world.report.total_skipped == 0
  assert not world.report.warnings
  assert world.report.manifest_checked
  assert world.manifest["counts"]["items"] == 3
  # Absent optional fields stay absent; ints stay ints.
  assert "item_price" not in world.items[2]
  assert world.items[1]["item_price"] == 59


def test_no_manifest_is_fine_and_reported(tmp_path):
  world = reader.load_world(_write(tmp_path, _base(), manifest=False))
  assert world.manifest is None
  assert not world.report.manifest_checked
  assert "manifest: not verified" in world.report.format()


def test_iter_rows_line_numbers_and_blank_lines(tmp_path):
  path = tmp_path / "users.jsonl"
  rows = [_user("u1"), _user("u2")]
  path.write_text(
    json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n", encoding="utf-8"
  )
  report = reader.SkipReport()
  got = list(reader.iter_rows(path, "users", report=report))
  assert got == [(1, rows[0]), (4, rows[1])]
  assert report.blank_lines["users"] == 2


def test_null_optional_field_means_absent(tmp_path):
  tables = _base()
  tables["items"][2]["item_price"] = None
  tables["relevance"][1]["item_id"] = None
  world = reader.load_world(_write(tmp_path, tables))
  assert world.items[2]["item_price"] is None
  assert world.report.total_skipped == 0


def test_extra_fields_kept_and_reported_once(tmp_path):
  tables = _base()
  for row in tables["items"]:
    row["shop_score"] = 4.8
  tables["users"][0]["vip_level"] = 2
  world = reader.load_world(_write(tmp_path, tables))
  assert [r["shop_score"] for r in world.items] == [4.8, 4.8, 4.8]
  assert world.report.extra_fields == {"items": {"shop_score"}, "users": {"vip_level"}}
  assert world.report.format().count("shop_score") == 1


def test_clicked_not_impressed_is_a_warning(tmp_path):
  tables = _base()
  tables["recall"][1]["clicked_item_ids"] = ["i3"]  # impressed is ["i2"]
  tables["recall"][1]["purchased_item_ids"] = ["i1"]  # not clicked
  world = reader.load_world(_write(tmp_path, tables))
  assert world.counts["recall"] == 2
  assert world.report.warnings == collections.Counter(
    {("recall", "clicked_not_impressed"): 1, ("recall", "purchased_not_clicked"): 1}
  )
  (example,) = world.report.warning_examples[("recall", "clicked_not_impressed")]
  assert example.startswith("recall.jsonl:2: field 'clicked_item_ids'")


def test_zh_fixture_loads():
  world = reader.load_world(ZH_DIR)
  assert world.counts == {
    "users": 3,
    "items": 10,
    "recall": 9,
    "ranking": 20,
    "relevance": 12,
  }
  report = world.report
  assert report.total_skipped == 0 and not report.warnings and not report.extra_fields
  assert report.manifest_checked
  assert {r["split"] for r in world.recall} == {"train", "test"}
  assert "红色连衣裙女夏季" in {r["query"] for r in world.recall}
  assert all(r["item_title"].startswith("【") for r in world.items)
  assert all("," in r["attr_value"] for r in world.relevance)
  # Ranking rows are the impressions of the recall sessions, in display order.
  impressions = {
    (r["session_id"], i, p)
    for r in world.recall
    for p, i in enumerate(r["impressed_item_ids"], start=1)
  }
  assert {
    (r["session_id"], r["target_item_id"], r["position"]) for r in world.ranking
  } == impressions


def test_main_prints_counts(capsys):
  assert reader.main(["reader", str(ZH_DIR)]) == 0
  out = capsys.readouterr().out
  assert "users=3, items=10, recall=9, ranking=20, relevance=12" in out
  assert reader.main(["reader"]) == 2


# ----------------------------------------------------------------- bad input


def _bad_item(**over):
  row = _item("i9", "extra item")
  row.update(over)
  return json.dumps(row, ensure_ascii=False)


def _without(row, field):
  return json.dumps({k: v for k, v in row.items() if k != field})


def _write_bad(directory, tables, table, line):
  """The base world plus one raw ``line`` (str, or bytes without manifest)."""
  if isinstance(line, str):
    return _write(directory, tables, extra_lines={table: [line]})
  _write(directory, tables, manifest=False)
  path = directory / f"{table}.jsonl"
  path.write_bytes(path.read_bytes() + line + b"\n")
  return directory


# (case id, table, appended raw line, reason, field or None, problem regex)
BAD_ROWS = [
  ("malformed", "items", '{"item_id": "i9", ', "malformed_json", None, "malformed JSON"),
  ("duplicate_name", "users", '{"user_id": "u9", "user_id": "u8"}', "malformed_json", "user_id", "appears twice in one object"),
  ("not_object", "users", '["u9"]', "not_object", None, r'expected a JSON object, got list \["u9"\]'),
  ("bad_utf8", "users", b'{"user_id": "\xff"}', "bad_encoding", None, "not valid UTF-8"),
  ("missing", "items", _without(_item("i9", "t"), "item_title"), "missing_field", "item_title", "missing required field"),
  ("str_for_float", "items", _bad_item(item_price="abc"), "wrong_type", "item_price", 'expected float, got str "abc"'),
  ("nan_float", "items", _bad_item(item_price=float("nan")), "wrong_type", "item_price", "expected finite float, got nan"),
  ("null_required", "items", _bad_item(item_title=None), "wrong_type", "item_title", "expected str, got null"),
  ("int_for_str", "users", json.dumps(dict(_user("u9"), gender=9)), "wrong_type", "gender", "expected str, got int 9"),
  ("bool_for_id", "users", json.dumps(_user(True)), "wrong_type", "user_id", "expected str, got bool true"),
  ("float_for_id", "items", _bad_item(item_id=9.0), "wrong_type", "item_id", "expected str, got float 9.0"),
  ("float_for_int", "recall", json.dumps(_session("s9", "u1", [], [], [], t=1.5)), "wrong_type", "time_index", "expected int, got float 1.5"),
  ("bool_for_int", "ranking", json.dumps(_ranking("s9", "u1", "i1", is_clicked=True)), "wrong_type", "is_clicked", "expected int, got bool true"),
  ("bool_for_float", "ranking", json.dumps(_ranking("s9", "u1", "i1", target_item_price=False)), "wrong_type", "target_item_price", "expected float, got bool false"),
  ("str_for_list", "recall", json.dumps(_session("s9", "u1", "i1", [], [])), "wrong_type", "impressed_item_ids", r'expected list\[str\], got str "i1"'),
  ("list_element", "recall", json.dumps(_session("s9", "u1", ["i1"], ["i1", 3.5], [])), "wrong_type", r"clicked_item_ids[1]", "expected str, got float 3.5"),
  ("dict_float_value", "ranking", json.dumps(_ranking("s9", "u1", "i1", user_statistical_features={"user_gmv_30d_hist": "9"})), "wrong_type", 'user_statistical_features["user_gmv_30d_hist"]', 'expected float, got str "9"'),
  ("dict_str_value", "items", _bad_item(attributes={"color": 1}), "wrong_type", 'attributes["color"]', "expected str, got int 1"),
  ("list_for_dict", "ranking", json.dumps(_ranking("s9", "u1", "i1", target_item_statistical_features=[])), "wrong_type", "target_item_statistical_features", r"expected dict\[str,float\], got list \[\]"),
  ("bad_split", "recall", json.dumps(_session("s9", "u1", [], [], [], split="valid")), "bad_value", "split", 'unknown split str "valid"'),
  ("bad_split_ranking", "ranking", json.dumps(_ranking("s9", "u1", "i1", split="dev")), "bad_value", "split", 'unknown split str "dev"'),
  ("score_high", "relevance", json.dumps(_relevance("q", "t", 4)), "bad_value", "score", "score must be in 0..3, got 4"),
  ("score_negative", "relevance", json.dumps(_relevance("q", "t", -1)), "bad_value", "score", "score must be in 0..3, got -1"),
  ("score_float", "relevance", json.dumps(_relevance("q", "t", 2.5)), "wrong_type", "score", "expected int, got float 2.5"),
  ("flag_not_01", "ranking", json.dumps(_ranking("s9", "u1", "i1", is_purchased=2)), "bad_value", "is_purchased", "expected 0 or 1, got 2"),
  ("empty_key", "items", _bad_item(item_id=""), "empty_key", "item_id", "empty key value"),
  ("unknown_user_recall", "recall", json.dumps(_session("s9", "u404", [], [], [])), "unknown_user_id", "user_id", 'unknown user id "u404" \\(not in users.jsonl\\)'),
  ("unknown_user_ranking", "ranking", json.dumps(_ranking("s9", "u404", "i1")), "unknown_user_id", "user_id", 'unknown user id "u404"'),
  ("unknown_item_impressed", "recall", json.dumps(_session("s9", "u1", ["i1", "i404"], [], [])), "unknown_item_id", r"impressed_item_ids[1]", 'unknown item id "i404"'),
  ("unknown_item_clicked", "recall", json.dumps(_session("s9", "u1", ["i1"], ["i404"], [])), "unknown_item_id", r"clicked_item_ids[0]", 'unknown item id "i404"'),
  ("unknown_item_purchased", "recall", json.dumps(_session("s9", "u1", [], [], ["i404"])), "unknown_item_id", r"purchased_item_ids[0]", 'unknown item id "i404"'),
  ("unknown_target", "ranking", json.dumps(_ranking("s9", "u1", "i404")), "unknown_item_id", "target_item_id", 'unknown item id "i404"'),
  ("unknown_recent_click", "ranking", json.dumps(_ranking("s9", "u1", "i1", recently_clicked_item_ids=["i2", "i404"])), "unknown_item_id", r"recently_clicked_item_ids[1]", 'unknown item id "i404"'),
  ("unknown_recent_buy", "ranking", json.dumps(_ranking("s9", "u1", "i1", recently_purchased_item_ids=["i404"])), "unknown_item_id", r"recently_purchased_item_ids[0]", 'unknown item id "i404"'),
  ("unknown_relevance_item", "relevance", json.dumps(_relevance("q", "t", 1, item_id="i404")), "unknown_item_id", "item_id", 'unknown item id "i404"'),
  ("duplicate_user", "users", json.dumps(_user("u2")), "duplicate_key", "user_id", 'duplicate key user_id="u2" \\(first at line 2\\)'),
  ("duplicate_item", "items", _bad_item(item_id="i1"), "duplicate_key", "item_id", 'duplicate key item_id="i1" \\(first at line 1\\)'),
  ("duplicate_session", "recall", json.dumps(_session("s1", "u2", [], [], [])), "duplicate_key", "session_id", 'duplicate key session_id="s1"'),
  ("duplicate_ranking", "ranking", json.dumps(_ranking("s1", "u1", "i2")), "duplicate_key", "session_id+target_item_id", 'session_id="s1", target_item_id="i2" \\(first at line 2\\)'),
]  # fmt: skip


_BAD_ROW_CASES = pytest.mark.parametrize(
  "table,line,reason,field,problem",
  [c[1:] for c in BAD_ROWS],
  ids=[c[0] for c in BAD_ROWS],
)


@_BAD_ROW_CASES
def test_bad_row_raises_with_file_line_field(
  tmp_path, table, line, reason, field, problem
):
  tables = _base()
  directory = _write_bad(tmp_path, tables, table, line)
  bad_line = len(tables[table]) + 1
  with pytest.raises(reader.SchemaError) as info:
    reader.load_world(directory)
  error = info.value
  assert isinstance(error, ValueError)
  assert (error.file, error.line, error.field, error.reason) == (
    f"{table}.jsonl",
    bad_line,
    field,
    reason,
  )
  where = f"{table}.jsonl:{bad_line}: "
  if field is not None:
    where += f"field '{field}': "
  assert str(error).startswith(where), str(error)
  assert re.search(problem, str(error)), str(error)


@_BAD_ROW_CASES
def test_bad_row_skip_mode_counts_exactly(
  tmp_path, table, line, reason, field, problem
):
  del field, problem
  tables = _base()
  directory = _write_bad(tmp_path, tables, table, line)
  world = reader.load_world(directory, on_error="skip")
  assert world.report.skipped == collections.Counter({(table, reason): 1})
  assert world.counts == {name: len(rows) for name, rows in tables.items()}
  for name in schema.TABLES:
    assert world.table(name) == tables[name]
  text = world.report.format()
  assert f"{table}: {reason}: 1" in text
  assert f"{table}.jsonl:{len(tables[table]) + 1}: " in text


def test_skip_cascades_to_rows_referencing_a_skipped_row(tmp_path):
  tables = _base()
  tables["items"][1]["item_price"] = "cheap"  # i2 is skipped ...
  tables["users"][1]["gender"] = None  # ... and u2
  world = reader.load_world(_write(tmp_path, tables), on_error="skip")
  # s1 impresses i2, s2 is u2's; both ranking rows reference i2 (target or
  # through s1 being fine but the target being i2 / the row being u1's).
  assert world.report.skipped == collections.Counter(
    {
      ("items", "wrong_type"): 1,
      ("users", "wrong_type"): 1,
      ("recall", "unknown_item_id"): 1,  # s1: impressed i2
      ("recall", "unknown_user_id"): 1,  # s2: user u2
      ("ranking", "unknown_item_id"): 1,  # target i2
    }
  )
  assert [r["item_id"] for r in world.items] == ["i1", "i3"]
  assert world.recall == []
  assert [r["target_item_id"] for r in world.ranking] == ["i1"]
  (example,) = world.report.skip_examples[("recall", "unknown_item_id")]
  assert example == (
    "recall.jsonl:1: field 'impressed_item_ids[1]': unknown item id \"i2\" "
    "(its row was skipped at items.jsonl:2)"
  )
  # Every line is accounted for: kept + skipped = lines in the files.
  for name, rows in tables.items():
    assert world.counts[name] + world.report.skipped_in(name) == len(rows)


def test_skip_mode_many_problems_counted_by_reason(tmp_path):
  tables = _base()
  extra = {
    "items": ["not json", _bad_item(item_price="x"), _bad_item(item_id="i1")],
    "recall": [
      json.dumps(_session("s8", "u1", [], [], [], split="dev")),
      json.dumps(_session("s9", "u1", ["i404", "i405"], [], [])),
    ],
    "relevance": [json.dumps(_relevance("q", "t", 7))] * 3,
  }
  world = reader.load_world(
    _write(tmp_path, tables, extra_lines=extra), on_error="skip"
  )
  assert world.report.skipped == collections.Counter(
    {
      ("items", "malformed_json"): 1,
      ("items", "wrong_type"): 1,
      ("items", "duplicate_key"): 1,
      ("recall", "bad_value"): 1,
      ("recall", "unknown_item_id"): 1,
      ("relevance", "bad_value"): 3,
    }
  )
  assert world.report.total_skipped == 8
  assert world.report.skip_examples[("relevance", "bad_value")] == [
    f"relevance.jsonl:{n}: field 'score': score must be in 0..3, got 7"
    for n in (3, 4, 5)
  ]


def test_exact_message_format(tmp_path):
  tables = _base()
  extra = {"items": [_bad_item(item_price="abc")]}
  with pytest.raises(reader.SchemaError) as info:
    reader.load_world(_write(tmp_path, tables, extra_lines=extra))
  assert (
    str(info.value)
    == "items.jsonl:4: field 'item_price': expected float, got str \"abc\""
  )


def test_manifest_hash_mismatch_names_file(tmp_path):
  tables = _base()
  directory = _write(tmp_path, tables)
  path = directory / "items.jsonl"
  path.write_text(
    path.read_text(encoding="utf-8").replace("Red summer", "Blue summer"),
    encoding="utf-8",
  )
  with pytest.raises(reader.SchemaError) as info:
    reader.load_world(directory)
  assert info.value.file == "items.jsonl" and info.value.reason == "manifest"
  assert re.match(
    r"items\.jsonl: sha256 [0-9a-f]{64} differs from manifest\.json's", str(info.value)
  )
  # Skip mode: counted once, rows still loaded; verify_manifest=False ignores it.
  world = reader.load_world(directory, on_error="skip")
  assert world.report.skipped == collections.Counter({("manifest", "manifest"): 1})
  assert world.items[1]["item_title"] == "Blue summer dress"
  world = reader.load_world(directory, verify_manifest=False)
  assert world.report.total_skipped == 0 and not world.report.manifest_checked


def test_manifest_content_hash_and_counts_checked(tmp_path):
  tables = _base()
  directory = _write(tmp_path, tables)
  manifest_path = directory / schema.MANIFEST
  manifest = json.loads(manifest_path.read_text())
  bad = copy.deepcopy(manifest)
  bad["content_hash"] = "0" * 64
  manifest_path.write_text(json.dumps(bad))
  with pytest.raises(
    reader.SchemaError, match=r"^manifest\.json: field 'content_hash': 0{64} differs"
  ):
    reader.load_world(directory)
  bad = copy.deepcopy(manifest)
  bad["counts"]["recall"] = 5
  manifest_path.write_text(json.dumps(bad))
  with pytest.raises(
    reader.SchemaError,
    match=r"^manifest\.json: field 'counts\.recall': says 5 rows, recall\.jsonl has 2$",
  ):
    reader.load_world(directory)
  bad["files"]["gone.jsonl"] = "0" * 64
  bad["content_hash"] = reader.content_hash(bad["files"])
  manifest_path.write_text(json.dumps(bad))
  world = reader.load_world(directory, on_error="skip")
  assert world.report.skipped == collections.Counter({("manifest", "manifest"): 2})
  assert any(
    e.startswith("gone.jsonl: listed in manifest.json but missing")
    for e in world.report.skip_examples[("manifest", "manifest")]
  )


def test_content_hash_is_sha256_of_sorted_json():
  import hashlib

  files = {"b.jsonl": "2", "a.jsonl": "1"}
  expected = hashlib.sha256(b'{"a.jsonl": "1", "b.jsonl": "2"}').hexdigest()
  assert reader.content_hash(files) == expected


def test_missing_table_file(tmp_path):
  directory = _write(tmp_path, _base(), manifest=False)
  (directory / "ranking.jsonl").unlink()
  with pytest.raises(
    reader.SchemaError,
    match=r"^ranking\.jsonl: file is missing \(looked for ranking\.jsonl or rank\.jsonl\)$",
  ):
    reader.load_world(directory, on_error="skip")


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="on_error"):
    reader.load_world(tmp_path, on_error="ignore")
  with pytest.raises(ValueError, match="SkipReport"):
    list(reader.iter_rows(tmp_path / "x.jsonl", "users", on_error="skip"))
  with pytest.raises(KeyError, match="unknown table"):
    list(reader.iter_rows(tmp_path / "x.jsonl", "orders"))


# ------------------------------------------- validate_world (streamed checks)

RELEASE_DIR = ZH_DIR.parent / "kuaisearch_release"


def _same_outcome(directory, **kwargs):
  """load_world and validate_world agree: counts, report, relevance match."""
  world = reader.load_world(directory, **kwargs)
  summary = reader.validate_world(directory, **kwargs)
  assert summary.counts == world.counts
  assert summary.report.format() == world.report.format()
  assert summary.report.skipped == world.report.skipped
  assert summary.report.dangling == world.report.dangling
  assert summary.relevance_match == world.relevance_match
  return summary


@pytest.mark.parametrize("directory", [ZH_DIR, RELEASE_DIR], ids=["zh", "release"])
def test_validate_world_equals_load_world_on_fixtures(directory):
  summary = _same_outcome(directory, on_error="skip")
  assert sum(summary.counts.values()) > 0


@_BAD_ROW_CASES
def test_validate_world_same_error_and_skips(
  tmp_path, table, line, reason, field, problem
):
  del reason, field, problem
  directory = _write_bad(tmp_path, _base(), table, line)
  with pytest.raises(reader.SchemaError) as eager:
    reader.load_world(directory)
  with pytest.raises(reader.SchemaError) as streamed:
    reader.validate_world(directory)
  assert str(streamed.value) == str(eager.value)
  assert (streamed.value.reason, streamed.value.line) == (
    eager.value.reason,
    eager.value.line,
  )
  _same_outcome(directory, on_error="skip")


def test_validate_world_many_duplicates_and_hash_candidates(tmp_path):
  # Several duplicate keys in each keyed table, a repeated ranking key among
  # rows that differ elsewhere; every duplicate is found with its first line.
  tables = _base()
  extra = {
    "users": [
      json.dumps(_user("u1")),
      json.dumps(_user("u2")),
      json.dumps(_user("u1")),
    ],
    "recall": [json.dumps(_session("s2", "u1", [], [], []))],
    "ranking": [
      json.dumps(_ranking("s1", "u1", "i1", is_clicked=0)),
      json.dumps(_ranking("s1", "u1", "i3")),
    ],
  }
  directory = _write(tmp_path, tables, extra_lines=extra)
  summary = _same_outcome(directory, on_error="skip")
  assert summary.report.skipped == collections.Counter(
    {
      ("users", "duplicate_key"): 3,
      ("recall", "duplicate_key"): 1,
      ("ranking", "duplicate_key"): 1,
    }
  )
  assert summary.counts["ranking"] == 3
  assert summary.report.skip_examples[("users", "duplicate_key")] == [
    "users.jsonl:3: field 'user_id': duplicate key user_id=\"u1\" (first at line 1)",
    "users.jsonl:4: field 'user_id': duplicate key user_id=\"u2\" (first at line 2)",
    "users.jsonl:5: field 'user_id': duplicate key user_id=\"u1\" (first at line 1)",
  ]


def test_main_validates_streamed(tmp_path, capsys, monkeypatch):
  # The command line never builds the row lists of load_world.
  monkeypatch.setattr(reader, "load_world", None)
  assert reader.main(["reader", str(ZH_DIR)]) == 0
  assert "users=3, items=10, recall=9, ranking=20, relevance=12" in (
    capsys.readouterr().out
  )
