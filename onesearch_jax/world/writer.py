"""Streaming JSONL writer and the world manifest (sha256 per file, content hash)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

SCHEMA_VERSION = 1


def dumps(row: Any) -> str:
  """The one JSON encoding of a row: compact, UTF-8 text (CJK kept as is)."""
  return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


class JsonlWriter:
  """Writes one JSON object per line and hashes the bytes as they go.

  Use as a context manager; `rows` and `sha256` are final after close().
  """

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
    self._h = hashlib.sha256()
    self.rows = 0
    self.sha256 = ""

  def write(self, row: dict[str, Any]) -> None:
    data = (dumps(row) + "\n").encode("utf-8")
    self._f.write(data)
    self._h.update(data)
    self.rows += 1

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()
      self.sha256 = self._h.hexdigest()

  def __enter__(self) -> JsonlWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
  """sha256 hex digest of a file, read in chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def content_hash(files: dict[str, str]) -> str:
  """sha256 of the json-dumped sorted {filename: sha256} dict."""
  return hashlib.sha256(
    json.dumps(dict(sorted(files.items()))).encode("utf-8")
  ).hexdigest()


def write_manifest(
  out_dir: str | os.PathLike,
  *,
  source: str,
  config: dict[str, Any],
  counts: dict[str, int],
  files: dict[str, str],
  extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Writes <out_dir>/manifest.json and returns it.

  Args:
    out_dir: the world directory.
    source: "simulator", "kuaisearch", ...
    config: the generating config (JSON-able).
    counts: rows per table.
    files: relative path -> sha256 of every data file (extras included).
    extra: more top-level keys (e.g. sampling rates), written as given.

  Returns:
    The manifest dict.
  """
  manifest = {
    "schema_version": SCHEMA_VERSION,
    "source": source,
    "config": config,
    "counts": dict(counts),
    "files": dict(sorted(files.items())),
    "content_hash": content_hash(files),
  }
  if extra:
    manifest.update(extra)
  path = pathlib.Path(out_dir) / "manifest.json"
  path.write_text(
    json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8"
  )
  return manifest
