"""The Amazon ESCI excerpt as a query -> product benchmark (no users).

Source: ``shared/data/real/esci/esci_pairs_with_titles.csv`` (Apache-2.0, see
the LICENSE/NOTICE beside it), columns::

  source, query_id, query, query_source, product_id, product_title,
  product_brand, product_color, esci_label, gain, small_version, split

``load_esci_pairs`` validates it and returns an ``EsciBenchmark`` (queries,
products, graded judgements). ``write_esci_world`` writes it in the
KuaiSearch schema so that the whole pipeline can run on it:

  * ``items.jsonl``: one item per product; ``brand_id`` = ``brand_name`` =
    the ESCI brand ("" when missing); seller and category fields are "";
    ``attributes`` holds ``brand``/``color`` only where that text occurs in
    the title as whole words, any case (the value as written in the title);
    no price.
  * ``relevance.jsonl``: one row per judgement, ``score`` = gain
    (E=3, S=2, C=1, I=0), ``item_id`` = product, ``attr_value`` = color.
  * ``recall.jsonl``: one session per query, ``session_id`` =
    ``esci-<query_id>``; ``impressed_item_ids`` = every judged product of the
    query in CSV order (ESCI has no display order), ``clicked_item_ids`` = its
    E-labelled products, ``purchased_item_ids`` = []; ``time_index`` =
    train sessions first, then test, each in CSV order.
  * ``users.jsonl``: a single anonymous user (``esci-anonymous``) who issues
    every session; ``ranking.jsonl`` is empty.
  * ``split``: the CSV's ``split`` column. In the excerpt it is ``train``
    (Grandi9 subset, 50 queries), ``test`` (HarshM0210 subset, 500 queries)
    or empty (malusamayo subset, 200 queries, whose source rows carry no
    split); empty maps to ``empty_split`` ("train" by default, so the test
    split stays the official ESCI test queries).
  * ``LICENSE`` and ``NOTICE`` are copied next to the files, and a
    ``manifest.json`` (source "esci") is written last.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Mapping

from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import schema

COLUMNS = (
  "source",
  "query_id",
  "query",
  "query_source",
  "product_id",
  "product_title",
  "product_brand",
  "product_color",
  "esci_label",
  "gain",
  "small_version",
  "split",
)
LABEL_GAIN: Mapping[str, int] = {"E": 3, "S": 2, "C": 1, "I": 0}
CSV_SPLITS = ("train", "test", "")
ANONYMOUS_USER = "esci-anonymous"
LICENSE_FILES = ("LICENSE", "NOTICE")


class EsciError(ValueError):
  """A bad row in the ESCI CSV; the message names file, CSV line and column."""

  def __init__(self, file: str, line: int, column: str | None, problem: str):
    self.file = file
    self.line = line
    self.column = column
    where = f"{file}:{line}"
    what = problem if column is None else f"column '{column}': {problem}"
    super().__init__(f"{where}: {what}")


@dataclasses.dataclass(frozen=True)
class EsciQuery:
  query_id: str
  query: str
  query_source: str
  split: str  # the CSV value: "train", "test" or ""
  source: str  # which public subset the row came from
  line: int  # first CSV line of the query


@dataclasses.dataclass(frozen=True)
class EsciProduct:
  product_id: str
  title: str
  brand: str  # "" when unknown
  color: str  # "" when unknown
  line: int  # first CSV line of the product


@dataclasses.dataclass(frozen=True)
class EsciJudgement:
  query_id: str
  product_id: str
  label: str  # E | S | C | I
  gain: int  # 3 | 2 | 1 | 0
  small_version: bool
  line: int


@dataclasses.dataclass(frozen=True)
class EsciBenchmark:
  """Queries, products and graded judgements, each in CSV order."""

  path: str
  queries: tuple[EsciQuery, ...]
  products: tuple[EsciProduct, ...]
  judgements: tuple[EsciJudgement, ...]

  def qrels(self) -> dict[str, dict[str, int]]:
    """query_id -> {product_id: gain}, every judged pair (gain 0 included)."""
    out: dict[str, dict[str, int]] = {q.query_id: {} for q in self.queries}
    for j in self.judgements:
      out[j.query_id][j.product_id] = j.gain
    return out

  def label_counts(self) -> collections.Counter:
    return collections.Counter(j.label for j in self.judgements)


def _merge_product(
  old: EsciProduct, title: str, brand: str, color: str, file: str, line: int
) -> EsciProduct:
  """Fills a product's empty brand/color from a later row; conflicts raise."""
  fields = {"product_title": (old.title, title)}
  fields["product_brand"] = (old.brand, brand)
  fields["product_color"] = (old.color, color)
  for column, (a, b) in fields.items():
    if a and b and a != b:
      raise EsciError(
        file,
        line,
        column,
        f"{json.dumps(b, ensure_ascii=False)} differs from "
        f"{json.dumps(a, ensure_ascii=False)} at line {old.line} "
        f"(product {old.product_id})",
      )
  return dataclasses.replace(old, brand=old.brand or brand, color=old.color or color)


def load_esci_pairs(path: str | os.PathLike) -> EsciBenchmark:
  """Reads and validates ``esci_pairs_with_titles.csv``.

  Checks: the header has every column of COLUMNS; each row has as many
  values as the header; ids, query and title are non-empty; ``esci_label``
  is E/S/C/I and ``gain`` is its gain; ``small_version`` is 0/1; ``split`` is
  train/test/empty; a query id keeps one query text, source and split; a
  product keeps one title (an empty brand/color is filled from another row,
  two different non-empty values raise); no (query, product) pair repeats.

  Args:
    path: the CSV file.

  Returns:
    The EsciBenchmark.

  Raises:
    EsciError: naming the file, the 1-based CSV line and the column.
  """
  path = os.fspath(path)
  file = os.path.basename(path)
  queries: dict[str, EsciQuery] = {}
  products: dict[str, EsciProduct] = {}
  judgements: list[EsciJudgement] = []
  pair_line: dict[tuple[str, str], int] = {}
  with open(path, encoding="utf-8", newline="") as f:
    rows = csv.reader(f)
    try:
      header = next(rows)
    except StopIteration:
      raise EsciError(file, 1, None, "empty file, expected a header") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
      raise EsciError(file, 1, missing[0], "missing from the header")
    index = {c: header.index(c) for c in COLUMNS}
    while True:
      line = rows.line_num + 1  # first physical line of the next record
      try:
        values = next(rows)
      except StopIteration:
        break
      except csv.Error as e:
        raise EsciError(file, line, None, f"malformed CSV: {e}") from None
      if not values:
        continue  # a blank line holds no record
      if len(values) != len(header):
        raise EsciError(
          file, line, None, f"expected {len(header)} values, got {len(values)}"
        )
      row = {c: values[i] for c, i in index.items()}
      for column in ("query_id", "query", "product_id", "product_title"):
        if not row[column].strip():
          raise EsciError(file, line, column, "empty value")
      label = row["esci_label"]
      if label not in LABEL_GAIN:
        raise EsciError(
          file, line, "esci_label", f"expected one of E, S, C, I, got {label!r}"
        )
      if row["gain"] != str(LABEL_GAIN[label]):
        raise EsciError(
          file,
          line,
          "gain",
          f"expected {LABEL_GAIN[label]} for label {label}, got {row['gain']!r}",
        )
      if row["small_version"] not in ("0", "1"):
        raise EsciError(
          file, line, "small_version", f"expected 0 or 1, got {row['small_version']!r}"
        )
      if row["split"] not in CSV_SPLITS:
        raise EsciError(
          file, line, "split", f"expected train, test or empty, got {row['split']!r}"
        )
      qid, pid = row["query_id"], row["product_id"]
      query = queries.get(qid)
      if query is None:
        queries[qid] = EsciQuery(
          qid, row["query"], row["query_source"], row["split"], row["source"], line
        )
      else:
        for column, old in (
          ("query", query.query),
          ("query_source", query.query_source),
          ("split", query.split),
        ):
          if row[column] != old:
            raise EsciError(
              file,
              line,
              column,
              f"{row[column]!r} differs from {old!r} for query_id {qid} "
              f"at line {query.line}",
            )
      title, brand, color = (
        row["product_title"],
        row["product_brand"],
        row["product_color"],
      )
      if pid in products:
        products[pid] = _merge_product(products[pid], title, brand, color, file, line)
      else:
        products[pid] = EsciProduct(pid, title, brand, color, line)
      if (qid, pid) in pair_line:
        raise EsciError(
          file,
          line,
          "product_id",
          f"pair (query_id {qid}, product_id {pid}) repeats line "
          f"{pair_line[(qid, pid)]}",
        )
      pair_line[(qid, pid)] = line
      judgements.append(
        EsciJudgement(
          qid, pid, label, LABEL_GAIN[label], row["small_version"] == "1", line
        )
      )
  return EsciBenchmark(
    path=path,
    queries=tuple(queries.values()),
    products=tuple(products.values()),
    judgements=tuple(judgements),
  )


def _as_in_title(title: str, value: str) -> str | None:
  """``value`` as written in ``title`` (whole words, any case), or None."""
  if not value.strip():
    return None
  match = re.search(rf"(?<!\w){re.escape(value.strip())}(?!\w)", title, re.IGNORECASE)
  return match.group(0) if match else None


def _item_row(product: EsciProduct) -> dict:
  attributes = {}
  for kind, value in (("brand", product.brand), ("color", product.color)):
    written = _as_in_title(product.title, value)
    if written:
      attributes[kind] = written
  row = {f.name: "" for f in schema.ITEMS.fields if f.required}
  row.update(
    item_id=product.product_id,
    item_title=product.title,
    brand_id=product.brand,
    brand_name=product.brand,
    attributes=attributes,
  )
  return row


def esci_world_tables(
  bench: EsciBenchmark, *, empty_split: str = "train"
) -> dict[str, list[dict]]:
  """The benchmark as KuaiSearch-schema rows (see the module docstring)."""
  if empty_split not in schema.SPLITS:
    raise ValueError(f"empty_split must be one of {schema.SPLITS}, got {empty_split!r}")
  products = {p.product_id: p for p in bench.products}
  by_query: dict[str, list[EsciJudgement]] = collections.defaultdict(list)
  for j in bench.judgements:
    by_query[j.query_id].append(j)
  split_of = {q.query_id: q.split or empty_split for q in bench.queries}
  ordered = sorted(
    bench.queries, key=lambda q: schema.SPLITS.index(split_of[q.query_id])
  )
  recall = []
  for t, q in enumerate(ordered):
    judged = by_query[q.query_id]
    recall.append(
      {
        "user_id": ANONYMOUS_USER,
        "session_id": f"esci-{q.query_id}",
        "query": q.query,
        "impressed_item_ids": [j.product_id for j in judged],
        "clicked_item_ids": [j.product_id for j in judged if j.label == "E"],
        "purchased_item_ids": [],
        "time_index": t,
        "split": split_of[q.query_id],
      }
    )
  query_text = {q.query_id: q.query for q in bench.queries}
  relevance = []
  for j in bench.judgements:
    p = products[j.product_id]
    relevance.append(
      {
        "query": query_text[j.query_id],
        "item_title": p.title,
        "brand": p.brand,
        "seller_name": "",
        "attr_value": p.color,
        "score": j.gain,
        "item_id": p.product_id,
      }
    )
  user = {f.name: "unknown" for f in schema.USERS.fields}
  user.update(user_id=ANONYMOUS_USER, fre_country="US")
  return {
    "users": [user],
    "items": [_item_row(p) for p in bench.products],
    "recall": recall,
    "ranking": [],
    "relevance": relevance,
  }


def write_esci_world(
  src_csv: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  empty_split: str = "train",
) -> dict[str, int]:
  """Writes the ESCI excerpt as a world directory in the KuaiSearch schema.

  Args:
    src_csv: ``esci_pairs_with_titles.csv``; its directory must hold
      ``LICENSE`` and ``NOTICE``, which are copied to ``out_dir``.
    out_dir: the world directory (created if needed).
    empty_split: the split of queries whose CSV split is empty.

  Returns:
    Rows written per table.
  """
  src_csv = os.fspath(src_csv)
  out_dir = os.fspath(out_dir)
  src_dir = os.path.dirname(os.path.abspath(src_csv))
  for name in LICENSE_FILES:
    if not os.path.isfile(os.path.join(src_dir, name)):
      raise FileNotFoundError(
        f"{os.path.join(src_dir, name)} is missing: the ESCI licence files must "
        "travel with the data"
      )
  tables = esci_world_tables(load_esci_pairs(src_csv), empty_split=empty_split)
  os.makedirs(out_dir, exist_ok=True)
  files = {}
  for name in schema.TABLES:
    target = os.path.join(out_dir, schema.TABLES[name].filename)
    with open(target, "w", encoding="utf-8") as f:
      for row in tables[name]:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    files[os.path.basename(target)] = manifest_lib.file_sha256(target)
  for name in LICENSE_FILES:
    shutil.copyfile(os.path.join(src_dir, name), os.path.join(out_dir, name))
  counts = {name: len(rows) for name, rows in tables.items()}
  manifest = {
    "schema_version": 1,
    "source": "esci",
    "config": {
      "src_csv": os.path.basename(src_csv),
      "src_sha256": manifest_lib.file_sha256(src_csv),
      "empty_split": empty_split,
    },
    "counts": counts,
    "files": files,
    "content_hash": manifest_lib.content_hash(files),
  }
  manifest_lib.save_manifest(out_dir, manifest, indent=2, sort_keys=True)
  return counts
