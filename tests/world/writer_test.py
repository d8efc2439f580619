"""JsonlWriter: row count, hash of the bytes written, CJK text."""

from __future__ import annotations

import hashlib
import json

from onesearch_jax.world import manifest, writer


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
    == manifest.file_sha256(tmp_path / "t.jsonl")
  )
  assert "红色连衣裙女夏季".encode() in data  # not \\u-escaped
  assert [json.loads(x) for x in data.decode().splitlines()] == rows
