"""Tests of world/tfds_builder.py: build from hand-written files, read back."""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from onesearch_jax.world import reader, schema, tfds_builder

ZH_DIR = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "kuaisearch_zh"


@pytest.fixture
def no_network(monkeypatch):
  """Any download attempt fails the test."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"the builder tried to download: {args} {kwargs}")

  for name in ("download", "download_and_extract", "download_kaggle_data"):
    monkeypatch.setattr(tfds.download.DownloadManager, name, refuse)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> pathlib.Path:
  """A copy of the hand-written Chinese world (with its manifest)."""
  out = tmp_path_factory.mktemp("zh") / "world"
  shutil.copytree(ZH_DIR, out)
  return out


def _decode(table: schema.Table, example: dict) -> dict:
  """A TFDS numpy example -> a row dict comparable with the reader's."""
  row = {}
  for field in table.fields:
    value = example[field.name]
    if field.kind == "str":
      value = value.decode("utf-8")
    elif field.kind.startswith("dict["):
      value = value.decode("utf-8")
      value = json.loads(value) if value else None
    elif field.kind == "list[str]":
      value = [v.decode("utf-8") for v in value]
    elif field.kind == "int":
      value = int(value)
    elif field.kind == "float":
      value = float(value)
    row[field.name] = value
  return row


def _expected(table: schema.Table, row: dict) -> dict:
  out = {}
  for field in table.fields:
    value = row.get(field.name)
    if value is None:
      value = tfds_builder.MISSING[field.kind]
      value = None if field.kind.startswith("dict[") else value
    if field.kind == "float":
      value = float(np.float32(value))
    out[field.name] = value
  return out


def _same(a: dict, b: dict) -> bool:
  nan = {k for k, v in a.items() if isinstance(v, float) and math.isnan(v)}
  return nan == {
    k for k, v in b.items() if isinstance(v, float) and math.isnan(v)
  } and {k: v for k, v in a.items() if k not in nan} == {
    k: v for k, v in b.items() if k not in nan
  }


@pytest.mark.parametrize("name", list(schema.TABLES))
def test_build_and_read_back_every_table(world_dir, tmp_path, no_network, name):
  del no_network
  table = schema.TABLES[name]
  builder = tfds_builder.prepare(name, manual_dir=world_dir, data_dir=tmp_path)
  assert builder.info.full_name == f"kuaisearch/{name}/1.0.0"
  world = reader.load_world(world_dir)
  rows = world.table(name)
  if name in ("recall", "ranking"):
    wanted = {s: [r for r in rows if r["split"] == s] for s in schema.SPLITS}
  else:
    wanted = {"train": rows}
  assert set(builder.info.splits.keys()) == set(wanted)
  for split, expected_rows in wanted.items():
    got = [_decode(table, ex) for ex in tfds.as_numpy(builder.as_dataset(split=split))]
    expected = [_expected(table, r) for r in expected_rows]
    assert len(got) == len(expected) > 0
    # TFDS shuffles example order by key hash: compare as multisets.
    for e in expected:
      assert any(_same(e, g) for g in got), e
    assert builder.info.splits[split].num_examples == len(expected)


def test_chinese_text_round_trips(world_dir, tmp_path, no_network):
  del no_network
  builder = tfds_builder.prepare("items", manual_dir=world_dir, data_dir=tmp_path)
  titles = {
    ex["item_title"].decode("utf-8")
    for ex in tfds.as_numpy(builder.as_dataset(split="train"))
  }
  assert "【冬季加厚】波司登羽绒服女中长款连帽保暖外套" in titles
  # Absent optional fields: "" for dicts, -1 for ints, NaN for floats.
  by_id = {
    ex["item_id"].decode(): ex
    for ex in tfds.as_numpy(builder.as_dataset(split="train"))
  }
  assert by_id["i009"]["attributes"] == b""
  assert by_id["i009"]["publish_time_index"] == -1
  assert math.isnan(by_id["i009"]["item_price"])
  assert json.loads(by_id["i001"]["attributes"])["color"] == "红色"


def test_only_present_splits_and_bad_rows_stop_the_build(tmp_path, no_network):
  del no_network
  src = tmp_path / "src"
  src.mkdir()
  row = schema.empty_row(schema.RECALL) | {"session_id": "s1", "split": "train"}
  (src / "recall.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
  builder = tfds_builder.prepare("recall", manual_dir=src, data_dir=tmp_path / "a")
  assert set(builder.info.splits.keys()) == {"train"}

  bad = dict(row, session_id="s2", time_index="noon")
  (src / "recall.jsonl").write_text(
    json.dumps(row) + "\n" + json.dumps(bad) + "\n", encoding="utf-8"
  )
  with pytest.raises(
    reader.SchemaError,
    match=r"^recall\.jsonl:2: field 'time_index': expected int, got str \"noon\"$",
  ):
    tfds_builder.prepare("recall", manual_dir=src, data_dir=tmp_path / "b")


def test_manifest_mismatch_and_missing_file(tmp_path, no_network):
  del no_network
  src = tmp_path / "src"
  src.mkdir()
  row = schema.empty_row(schema.USERS) | {"user_id": "u1"}
  (src / "users.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
  (src / "manifest.json").write_text(
    json.dumps({"files": {"users.jsonl": "0" * 64}}), encoding="utf-8"
  )
  with pytest.raises(reader.SchemaError, match=r"^users\.jsonl: sha256 "):
    tfds_builder.prepare("users", manual_dir=src, data_dir=tmp_path / "a")
  with pytest.raises(FileNotFoundError, match="items.jsonl is missing"):
    tfds_builder.prepare("items", manual_dir=src, data_dir=tmp_path / "b")
