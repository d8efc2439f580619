"""Byte-deterministic ``.npz`` files (fixed zip timestamps, sorted names).

``np.savez`` stamps every member with the current time, so saving the same
arrays twice gives different bytes and a different sha256. The SID artefact
hashes its files (artefact.py), so everything it covers is written here.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping

import numpy as np


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  """The bytes of an uncompressed ``.npz`` holding ``arrays`` (readable by
  ``np.load``); identical arrays give identical bytes."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
    for name in sorted(arrays):
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      arr = io.BytesIO()
      np.lib.format.write_array(arr, np.ascontiguousarray(arrays[name]))
      zf.writestr(info, arr.getvalue())
  return buf.getvalue()


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes ``npz_bytes(arrays)`` to ``path``."""
  with open(path, "wb") as f:
    f.write(npz_bytes(arrays))
