"""JsonlWriter and the manifest: hashes, counts, CJK text."""

from __future__ import annotations

import hashlib
import json

from onesearch_jax.world import writer


def test_jsonl_writer_hashes_bytes_and_keeps_cjk(tmp_path):
  rows = [
    {"query": "红色连衣裙女夏季", "n": 1},
    {"query": "red dress", "x": [1.5, "a"]},
  ]
  with writer.JsonlWriter(tmp_path / "t.jsonl") as w:
    for r in rows:
      w.write(r)
  data = (tmp_path / "t.jsonl").read_bytes()
  assert w.rows == 2
  assert (
    w.sha256
    == hashlib.sha256(data).hexdigest()
    == writer.sha256_file(tmp_path / "t.jsonl")
  )
  assert "红色连衣裙女夏季".encode() in data  # not \\u-escaped
  assert [json.loads(x) for x in data.decode().splitlines()] == rows


def test_manifest_content_hash(tmp_path):
  files = {"b.jsonl": "22", "a.jsonl": "11"}
  m = writer.write_manifest(
    tmp_path,
    source="simulator",
    config={"seed": 3},
    counts={"a": 1},
    files=files,
    extra={"k": 1},
  )
  expected = hashlib.sha256(
    json.dumps({"a.jsonl": "11", "b.jsonl": "22"}).encode()
  ).hexdigest()
  assert m["content_hash"] == expected
  assert list(m["files"]) == ["a.jsonl", "b.jsonl"]
  assert json.loads((tmp_path / "manifest.json").read_text()) == m
  assert m["schema_version"] == 1 and m["k"] == 1
  # Order of the input dict does not matter; content does.
  assert writer.content_hash(dict(reversed(files.items()))) == expected
  assert writer.content_hash({**files, "a.jsonl": "12"}) != expected
