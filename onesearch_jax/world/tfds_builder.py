"""A TFDS builder ("kuaisearch") for world files in the KuaiSearch schema.

It reads ``<manual_dir>/<table>.jsonl`` (nothing is ever downloaded) and
writes one TFDS dataset per table, one ``BuilderConfig`` per table:

  * ``kuaisearch/recall`` and ``kuaisearch/ranking``: splits ``train`` and
    ``test``, taken from each row's ``split`` field (a split with no rows is
    left out);
  * ``kuaisearch/users``, ``items`` and ``relevance``: a single ``train``.

Feature encoding (TFDS needs every feature in every example):
  * ``str`` -> Text, ``int`` -> int64, ``float`` -> float32, ``bool`` -> bool,
    ``list[str]`` -> a sequence of Text;
  * ``dict[...]`` fields -> a JSON-encoded Text (``json.loads`` it back);
  * an absent (or null) optional field is written as ``""`` (str and dict
    fields), ``-1`` (int) or NaN (float);
  * fields outside the schema are not written (their names are logged).

Rows are validated one by one with ``reader.iter_rows`` (a bad row stops the
build with a ``SchemaError`` naming file:line and field); cross-table checks
(unknown ids, duplicate keys) are ``reader.load_world``'s job, run
``python -m onesearch_jax.world.reader <dir>`` first. When a
``manifest.json`` lists the table's file, its sha256 is verified.

Usage::

  from onesearch_jax.world import tfds_builder
  ds = tfds_builder.prepare("recall", manual_dir="path/to/world",
                            data_dir="path/to/tfds")  # builds once
  train = ds.as_dataset(split="train")
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import reader, schema

_SPLIT_TABLES = ("recall", "ranking")

# Value written for an absent optional field, per kind.
MISSING = {
  "str": "",
  "int": -1,
  "float": math.nan,
  "bool": False,
  "list[str]": [],
  "dict[str,str]": "",
  "dict[str,float]": "",
}


def _feature(kind: str) -> tfds.features.FeatureConnector:
  if kind == "str" or kind.startswith("dict["):
    return tfds.features.Text()
  if kind == "int":
    return tfds.features.Tensor(shape=(), dtype=np.int64)
  if kind == "float":
    return tfds.features.Tensor(shape=(), dtype=np.float32)
  if kind == "bool":
    return tfds.features.Tensor(shape=(), dtype=np.bool_)
  if kind == "list[str]":
    return tfds.features.Sequence(tfds.features.Text())
  raise ValueError(f"unknown field kind {kind!r}")


def features_for(table: schema.Table) -> tfds.features.FeaturesDict:
  """The TFDS features of one table (every schema field, optional included)."""
  return tfds.features.FeaturesDict({f.name: _feature(f.kind) for f in table.fields})


def encode_row(table: schema.Table, row: dict[str, Any]) -> dict[str, Any]:
  """A validated row -> a TFDS example (dicts JSON-encoded, absent filled)."""
  example = {}
  for field in table.fields:
    value = row.get(field.name)
    if value is None:
      example[field.name] = MISSING[field.kind]
    elif field.kind.startswith("dict["):
      example[field.name] = json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
      example[field.name] = value
  return example


class KuaiSearch(tfds.core.GeneratorBasedBuilder):
  """KuaiSearch-schema world tables, read from files the user provides."""

  name = "kuaisearch"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Schema version 1 (onesearch_jax.world.schema)."}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(
      name=table.name,
      description=f"{table.filename}: one example per row.",
    )
    for table in schema.TABLES.values()
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Nothing is downloaded. Put the world files in the KuaiSearch schema into
  one directory and pass it as manual_dir
  (tfds.download.DownloadConfig(manual_dir=...), or `tfds build
  --manual_dir=...`):

    <manual_dir>/users.jsonl  items.jsonl  recall.jsonl  ranking.jsonl
    <manual_dir>/relevance.jsonl  [manifest.json]

  (the ranking table may be rank.jsonl, its name in the KuaiSearch release;
  integer ids are written as their decimal strings).

  These are the KuaiSearch release files (one JSON object per line), the
  output of onesearch_jax.world (simulator or esci.write_world), or your own
  logs written with the same field names (see docs/DATA.md (Part 2)). Only
  the file of the chosen config (table) is read. Validate the directory
  first with: python -m onesearch_jax.world.reader <manual_dir>
  """

  @property
  def table(self) -> schema.Table:
    return schema.TABLES[self.builder_config.name]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=(
        "OneSearch world table in the KuaiSearch schema "
        "(Li et al., arXiv 2602.11518): " + self.table.filename
      ),
      features=features_for(self.table),
      homepage="https://arxiv.org/abs/2602.11518",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    try:
      path = reader.table_path(manual_dir, self.table)
    except reader.SchemaError as e:
      if e.reason != "missing_file":
        raise
      path = os.path.join(manual_dir, self.table.filename)
      raise FileNotFoundError(
        f"{path} is missing.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      ) from None
    _verify_against_manifest(manual_dir, os.path.basename(path))
    if self.table.name not in _SPLIT_TABLES:
      return {"train": self._generate_examples(path, None)}
    splits = _split_counts(path, self.table)
    if not splits:
      raise ValueError(f"{path}: no rows, so no split to build")
    return {s: self._generate_examples(path, s) for s in schema.SPLITS if s in splits}

  def _generate_examples(
    self, path: str, split: str | None
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    report = reader.SkipReport()
    for line, row in reader.iter_rows(path, self.table, report=report):
      if split is None or row["split"] == split:
        yield line, encode_row(self.table, row)
    for table, names in report.extra_fields.items():
      logging.warning(
        "%s: fields outside the schema not written to TFDS: %s",
        table,
        ", ".join(sorted(names)),
      )


def _split_counts(path: str, table: schema.Table) -> collections.Counter:
  counts = collections.Counter()
  for _, row in reader.iter_rows(path, table):
    counts[row["split"]] += 1
  return counts


def _verify_against_manifest(directory: str, filename: str) -> None:
  manifest = manifest_lib.read_manifest(directory)
  if manifest is None:
    return
  expected = manifest.get("files", {}).get(filename)
  if expected is None:
    return
  actual = manifest_lib.file_sha256(os.path.join(directory, filename))
  if actual != expected:
    raise reader.SchemaError(
      filename,
      None,
      None,
      "manifest",
      f"sha256 {actual} differs from manifest.json's {expected}",
    )


def prepare(
  table: str,
  *,
  manual_dir: str | os.PathLike,
  data_dir: str | os.PathLike,
) -> KuaiSearch:
  """Builds (once) and returns the ``kuaisearch/<table>`` builder.

  Args:
    table: a name in ``schema.TABLES``.
    manual_dir: the directory with the ``.jsonl`` files.
    data_dir: where TFDS writes the prepared dataset.

  Returns:
    The prepared builder; read it with ``builder.as_dataset(split=...)``.
  """
  if table not in schema.TABLES:
    raise KeyError(f"unknown table {table!r}; expected one of {tuple(schema.TABLES)}")
  builder = KuaiSearch(config=table, data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir), try_download_gcs=False
    )
  )
  return builder
