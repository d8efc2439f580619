"""Verify a world directory's ``manifest.json`` against its files.

``world/manifest.py`` computes the hashes and writes manifests; this module
reads one back for the reader and reports each disagreement as a
``SchemaError`` with reason ``manifest``.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import schema
from onesearch_jax.world.validation import SchemaError


def check_manifest(directory: str | os.PathLike) -> list[SchemaError]:
  """Verifies ``<dir>/manifest.json`` against the files beside it.

  Checks that every listed file exists and has the listed sha256, and that
  ``content_hash`` matches the ``files`` dict.

  Returns:
    The problems found (empty if the manifest is consistent).

  Raises:
    FileNotFoundError: there is no manifest.json.
    SchemaError: the manifest itself is not valid JSON or lacks ``files``.
  """
  directory = os.fspath(directory)
  manifest = read_manifest(directory, must_be_object=False)
  if manifest is None:
    path = os.path.join(directory, schema.MANIFEST)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
  files = manifest.get("files") if isinstance(manifest, dict) else None
  if not isinstance(files, dict):
    raise SchemaError(
      schema.MANIFEST, None, "files", "manifest", "missing or not an object"
    )
  problems = []
  for name, expected in sorted(files.items()):
    target = os.path.join(directory, name)
    if not os.path.isfile(target):
      problems.append(
        SchemaError(name, None, None, "manifest", "listed in manifest.json but missing")
      )
      continue
    actual = manifest_lib.file_sha256(target)
    if actual != expected:
      problems.append(
        SchemaError(
          name,
          None,
          None,
          "manifest",
          f"sha256 {actual} differs from manifest.json's {expected}",
        )
      )
  expected_hash = manifest_lib.content_hash(files)
  if "content_hash" in manifest and manifest["content_hash"] != expected_hash:
    problems.append(
      SchemaError(
        schema.MANIFEST,
        None,
        "content_hash",
        "manifest",
        f"{manifest['content_hash']} differs from the hash of 'files' "
        f"({expected_hash})",
      )
    )
  return problems


def read_manifest(directory: str, must_be_object: bool = True) -> Any:
  """The parsed manifest (None when absent); SchemaError when unreadable."""
  try:
    manifest = manifest_lib.read_manifest(directory)
  except json.JSONDecodeError as e:
    raise SchemaError(
      schema.MANIFEST, e.lineno, None, "manifest", f"malformed JSON: {e.msg}"
    ) from None
  if must_be_object and manifest is not None and not isinstance(manifest, dict):
    raise SchemaError(schema.MANIFEST, 1, None, "manifest", "expected a JSON object")
  return manifest
