"""The versioned SID artefact (``workdir/sids/``): writer and reader.

Directory layout (one writer, one reader: this module):

* ``codebooks.npz``: ``rq_l1`` [k1, D], ``rq_l2`` [k2, D], ``rq_l3`` ([k2, k3, D]
  in parent mode, [k3, D] in global mode) and, with OPQ, ``opq_mean`` [D],
  ``opq_rotation`` [D, D], ``opq_codebooks`` [M, K, D / M]. Written with a fixed
  zip timestamp so identical content gives identical bytes (and hash).
* ``config.json``: the ``QuantizerConfig`` and free-form ``metadata``.
* ``items.jsonl``: one ``{"item_id", "codes", "sid", "popularity"}`` per item,
  in input order.
* ``queries.jsonl``: one ``{"query", "codes", "sid"}`` per query.
* ``sid_to_items.jsonl``: one ``{"sid", "codes", "item_ids"}`` per distinct item
  SID, SIDs in lexicographic code order. Tie policy: the items under one SID
  are ordered by descending popularity, then ascending item_id; a decoder that
  must return one item per SID takes the first.
* ``report/``: ``report.md`` and any extra report files (the PNG plots).
* covered paths: files or folders the caller wrote into the directory before
  ``save`` and that later stages read (build.py: the text encoder folder, the
  keyword dictionary, the optional embeddings folder); ``save(...,
  covered=[...])`` hashes every file under them like its own files.
* ``manifest.json``: ``{"schema_version": 2, "kind": "sid_artefact",
  "config": ..., "counts": ..., "files": {relative path: sha256},
  "folders": [covered folders], "content_hash": sha256(json.dumps(files,
  sort_keys=True)), "info": {...}}`` (the content hash follows the world
  manifest's rule).

What the content hash covers: every file any later stage reads (all of
``files``), by relative path and content only. Nothing in it depends on where
the directory lives: a copied or moved artefact keeps its hash. ``info``
(outside the hash) holds informational provenance such as the world path
relative to the artefact; the world itself is pinned inside the hash by its
content hash (``config.json`` metadata ``world_content_hash``).

Later stages pin the SID version by ``content_hash``: ``load(dir, expected)``
and ``check_hash(dir, expected)`` refuse a mismatch, naming both hashes, and
refuse any modified, missing or added file (a file inside a listed folder
that the manifest does not list).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from onesearch_jax.khqe import deterministic_npz, rq
from onesearch_jax.khqe import opq as opq_lib
from onesearch_jax.khqe import quantizer as quantizer_lib
from onesearch_jax.world import jsonl
from onesearch_jax.world import manifest as manifest_lib

SCHEMA_VERSION = 2
# Version 1 (no covered tokenizer files, no folders) is still readable.
READABLE_SCHEMAS = (1, 2)
MANIFEST = manifest_lib.MANIFEST


class ArtefactError(ValueError):
  """A SID artefact is missing, malformed, tampered with or the wrong version."""


@dataclasses.dataclass(frozen=True)
class SIDArtefact:
  """Everything later stages need about the semantic IDs.

  Attributes:
    quantizer: the fitted RQ-OPQ quantiser.
    item_ids: N item ids.
    item_codes: [N, L] int32 local codes.
    item_popularity: [N] float popularity (multimap tie policy).
    query_texts: Q query strings.
    query_codes: [Q, L] int32 local codes.
    report: the Markdown report.
    report_files: extra report files (name -> bytes), e.g. PNG plots.
    metadata: JSON-serialisable provenance (source world hash, encoder, ...);
      written to config.json, covered by the content hash.
    info: JSON-serialisable notes NOT covered by the hash (e.g. the world
      path relative to the artefact); written to the manifest.
  """

  quantizer: quantizer_lib.Quantizer
  item_ids: tuple[str, ...]
  item_codes: np.ndarray
  item_popularity: np.ndarray
  query_texts: tuple[str, ...]
  query_codes: np.ndarray
  report: str = ""
  report_files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
  metadata: Mapping[str, object] = dataclasses.field(default_factory=dict)
  info: Mapping[str, object] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.item_ids)
    if np.shape(self.item_codes)[0] != n or np.shape(self.item_popularity) != (n,):
      raise ArtefactError(
        f"SIDArtefact: {n} item ids but item_codes {np.shape(self.item_codes)} "
        f"and item_popularity {np.shape(self.item_popularity)}"
      )
    if np.shape(self.query_codes)[0] != len(self.query_texts):
      raise ArtefactError(
        f"SIDArtefact: {len(self.query_texts)} queries but query_codes "
        f"{np.shape(self.query_codes)}"
      )
    if len(set(self.item_ids)) != n:
      raise ArtefactError("SIDArtefact: item ids are not unique")

  @property
  def opq_codes(self) -> int:
    return self.quantizer.config.opq_codes

  def item_sids(self) -> list[str]:
    return quantizer_lib.sid_token_strings(self.item_codes, opq_codes=self.opq_codes)

  def query_sids(self) -> list[str]:
    return quantizer_lib.sid_token_strings(self.query_codes, opq_codes=self.opq_codes)

  def sid_to_items(self) -> dict[tuple[int, ...], list[str]]:
    """SID codes -> item ids, ordered by (-popularity, item_id); keys sorted."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(np.asarray(self.item_codes).tolist()):
      groups.setdefault(tuple(row), []).append(i)
    out = {}
    for key in sorted(groups):
      idx = groups[key]
      idx.sort(key=lambda i: (-float(self.item_popularity[i]), self.item_ids[i]))
      out[key] = [self.item_ids[i] for i in idx]
    return out


def _jsonl(rows) -> bytes:
  return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


@dataclasses.dataclass(frozen=True)
class Tables:
  """The artefact's three tables as blocks, for ``write`` (none held whole).

  Attributes:
    items: blocks of (item ids [B], codes [B, L] int, popularity [B]), in
      input order.
    queries: blocks of (query texts [B], codes [B, L] int).
    groups: blocks of (SID codes [G, L] int, G lists of item ids), SIDs in
      lexicographic code order, each list in the tie-policy order.
  """

  items: Iterable[tuple[Sequence[str], np.ndarray, np.ndarray]]
  queries: Iterable[tuple[Sequence[str], np.ndarray]]
  groups: Iterable[tuple[np.ndarray, Sequence[Sequence[str]]]]


def _write_blocks(path: pathlib.Path, blocks: Iterable[list[dict]]) -> int:
  """Writes JSON lines block by block; returns the number of rows."""
  n = 0
  with open(path, "wb") as f:
    for rows in blocks:
      f.write(_jsonl(rows))
      n += len(rows)
  return n


def _relative(name: str, what: str) -> str:
  """A clean relative POSIX path inside the artefact, or ArtefactError."""
  path = pathlib.PurePosixPath(name)
  if (
    not name
    or path.is_absolute()
    or ".." in path.parts
    or str(path) != name
    or name == MANIFEST
  ):
    raise ArtefactError(f"{what}: {name!r} is not a relative path inside the artefact")
  return name


def _files_under(root: pathlib.Path, folder: str) -> list[str]:
  """Relative paths of every regular file below ``root / folder``, sorted."""
  return sorted(
    p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file()
  )


def save(
  artefact: SIDArtefact,
  directory: str | os.PathLike,
  *,
  covered: Sequence[str] = (),
) -> str:
  """Writes the artefact; returns its content hash.

  Args:
    artefact: what to write.
    directory: target directory (created; existing artefact files replaced,
      the ``report/`` folder emptied first).
    covered: relative paths (files or folders) the caller already wrote in
      ``directory`` that later stages read; every file under them is hashed
      too (so editing, removing or adding one is refused by ``check_hash``).

  Returns:
    The manifest's ``content_hash``.

  Raises:
    ArtefactError: a bad report file name, or a covered path that is not a
      relative path inside the directory or does not exist.
  """
  multimap = artefact.sid_to_items()
  keys = np.asarray(list(multimap), dtype=np.int64).reshape(len(multimap), -1)
  tables = Tables(
    items=[(artefact.item_ids, artefact.item_codes, artefact.item_popularity)],
    queries=[(artefact.query_texts, artefact.query_codes)],
    groups=[(keys, list(multimap.values()))],
  )
  return write(
    directory,
    artefact.quantizer,
    tables,
    report=artefact.report,
    report_files=artefact.report_files,
    metadata=artefact.metadata,
    info=artefact.info,
    covered=covered,
  )


def write(
  directory: str | os.PathLike,
  quantizer: quantizer_lib.Quantizer,
  tables: Tables,
  *,
  report: str = "",
  report_files: Mapping[str, bytes] | None = None,
  metadata: Mapping[str, object] | None = None,
  info: Mapping[str, object] | None = None,
  covered: Sequence[str] = (),
) -> str:
  """Writes an artefact whose tables come in blocks; returns its content hash.

  ``save`` writes an in-memory ``SIDArtefact`` through this; a streamed build
  (stream_build.py) passes generators, so only one block of each table is in
  memory. The files are the same bytes for the same rows.

  Args:
    directory: target directory (created; ``report/`` emptied first).
    quantizer: the fitted quantiser (codebooks and config).
    tables: the item, query and SID -> items tables (see ``Tables``).
    report, report_files, metadata, info, covered: as in ``SIDArtefact``
      and ``save``.

  Returns:
    The manifest's ``content_hash``.

  Raises:
    ArtefactError: as ``save``.
  """
  out = pathlib.Path(directory)
  shutil.rmtree(out / "report", ignore_errors=True)
  (out / "report").mkdir(parents=True, exist_ok=True)
  q = quantizer
  opq_codes = q.config.opq_codes
  arrays = {"rq_l1": q.rq.l1, "rq_l2": q.rq.l2, "rq_l3": q.rq.l3}
  if q.opq is not None:
    arrays.update(
      opq_mean=q.opq.mean, opq_rotation=q.opq.rotation, opq_codebooks=q.opq.codebooks
    )
  files: dict[str, bytes] = {
    "codebooks.npz": deterministic_npz.npz_bytes(arrays),
    "config.json": json.dumps(
      {"quantizer": q.config.to_dict(), "metadata": dict(metadata or {})},
      indent=1,
      sort_keys=True,
      ensure_ascii=False,
    ).encode(),
    "report/report.md": report.encode(),
  }
  for name, data in (report_files or {}).items():
    if "/" in name or name in ("report.md", "") or name.startswith("."):
      raise ArtefactError(f"save: bad report file name {name!r}")
    files[f"report/{name}"] = bytes(data)

  def sids(codes: np.ndarray) -> list[str]:
    codes = np.asarray(codes, np.int64)
    return quantizer_lib.sid_token_strings(
      codes.reshape(codes.shape[0], -1), opq_codes=opq_codes
    )

  counts = {
    "items": _write_blocks(
      out / "items.jsonl",
      (
        [
          {"item_id": i, "codes": c, "sid": s, "popularity": float(p)}
          for i, c, s, p in zip(
            ids,
            np.asarray(codes).tolist(),
            sids(codes),
            np.asarray(pop).tolist(),
            strict=True,
          )
        ]
        for ids, codes, pop in tables.items
      ),
    ),
    "queries": _write_blocks(
      out / "queries.jsonl",
      (
        [
          {"query": t, "codes": c, "sid": s}
          for t, c, s in zip(
            texts, np.asarray(codes).tolist(), sids(codes), strict=True
          )
        ]
        for texts, codes in tables.queries
      ),
    ),
    "item_sids": _write_blocks(
      out / "sid_to_items.jsonl",
      (
        [
          {"sid": s, "codes": k, "item_ids": list(v)}
          for s, k, v in zip(sids(keys), np.asarray(keys).tolist(), groups, strict=True)
        ]
        for keys, groups in tables.groups
      ),
    ),
  }
  for name, data in files.items():
    (out / name).write_bytes(data)
  hashes = {
    name: manifest_lib.file_sha256(out / name)
    for name in sorted([*files, "items.jsonl", "queries.jsonl", "sid_to_items.jsonl"])
  }
  folders = {"report"}
  for name in covered:
    _relative(name, "save: covered path")
    target = out / name
    if target.is_dir():
      folders.add(name)
      names = _files_under(out, name)
    elif target.is_file():
      names = [name]
    else:
      raise ArtefactError(f"save: covered path {target} does not exist")
    for rel in names:
      if rel in hashes:
        raise ArtefactError(f"save: covered path {rel} is an artefact file")
      hashes[rel] = manifest_lib.file_sha256(out / rel)
  manifest = {
    "schema_version": SCHEMA_VERSION,
    "kind": "sid_artefact",
    "config": q.config.to_dict(),
    "counts": counts,
    "files": dict(sorted(hashes.items())),
    "folders": sorted(folders),
    "content_hash": manifest_lib.content_hash(hashes),
    "info": dict(info or {}),
  }
  manifest_lib.save_manifest(out, manifest, indent=1, sort_keys=True)
  return manifest["content_hash"]


def check_hash(directory: str | os.PathLike, expected: str | None = None) -> str:
  """Verifies every file hash and the content hash; returns the content hash.

  Args:
    directory: artefact directory.
    expected: if given, the content hash the caller was built against.

  Raises:
    ArtefactError: a missing manifest or file, a file whose sha256 differs from
      the manifest (tampering), a file added inside a listed folder, or a
      content hash different from ``expected``.
  """
  root = pathlib.Path(directory)
  path = root / MANIFEST
  if not path.is_file():
    raise ArtefactError(f"{path}: missing (not a SID artefact directory)")
  try:
    manifest = manifest_lib.read_manifest(root)
  except json.JSONDecodeError as e:
    raise ArtefactError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from e
  for field in ("schema_version", "files", "content_hash"):
    if field not in manifest:
      raise ArtefactError(f"{path}: field '{field}' is missing")
  if manifest["schema_version"] not in READABLE_SCHEMAS:
    raise ArtefactError(
      f"{path}: field 'schema_version' is {manifest['schema_version']}, "
      f"this reader knows {list(READABLE_SCHEMAS)}"
    )
  files = manifest["files"]
  for name in manifest.get("folders", []):
    _relative(name, f"{path}: field 'folders'")
    if not (root / name).is_dir():
      raise ArtefactError(f"{root / name}: folder listed in {path} but missing")
    for rel in _files_under(root, name):
      if rel not in files:
        raise ArtefactError(
          f"{root / rel}: not listed in {path} (file added to the artefact "
          "after it was built)"
        )
  for name, want in sorted(files.items()):
    _relative(name, f"{path}: field 'files'")
    target = root / name
    if not target.is_file():
      raise ArtefactError(f"{target}: listed in {path} but missing")
    got = manifest_lib.file_sha256(target)
    if got != want:
      raise ArtefactError(
        f"{target}: sha256 {got} differs from {path}'s {want} (file modified)"
      )
  actual = manifest_lib.content_hash(files)
  if actual != manifest["content_hash"]:
    raise ArtefactError(
      f"{path}: field 'content_hash' is {manifest['content_hash']} but the "
      f"hash of 'files' is {actual}"
    )
  if expected is not None and expected != actual:
    raise ArtefactError(
      f"{root}: SID artefact content hash {actual} differs from the expected "
      f"{expected} (the SIDs were rebuilt; rebuild the downstream stages)"
    )
  return actual


def _read_jsonl(path: pathlib.Path, fields: tuple[str, ...]) -> list[dict]:
  """The rows of an artefact table (no blank lines: the writer writes none)."""
  try:
    return jsonl.read_jsonl(path, required=fields, skip_blank=False)
  except jsonl.JsonlError as e:
    raise ArtefactError(str(e)) from e


def _codes(rows: list[dict], width: int, path: pathlib.Path) -> np.ndarray:
  for lineno, row in enumerate(rows, start=1):
    if len(row["codes"]) != width:
      raise ArtefactError(
        f"{path}:{lineno}: field 'codes' has {len(row['codes'])} "
        f"entries, expected {width}"
      )
  return np.asarray([r["codes"] for r in rows], np.int32).reshape(len(rows), width)


def read_config(directory: str | os.PathLike) -> dict:
  """An artefact's ``config.json`` without loading it or checking its hash:
  {"quantizer": QuantizerConfig fields, "metadata": {... "variant": the
  build variant of the SIDs ...}} (cheap: what later stages need to size
  themselves, e.g. ``quantizer.opq_subspaces``)."""
  path = pathlib.Path(directory) / "config.json"
  return json.loads(path.read_text(encoding="utf-8"))


def load(directory: str | os.PathLike, expected_hash: str | None = None) -> SIDArtefact:
  """Reads an artefact after verifying its hashes (see ``check_hash``).

  Args:
    directory: artefact directory.
    expected_hash: optional content hash to insist on.

  Returns:
    The ``SIDArtefact``.
  """
  root = pathlib.Path(directory)
  check_hash(root, expected_hash)
  cfg = read_config(root)
  config = quantizer_lib.QuantizerConfig(**cfg["quantizer"])
  with np.load(root / "codebooks.npz") as z:
    arrays = {k: z[k] for k in z.files}
  codebooks = rq.RQCodebooks(
    l1=arrays["rq_l1"], l2=arrays["rq_l2"], l3=arrays["rq_l3"], l3_mode=config.l3_mode
  )
  opq = None
  if "opq_rotation" in arrays:
    opq = opq_lib.OPQ(
      mean=arrays["opq_mean"],
      rotation=arrays["opq_rotation"],
      codebooks=arrays["opq_codebooks"],
    )
  quant = quantizer_lib.Quantizer(config=config, rq=codebooks, opq=opq)
  width = quant.code_width
  items_path, queries_path = root / "items.jsonl", root / "queries.jsonl"
  items = _read_jsonl(items_path, ("item_id", "codes", "popularity"))
  queries = _read_jsonl(queries_path, ("query", "codes"))
  manifest = manifest_lib.read_manifest(root)
  listed = manifest["files"]
  report_files = {
    name.removeprefix("report/"): (root / name).read_bytes()
    for name in sorted(listed)
    if name.startswith("report/") and name != "report/report.md"
  }
  return SIDArtefact(
    quantizer=quant,
    item_ids=tuple(r["item_id"] for r in items),
    item_codes=_codes(items, width, items_path),
    item_popularity=np.asarray([r["popularity"] for r in items], np.float64),
    query_texts=tuple(r["query"] for r in queries),
    query_codes=_codes(queries, width, queries_path),
    report=(root / "report" / "report.md").read_text(encoding="utf-8"),
    report_files=report_files,
    metadata=cfg.get("metadata", {}),
    info=manifest.get("info", {}),
  )
