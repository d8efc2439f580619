"""Streaming JSONL writer (the manifest lives in ``manifest.py``)."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from onesearch_jax.world import manifest as manifest_lib


def dumps(row: Any) -> str:
  """The one JSON encoding of a row: compact, UTF-8 text (CJK kept as is)."""
  return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


class JsonlWriter:
  """Writes one JSON object per line and hashes the bytes as they go.

  Use as a context manager; `rows` and `sha256` are final after close()
  (``sha256`` equals ``manifest.file_sha256`` of the written file).
  """

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
    self._h = manifest_lib.file_digest()
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
