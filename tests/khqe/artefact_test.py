"""SID artefact: round trip, tie policy, hash pinning and tamper refusal."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from onesearch_jax.khqe import artefact, quantizer


@pytest.fixture(scope="module")
def art():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 8)).astype(np.float32)
  cfg = quantizer.QuantizerConfig(
    levels=(4, 2, 2), opq_subspaces=2, opq_codes=4, n_iter=3, opq_iter=2
  )
  q = quantizer.fit(x, cfg)
  codes = q.encode(x[:6])
  # Items 0, 1 and 2 share a SID to exercise the tie policy.
  codes[1] = codes[0]
  codes[2] = codes[0]
  # Items 3-5 get SIDs of their own (distinct last OPQ code).
  for i in (3, 4, 5):
    codes[i] = codes[0]
    codes[i, -1] = (codes[0, -1] + i - 2) % 4
  return artefact.SIDArtefact(
    quantizer=q,
    item_ids=("i0", "i1", "i2", "i3", "i4", "i5"),
    item_codes=codes,
    item_popularity=np.array([1.0, 5.0, 1.0, 0.0, 0.0, 2.0]),
    query_texts=("red dress", "红色连衣裙"),
    query_codes=q.encode(x[6:8]),
    report="# SID report\n",
    report_files={"hist_main.png": b"\x89PNG fake"},
    metadata={"world_hash": "abc"},
  )


def test_round_trip(art, tmp_path):
  h = artefact.save(art, tmp_path)
  back = artefact.load(tmp_path, expected_hash=h)
  np.testing.assert_array_equal(back.item_codes, art.item_codes)
  np.testing.assert_array_equal(back.query_codes, art.query_codes)
  assert back.item_ids == art.item_ids and back.query_texts == art.query_texts
  assert back.report == art.report and back.report_files == art.report_files
  assert back.metadata == {"world_hash": "abc"}
  np.testing.assert_array_equal(back.quantizer.opq.rotation, art.quantizer.opq.rotation)
  np.testing.assert_array_equal(back.quantizer.rq.l3, art.quantizer.rq.l3)
  x = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
  np.testing.assert_array_equal(back.quantizer.encode(x), art.quantizer.encode(x))
  assert "红色连衣裙" in (tmp_path / "queries.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize(
  "field, value",
  [
    ("max_points_per_centroid", 7),
    ("opq_fused", True),
    ("opq_rotation_init", "pca"),
    ("opq_iter_pq0", 10),
    ("opq_train_points", 1000),
    ("opq_pq_init", "random"),
  ],
)
def test_later_switches_are_written_only_when_on(art, tmp_path, field, value):
  # At their defaults: config.json has none of these keys, as before the
  # fields existed, so the main job's artefact keeps its hash; on: written
  # and read back.
  artefact.save(art, tmp_path / "off")
  stored = json.loads((tmp_path / "off" / "config.json").read_text())["quantizer"]
  assert field not in stored
  assert artefact.load(tmp_path / "off").quantizer.config == art.quantizer.config
  cfg = dataclasses.replace(art.quantizer.config, **{field: value})
  on = dataclasses.replace(
    art, quantizer=dataclasses.replace(art.quantizer, config=cfg)
  )
  artefact.save(on, tmp_path / "on")
  stored = json.loads((tmp_path / "on" / "config.json").read_text())["quantizer"]
  assert stored[field] == value
  assert getattr(artefact.load(tmp_path / "on").quantizer.config, field) == value


def test_multimap_tie_policy(art, tmp_path):
  artefact.save(art, tmp_path)
  rows = [json.loads(line) for line in open(tmp_path / "sid_to_items.jsonl")]
  shared = [r for r in rows if len(r["item_ids"]) == 3]
  assert len(shared) == 1
  # Popularity 5 first, then the two with popularity 1 by item id.
  assert shared[0]["item_ids"] == ["i1", "i0", "i2"]
  assert sum(len(r["item_ids"]) for r in rows) == 6
  assert [r["codes"] for r in rows] == sorted(r["codes"] for r in rows)


def test_hash_is_deterministic(art, tmp_path):
  assert artefact.save(art, tmp_path / "a") == artefact.save(art, tmp_path / "b")


def test_wrong_expected_hash_is_refused_naming_both(art, tmp_path):
  h = artefact.save(art, tmp_path)
  wrong = "0" * 64
  with pytest.raises(artefact.ArtefactError) as e:
    artefact.load(tmp_path, expected_hash=wrong)
  assert h in str(e.value) and wrong in str(e.value)
  with pytest.raises(artefact.ArtefactError, match=wrong):
    artefact.check_hash(tmp_path, wrong)
  assert artefact.check_hash(tmp_path, h) == h


def test_tampered_file_is_refused(art, tmp_path):
  artefact.save(art, tmp_path)
  path = tmp_path / "items.jsonl"
  path.write_text(path.read_text().replace('"i3"', '"i9"'))
  with pytest.raises(artefact.ArtefactError, match="items.jsonl.*file modified"):
    artefact.load(tmp_path)


def test_tampered_manifest_content_hash_is_refused(art, tmp_path):
  artefact.save(art, tmp_path)
  m = json.loads((tmp_path / "manifest.json").read_text())
  m["content_hash"] = "f" * 64
  (tmp_path / "manifest.json").write_text(json.dumps(m))
  with pytest.raises(artefact.ArtefactError, match="content_hash"):
    artefact.check_hash(tmp_path)


def test_missing_manifest(tmp_path):
  with pytest.raises(artefact.ArtefactError, match="manifest.json: missing"):
    artefact.load(tmp_path)


def test_inconsistent_artefact_rejected(art):
  with pytest.raises(artefact.ArtefactError, match="item ids"):
    artefact.SIDArtefact(
      quantizer=art.quantizer,
      item_ids=("a", "b"),
      item_codes=art.item_codes,
      item_popularity=np.zeros(2),
      query_texts=(),
      query_codes=np.zeros((0, 5), np.int32),
    )


def _save_with_tokenizer(art, root):
  """An artefact plus the tokenizer files build.py writes beside it."""
  (root / "text_encoder").mkdir(parents=True)
  (root / "text_encoder" / "spm.model").write_bytes(b"spm bytes")
  (root / "text_encoder" / "params.npz").write_bytes(b"params")
  (root / "keywords.tsv").write_text("red\tcolor\t3\t0.1\x020.2\n")
  (root / "embeddings").mkdir()
  np.save(root / "embeddings" / "items_raw.npy", np.ones((2, 3), np.float32))
  return artefact.save(
    art, root, covered=["text_encoder", "keywords.tsv", "embeddings"]
  )


COVERED = [
  "text_encoder/spm.model",
  "text_encoder/params.npz",
  "keywords.tsv",
  "embeddings/items_raw.npy",
]


def test_covered_files_are_listed_and_change_the_hash(art, tmp_path):
  h = _save_with_tokenizer(art, tmp_path / "a")
  files = json.loads((tmp_path / "a" / "manifest.json").read_text())["files"]
  assert set(COVERED) <= set(files)
  # The same artefact without the tokenizer files has another hash.
  assert artefact.save(art, tmp_path / "b") != h


@pytest.mark.parametrize("name", COVERED)
def test_editing_a_covered_file_is_refused(art, tmp_path, name):
  h = _save_with_tokenizer(art, tmp_path)
  assert artefact.check_hash(tmp_path, h) == h
  path = tmp_path / name
  path.write_bytes(path.read_bytes() + b"x")
  with pytest.raises(artefact.ArtefactError, match=f"{name}.*file modified"):
    artefact.load(tmp_path, expected_hash=h)


@pytest.mark.parametrize("name", COVERED)
def test_removing_a_covered_file_is_refused(art, tmp_path, name):
  _save_with_tokenizer(art, tmp_path)
  (tmp_path / name).unlink()
  with pytest.raises(artefact.ArtefactError, match=f"{name}: listed in .* missing"):
    artefact.check_hash(tmp_path)


@pytest.mark.parametrize("folder", ["text_encoder", "embeddings", "report"])
def test_adding_a_file_to_a_covered_folder_is_refused(art, tmp_path, folder):
  _save_with_tokenizer(art, tmp_path)
  (tmp_path / folder / "extra.bin").write_bytes(b"new")
  with pytest.raises(artefact.ArtefactError, match=f"{folder}/extra.bin: not listed"):
    artefact.load(tmp_path)


def test_unrelated_top_level_file_is_ignored(art, tmp_path):
  # The pipeline writes its STAGE.json marker into the artefact folder last.
  h = _save_with_tokenizer(art, tmp_path)
  (tmp_path / "STAGE.json").write_text("{}")
  assert artefact.check_hash(tmp_path, h) == h


def test_bad_covered_paths_are_refused(art, tmp_path):
  with pytest.raises(artefact.ArtefactError, match="does not exist"):
    artefact.save(art, tmp_path, covered=["keywords.tsv"])
  for bad in ("/etc/passwd", "../x", "manifest.json", "a//b"):
    with pytest.raises(artefact.ArtefactError, match="not a relative path"):
      artefact.save(art, tmp_path, covered=[bad])


def test_relocated_copy_keeps_its_hash_and_loads(art, tmp_path):
  info_art = dataclasses.replace(art, info={"world_dir": "../world"})
  h = _save_with_tokenizer(info_art, tmp_path / "work1" / "sids")
  moved = tmp_path / "elsewhere" / "deeper" / "sids_copy"
  shutil.copytree(tmp_path / "work1" / "sids", moved)
  shutil.rmtree(tmp_path / "work1")
  assert artefact.check_hash(moved, h) == h
  back = artefact.load(moved, expected_hash=h)
  np.testing.assert_array_equal(back.item_codes, art.item_codes)
  assert back.info == {"world_dir": "../world"}
  # info is outside the hash: a different note gives the same hash ...
  other = dataclasses.replace(art, info={"world_dir": "/somewhere/else"})
  assert _save_with_tokenizer(other, tmp_path / "c") == h
  # ... and no absolute path of the first location is stored anywhere.
  for p in moved.rglob("*"):
    if p.is_file():
      assert str(tmp_path).encode() not in p.read_bytes(), p


def test_rewriting_removes_stale_report_files(art, tmp_path):
  artefact.save(art, tmp_path)
  fewer = dataclasses.replace(art, report_files={})
  h = artefact.save(fewer, tmp_path)
  assert not (tmp_path / "report" / "hist_main.png").exists()
  assert artefact.load(tmp_path, h).report_files == {}


def test_schema_versions(art, tmp_path):
  h = artefact.save(art, tmp_path)
  m = json.loads((tmp_path / "manifest.json").read_text())
  assert m["schema_version"] == 2
  # A version-1 manifest (before covered files) still verifies and loads.
  m["schema_version"] = 1
  del m["folders"], m["info"]
  (tmp_path / "manifest.json").write_text(json.dumps(m))
  assert artefact.load(tmp_path, expected_hash=h).info == {}
  m["schema_version"] = 3
  (tmp_path / "manifest.json").write_text(json.dumps(m))
  with pytest.raises(artefact.ArtefactError, match=r"'schema_version' is 3"):
    artefact.check_hash(tmp_path)
