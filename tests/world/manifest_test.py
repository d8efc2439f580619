"""world/manifest.py against independent hashlib / json computations."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from onesearch_jax.world import manifest, reader, schema, writer


def _sha(path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _content(files: dict[str, str]) -> str:
  """The documented rule, spelled out: sorted {path: sha256}, default json."""
  text = "{" + ", ".join(f'"{k}": "{v}"' for k, v in sorted(files.items())) + "}"
  return hashlib.sha256(text.encode()).hexdigest()


def test_hashes_of_a_written_world_match_hashlib(tiny_world_dir):
  m = json.loads((tiny_world_dir / "manifest.json").read_text())
  assert len(m["files"]) >= 8  # five tables + extras
  for name, digest in m["files"].items():
    assert manifest.file_sha256(tiny_world_dir / name) == _sha(tiny_world_dir / name)
    assert digest == _sha(tiny_world_dir / name), name
  assert manifest.content_hash(m["files"]) == _content(m["files"]) == m["content_hash"]
  tables = {p.name: _sha(p) for p in tiny_world_dir.glob("*.jsonl")}
  assert set(tables) == {f"{t}.jsonl" for t in schema.TABLES}
  assert manifest.jsonl_hashes(tiny_world_dir) == tables
  assert manifest.jsonl_content_hash(tiny_world_dir) == _content(tables)
  # The manifest covers the extras too, so the two world hashes differ.
  assert manifest.world_content_hash(tiny_world_dir, m) == m["content_hash"]
  assert manifest.world_content_hash(tiny_world_dir, None) == _content(tables)
  assert _content(tables) != m["content_hash"]
  # The re-exported names are the same functions.
  assert reader.file_sha256 is manifest.file_sha256
  assert reader.content_hash is manifest.content_hash


def test_world_hash_does_not_depend_on_location(tiny_world_dir, tmp_path):
  copy = tmp_path / "elsewhere"
  shutil.copytree(tiny_world_dir, copy)
  (copy / "manifest.json").unlink()
  assert manifest.jsonl_content_hash(copy) == manifest.jsonl_content_hash(
    tiny_world_dir
  )
  (copy / "users.jsonl").write_bytes((copy / "users.jsonl").read_bytes() + b"\n")
  assert manifest.jsonl_content_hash(copy) != manifest.jsonl_content_hash(
    tiny_world_dir
  )


def test_content_hash_order_independent_content_sensitive():
  files = {"b.jsonl": "22", "a.jsonl": "11"}
  expected = hashlib.sha256(b'{"a.jsonl": "11", "b.jsonl": "22"}').hexdigest()
  assert manifest.content_hash(files) == expected
  assert manifest.content_hash(dict(reversed(files.items()))) == expected
  assert manifest.content_hash({**files, "a.jsonl": "12"}) != expected


def test_file_digest_streams_like_file_sha256(tmp_path):
  data = [b'{"q":"\xe7\xba\xa2"}\n', b"x" * (3 << 20), b"\n"]  # > one 1 MiB chunk
  (tmp_path / "f").write_bytes(b"".join(data))
  digest = manifest.file_digest()
  for block in data:
    digest.update(block)
  expected = hashlib.sha256(b"".join(data)).hexdigest()
  assert digest.hexdigest() == manifest.file_sha256(tmp_path / "f") == expected
  with writer.JsonlWriter(tmp_path / "w.jsonl") as w:
    w.write({"query": "红色"})
  assert w.sha256 == _sha(tmp_path / "w.jsonl")


def test_write_manifest_bytes(tmp_path):
  files = {"b.jsonl": "22", "a.jsonl": "11"}
  m = manifest.write_manifest(
    tmp_path,
    source="simulator",
    config={"seed": 3, "name": "红"},
    counts={"a": 1},
    files=files,
    extra={"k": 1},
  )
  h = hashlib.sha256(b'{"a.jsonl": "11", "b.jsonl": "22"}').hexdigest()
  expected = (
    "{\n"
    '  "schema_version": 1,\n'
    '  "source": "simulator",\n'
    '  "config": {\n'
    '    "seed": 3,\n'
    '    "name": "\\u7ea2"\n'
    "  },\n"
    '  "counts": {\n'
    '    "a": 1\n'
    "  },\n"
    '  "files": {\n'
    '    "a.jsonl": "11",\n'
    '    "b.jsonl": "22"\n'
    "  },\n"
    f'  "content_hash": "{h}",\n'
    '  "k": 1\n'
    "}\n"
  )
  assert (tmp_path / "manifest.json").read_bytes() == expected.encode()
  assert manifest.read_manifest(tmp_path) == m == json.loads(expected)


def test_save_manifest_sorted_layout(tmp_path):
  """The layout of the ESCI world (indent 2) and SID artefact (indent 1)."""
  m = {"files": {"b": "2", "a": "1"}, "content_hash": "h", "kind": "k"}
  manifest.save_manifest(tmp_path, m, indent=1, sort_keys=True)
  assert (tmp_path / "manifest.json").read_bytes() == (
    b'{\n "content_hash": "h",\n "files": {\n  "a": "1",\n  "b": "2"\n },\n'
    b' "kind": "k"\n}\n'
  )
  manifest.save_manifest(tmp_path, {"b": 1, "a": 2}, indent=2, sort_keys=True)
  assert (tmp_path / "manifest.json").read_bytes() == b'{\n  "a": 2,\n  "b": 1\n}\n'


def test_read_manifest_absent_and_malformed(tmp_path):
  assert manifest.read_manifest(tmp_path) is None
  (tmp_path / "manifest.json").write_text('{"files": ')
  with pytest.raises(json.JSONDecodeError):
    manifest.read_manifest(tmp_path)
