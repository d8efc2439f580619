"""Tests of world/esci.py on the real excerpt and on hand-written CSVs."""

from __future__ import annotations

import collections
import csv
import json
import re

import pytest

from onesearch_jax.world import esci, reader


def _csv_rows(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def esci_csv(real_data_dir):
  return real_data_dir / "esci" / "esci_pairs_with_titles.csv"


def test_load_real_excerpt(esci_csv):
  bench = esci.load_esci_pairs(esci_csv)
  rows = _csv_rows(esci_csv)
  # Figures from shared/data/real/esci/SOURCE.md.
  assert (len(bench.queries), len(bench.products), len(bench.judgements)) == (
    750,
    1342,
    1948,
  )
  assert bench.label_counts() == collections.Counter(
    {"E": 1010, "S": 412, "C": 26, "I": 500}
  )
  # qrels against an independent parse of the CSV.
  gain = {"E": 3, "S": 2, "C": 1, "I": 0}
  expected = collections.defaultdict(dict)
  for r in rows:
    expected[r["query_id"]][r["product_id"]] = gain[r["esci_label"]]
  assert bench.qrels() == dict(expected)
  # B00M9K7L8S appears with and without brand: the brand is filled in.
  product = {p.product_id: p for p in bench.products}["B00M9K7L8S"]
  assert product.brand == "Samsung Electronics" and product.color == "Silver"
  assert {q.split for q in bench.queries} == {"train", "test", ""}


def test_write_real_world_validates(esci_csv, tmp_path):
  out = tmp_path / "esci_world"
  counts = esci.write_esci_world(esci_csv, out)
  assert counts == {
    "users": 1,
    "items": 1342,
    "recall": 750,
    "ranking": 0,
    "relevance": 1948,
  }
  world = reader.load_world(out)
  assert world.counts == counts
  assert world.report.total_skipped == 0 and not world.report.warnings
  assert world.report.manifest_checked and world.manifest["source"] == "esci"
  for name in esci.LICENSE_FILES:
    assert (out / name).read_bytes() == (esci_csv.parent / name).read_bytes()

  rows = _csv_rows(esci_csv)
  split = {r["query_id"]: r["split"] or "train" for r in rows}
  assert collections.Counter(r["split"] for r in world.recall) == collections.Counter(
    split.values()
  )
  assert collections.Counter(split.values()) == {"test": 500, "train": 250}
  # Train sessions come before test sessions in time.
  last_train = max(r["time_index"] for r in world.recall if r["split"] == "train")
  assert last_train < min(r["time_index"] for r in world.recall if r["split"] == "test")
  # Sessions: impressed = judged products in CSV order, clicked = E products.
  judged = collections.defaultdict(list)
  exact = collections.defaultdict(list)
  for r in rows:
    judged[r["query_id"]].append(r["product_id"])
    if r["esci_label"] == "E":
      exact[r["query_id"]].append(r["product_id"])
  for s in world.recall:
    qid = s["session_id"].removeprefix("esci-")
    assert s["impressed_item_ids"] == judged[qid]
    assert s["clicked_item_ids"] == exact[qid]
    assert s["user_id"] == esci.ANONYMOUS_USER
  # Relevance rows are the judgements with score = gain.
  pairs = collections.Counter(
    (r["query"], r["product_id"], int(r["gain"])) for r in rows
  )
  assert (
    collections.Counter((r["query"], r["item_id"], r["score"]) for r in world.relevance)
    == pairs
  )
  # Attributes hold brand/color only as written in the title.
  for item in world.items:
    for value in item["attributes"].values():
      assert value in item["item_title"]


def test_empty_split_mapping(esci_csv, tmp_path):
  esci.write_esci_world(esci_csv, tmp_path / "w", empty_split="test")
  world = reader.load_world(tmp_path / "w")
  assert collections.Counter(r["split"] for r in world.recall) == {
    "test": 700,
    "train": 50,
  }
  with pytest.raises(ValueError, match="empty_split"):
    esci.write_esci_world(esci_csv, tmp_path / "x", empty_split="valid")


def _row(**over):
  row = {
    "source": "hand",
    "query_id": "1",
    "query": "red dress",
    "query_source": "other",
    "product_id": "P1",
    "product_title": "Acme Red Summer Dress, Floral",
    "product_brand": "Acme",
    "product_color": "red",
    "esci_label": "E",
    "gain": "3",
    "small_version": "1",
    "split": "train",
  }
  row.update(over)
  return row


def _write_csv(path, rows, header=esci.COLUMNS):
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for r in rows:
      writer.writerow([r[c] for c in header] if isinstance(r, dict) else r)
  return path


def test_small_world_from_hand_written_csv(tmp_path):
  rows = [
    _row(),
    _row(product_id="P2", product_title="Blue\ndress", esci_label="I", gain="0"),
    _row(query_id="2", query="连衣裙 红色", product_id="P1", split="test"),
    _row(query_id="2", query="连衣裙 红色", product_id="P3", product_title="红色连衣裙",
         product_brand="", product_color="", esci_label="S", gain="2", split="test"),
  ]  # fmt: skip
  src = _write_csv(tmp_path / "pairs.csv", rows)
  bench = esci.load_esci_pairs(src)
  # The quoted newline makes record 3 start on physical line 5.
  assert [j.line for j in bench.judgements] == [2, 3, 5, 6]
  assert bench.qrels() == {"1": {"P1": 3, "P2": 0}, "2": {"P1": 3, "P3": 2}}
  tables = esci.esci_world_tables(bench)
  assert [s["clicked_item_ids"] for s in tables["recall"]] == [["P1"], ["P1"]]
  assert [s["split"] for s in tables["recall"]] == ["train", "test"]
  item = tables["items"][0]
  # As written in the title; "Acme" also matches case-insensitively.
  assert item["attributes"] == {"brand": "Acme", "color": "Red"}
  assert tables["items"][2]["attributes"] == {}
  assert tables["relevance"][3] == {
    "query": "连衣裙 红色",
    "item_title": "红色连衣裙",
    "brand": "",
    "seller_name": "",
    "attr_value": "",
    "score": 2,
    "item_id": "P3",
  }


def test_attributes_match_whole_words_only():
  product = esci.EsciProduct("P9", "Shredded Paper (RED pack)", "Shred", "red", 2)
  assert esci._item_row(product)["attributes"] == {"color": "RED"}


BAD = [
  ("label", [_row(esci_label="X")], 2, "esci_label", "expected one of E, S, C, I, got 'X'"),
  ("gain", [_row(gain="2")], 2, "gain", "expected 3 for label E, got '2'"),
  ("split", [_row(split="valid")], 2, "split", "expected train, test or empty, got 'valid'"),
  ("small_version", [_row(small_version="yes")], 2, "small_version", "expected 0 or 1"),
  ("empty_query", [_row(), _row(query_id="2", query=" ")], 3, "query", "empty value"),
  ("empty_title", [_row(product_title="")], 2, "product_title", "empty value"),
  ("query_text", [_row(), _row(product_id="P2", query="blue dress")], 3, "query", "'blue dress' differs from 'red dress' for query_id 1 at line 2"),
  ("query_split", [_row(), _row(product_id="P2", split="test")], 3, "split", "differs"),
  ("duplicate", [_row(), _row()], 3, "product_id", "pair (query_id 1, product_id P1) repeats line 2"),
  ("title_conflict", [_row(), _row(query_id="2", product_title="Other")], 3, "product_title", "differs from"),
  ("brand_conflict", [_row(), _row(query_id="2", product_brand="Other")], 3, "product_brand", "differs from"),
]  # fmt: skip


@pytest.mark.parametrize(
  "rows,line,column,problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_rows_name_file_line_column(tmp_path, rows, line, column, problem):
  src = _write_csv(tmp_path / "bad.csv", rows)
  with pytest.raises(esci.EsciError) as info:
    esci.load_esci_pairs(src)
  message = str(info.value)
  assert message.startswith(f"bad.csv:{line}: column '{column}': "), message
  assert problem in message
  assert (info.value.file, info.value.line, info.value.column) == (
    "bad.csv",
    line,
    column,
  )


def test_bad_header_and_value_count(tmp_path):
  header = [c for c in esci.COLUMNS if c != "gain"]
  src = tmp_path / "h.csv"
  src.write_text(",".join(header) + "\n", encoding="utf-8")
  with pytest.raises(
    esci.EsciError, match=r"^h\.csv:1: column 'gain': missing from the header$"
  ):
    esci.load_esci_pairs(src)
  _write_csv(src, [_row(), ["only", "three", "values"]])
  with pytest.raises(esci.EsciError, match=r"^h\.csv:3: expected 12 values, got 3$"):
    esci.load_esci_pairs(src)


def test_licence_files_required(tmp_path):
  src = _write_csv(tmp_path / "pairs.csv", [_row()])
  with pytest.raises(FileNotFoundError, match="LICENSE is missing"):
    esci.write_esci_world(src, tmp_path / "out")
  (tmp_path / "LICENSE").write_text("Apache-2.0")
  (tmp_path / "NOTICE").write_text("notice")
  counts = esci.write_esci_world(src, tmp_path / "out")
  assert counts["recall"] == 1
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert manifest["config"]["empty_split"] == "train"
  assert re.fullmatch(r"[0-9a-f]{64}", manifest["config"]["src_sha256"])


# ------------------------------------------------ pseudo-queries, validation


def _product(title, brand="", color="", pid="P1"):
  return esci.EsciProduct(pid, title, brand, color, line=2)


def test_pseudo_queries_by_hand():
  p = _product("ZENY Leather Dining Chairs with Wood Legs, Set of 6", "ZENY", "Brown")
  got = esci.pseudo_queries(p, 4)
  # head (4 words after the brand, "with" trimmed), brand + 2 head words,
  # color + 2 head words, first segment (before the comma, 6 words at most).
  assert got == [
    "leather dining chairs",
    "zeny leather dining",
    "brown leather dining",
    "zeny leather dining chairs with wood",
  ]
  # k caps the list; the preferred ones come first.
  assert esci.pseudo_queries(p, 2) == got[:2]
  assert esci.pseudo_queries(p, 0) == []


def test_pseudo_queries_deterministic_distinct_and_from_item_text_only(esci_csv):
  bench = esci.load_esci_pairs(esci_csv)
  for p in bench.products[:200]:
    a = esci.pseudo_queries(p, 6)
    assert a == esci.pseudo_queries(p, 6)  # same input, same output
    assert len(a) == len(set(a)) and 1 <= len(a) <= 6
    # Every word of every pseudo-query is in the product's own text.
    own = f"{p.title} {p.brand} {p.color}".lower()
    for q in a:
      assert 1 <= len(q.split()) <= 6
      assert all(w in own for w in q.split()), (q, p.title)
  # The span draws depend on the seed (the fixed candidates do not).
  spans = [esci.pseudo_queries(x, 8, seed=0) for x in bench.products[:50]]
  other = [esci.pseudo_queries(x, 8, seed=1) for x in bench.products[:50]]
  assert spans != other


def test_validation_world_holds_out_train_queries_and_drops_test(esci_csv):
  bench = esci.load_esci_pairs(esci_csv)
  exact = collections.defaultdict(set)
  for j in bench.judgements:
    if j.label == "E":
      exact[j.query_id].add(j.product_id)
  held = esci.validation_ids(bench, 50)
  assert held == esci.validation_ids(bench, 50) and len(set(held)) == 50
  # Only non-test queries with an E product, and the 50 smallest hashes.
  pool = [q.query_id for q in bench.queries if q.split != "test" and exact[q.query_id]]
  assert set(held) <= set(pool) and len(pool) == 188
  import hashlib

  h = sorted(hashlib.sha256(q.encode()).hexdigest() for q in pool)
  assert {hashlib.sha256(q.encode()).hexdigest() for q in held} == set(h[:50])
  tables = esci.esci_world_tables(bench, validation=50)
  test_ids = {q.query_id for q in bench.queries if q.split == "test"}
  test_text = {q.query for q in bench.queries if q.split == "test"}
  sessions = {r["session_id"].removeprefix("esci-"): r for r in tables["recall"]}
  # No official test query, nor its text, nor its judgements.
  assert not test_ids & set(sessions)
  train_text = {q.query for q in bench.queries if q.split != "test"}
  assert not {r["query"] for r in tables["recall"]} & (test_text - train_text)
  assert len(tables["relevance"]) == sum(
    1 for j in bench.judgements if j.query_id not in test_ids
  )
  assert {q for q, r in sessions.items() if r["split"] == "test"} == set(held)
  assert len(sessions) == 250
  # Test sessions come after every train session.
  order = [r["split"] for r in sorted(tables["recall"], key=lambda r: r["time_index"])]
  assert order == ["train"] * 200 + ["test"] * 50
  with pytest.raises(ValueError, match="only 188 train queries"):
    esci.validation_ids(bench, 189)


def test_pseudo_sessions_in_the_world(esci_csv, tmp_path):
  bench = esci.load_esci_pairs(esci_csv)
  tables = esci.esci_world_tables(bench, pseudo_per_item=3)
  pseudo = [r for r in tables["recall"] if r["user_id"] == esci.PSEUDO_USER]
  real = [r for r in tables["recall"] if r["user_id"] != esci.PSEUDO_USER]
  # Pseudo sessions come first; the real ones are as without them, later.
  assert tables["recall"][: len(pseudo)] == pseudo
  assert real == [
    dict(r, time_index=r["time_index"] + len(pseudo))
    for r in esci.esci_world_tables(bench)["recall"]
  ]
  # One session per distinct pseudo-query; it clicks exactly the products
  # whose own text made it, and every product is clicked by at least one.
  want = collections.defaultdict(set)
  for p in bench.products:
    for q in esci.pseudo_queries(p, 3):
      want[q].add(p.product_id)
  assert {r["query"]: set(r["clicked_item_ids"]) for r in pseudo} == want
  assert len(pseudo) == len(want)
  assert {i for r in pseudo for i in r["clicked_item_ids"]} == {
    p.product_id for p in bench.products
  }
  assert all(
    r["split"] == "train" and r["impressed_item_ids"] == r["clicked_item_ids"]
    for r in pseudo
  )
  assert [u["user_id"] for u in tables["users"]] == [
    esci.ANONYMOUS_USER,
    esci.PSEUDO_USER,
  ]
  # Relevance (graded eval) holds the judged pairs only.
  assert tables["relevance"] == esci.esci_world_tables(bench)["relevance"]
  counts = esci.write_esci_world(esci_csv, tmp_path / "w", pseudo_per_item=3)
  assert counts["recall"] == 750 + len(pseudo)
  assert reader.load_world(tmp_path / "w").counts == counts
