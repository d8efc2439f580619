"""The one owner of ``manifest.json``: file hashes, content hash, read, write.

A world directory (simulator, ESCI) and the SID artefact (``khqe.artefact``)
each carry a ``manifest.json`` whose ``files`` maps a relative path to the
hex sha256 of its bytes and whose ``content_hash`` is

    sha256(json.dumps(files, sort_keys=True))

(``content_hash``). Stage markers and caches key on these hashes, so this
module is the only place that computes them, and the manifests it writes are
byte-for-byte what the writers wrote before it existed:

* ``write_manifest``: the simulator's world manifest (indent 2, keys in
  insertion order);
* ``save_manifest(dir, manifest, indent=..., sort_keys=...)``: any manifest
  dict in one of the fixed layouts its writers use (ESCI: indent 2, sorted
  keys; SID artefact: indent 1, sorted keys).

A world without a manifest (real KuaiSearch files) is hashed by the same
rule over its ``*.jsonl`` files (``jsonl_content_hash``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from onesearch_jax.world import schema

MANIFEST = schema.MANIFEST
# The world manifest's schema version (the SID artefact has its own).
SCHEMA_VERSION = 1

_CHUNK = 1 << 20


def file_digest() -> hashlib._Hash:
  """A fresh digest of the file-hash algorithm, for hashing bytes as they are
  written: its ``hexdigest()`` equals ``file_sha256`` of the same bytes."""
  return hashlib.sha256()


def file_sha256(path: str | os.PathLike) -> str:
  """The hex sha256 of a file's bytes (read in 1 MiB chunks)."""
  digest = file_digest()
  with open(path, "rb") as f:
    while block := f.read(_CHUNK):
      digest.update(block)
  return digest.hexdigest()


def content_hash(files: Mapping[str, str]) -> str:
  """The manifest's content hash: sha256 of ``json.dumps(files, sort_keys=True)``.

  Args:
    files: relative path -> hex sha256, in any order.

  Returns:
    The hex digest (independent of the order of ``files``).
  """
  text = json.dumps(dict(files), sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def jsonl_hashes(directory: str | os.PathLike) -> dict[str, str]:
  """{file name: sha256} of every ``*.jsonl`` file directly in ``directory``."""
  return {
    p.name: file_sha256(p) for p in sorted(pathlib.Path(directory).glob("*.jsonl"))
  }


def jsonl_content_hash(directory: str | os.PathLike) -> str:
  """``content_hash`` of the ``*.jsonl`` files directly in ``directory``.

  The hash of a world that has no manifest (and the pipeline's world check of
  a user-supplied world); it does not depend on where the directory lives.
  """
  return content_hash(jsonl_hashes(directory))


def world_content_hash(
  directory: str | os.PathLike, manifest: Mapping[str, Any] | None = None
) -> str:
  """A world's content hash: its manifest's, else ``jsonl_content_hash``.

  Args:
    directory: the world directory.
    manifest: its parsed manifest (None or one without ``content_hash``: hash
      the ``*.jsonl`` files).
  """
  if manifest and manifest.get("content_hash"):
    return str(manifest["content_hash"])
  return jsonl_content_hash(directory)


def manifest_text(
  manifest: Mapping[str, Any], *, indent: int = 2, sort_keys: bool = False
) -> str:
  """The text of a manifest file: ``json.dumps`` (ASCII) plus a newline."""
  return json.dumps(manifest, indent=indent, sort_keys=sort_keys) + "\n"


def save_manifest(
  directory: str | os.PathLike,
  manifest: Mapping[str, Any],
  *,
  indent: int = 2,
  sort_keys: bool = False,
) -> pathlib.Path:
  """Writes ``<directory>/manifest.json`` (``manifest_text``); returns its path."""
  path = pathlib.Path(directory) / MANIFEST
  text = manifest_text(manifest, indent=indent, sort_keys=sort_keys)
  path.write_text(text, encoding="utf-8")
  return path


def read_manifest(directory: str | os.PathLike) -> Any:
  """The parsed ``<directory>/manifest.json``, or None when there is none.

  Raises:
    json.JSONDecodeError: the file is not valid JSON (callers name it in
      their own error type).
  """
  path = pathlib.Path(directory) / MANIFEST
  if not path.is_file():
    return None
  return json.loads(path.read_text(encoding="utf-8"))


def write_manifest(
  out_dir: str | os.PathLike,
  *,
  source: str,
  config: dict[str, Any],
  counts: dict[str, int],
  files: dict[str, str],
  extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Writes a world's ``<out_dir>/manifest.json`` and returns it.

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
  save_manifest(out_dir, manifest)
  return manifest
