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
import hashlib
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
PSEUDO_USER = "esci-pseudo"
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


def validation_ids(bench: EsciBenchmark, n: int) -> list[str]:
  """The validation queries: ``n`` query ids of the non-test queries with at
  least one E product, those with the smallest sha256(query_id) (fixed by the
  ids alone), in CSV order.

  Raises:
    ValueError: fewer than ``n`` such queries.
  """
  exact = {j.query_id for j in bench.judgements if j.label == "E"}
  pool = [
    q.query_id for q in bench.queries if q.split != "test" and q.query_id in exact
  ]
  if n > len(pool):
    raise ValueError(
      f"validation={n}, but only {len(pool)} train queries have an E product"
    )
  chosen = set(sorted(pool, key=lambda q: hashlib.sha256(q.encode()).hexdigest())[:n])
  return [q for q in pool if q in chosen]


_WORD = re.compile(r"[^\W_]+(?:['.&+/-][^\W_]+)*")
# Words a query does not start or end with (a span "chairs with" -> "chairs").
_EDGE_STOP = frozenset("a an and the of for with in on by to from or at as w".split())


def _words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


def _trim(words: list[str]) -> list[str]:
  lo, hi = 0, len(words)
  while lo < hi and words[lo] in _EDGE_STOP:
    lo += 1
  while hi > lo and words[hi - 1] in _EDGE_STOP:
    hi -= 1
  return words[lo:hi]


def pseudo_queries(product: EsciProduct, k: int, *, seed: int = 0) -> list[str]:
  """Up to ``k`` distinct search-like queries made from one product's text.

  Only ``product.title``, ``brand`` and ``color`` are read; the result depends
  on them, ``product_id``, ``k`` and ``seed`` only. Text is lower-cased to
  words (runs of letters and digits, any script; inner ' . & + / -
  kept); stop words are trimmed
  from a phrase's ends. In order of preference:

    1. the head: the first 4 title words after a leading brand;
    2. the brand's first 3 words + the head's first 2 words;
    3. the color's first 2 words + the head's first 2 words;
    4. the first title segment (up to , ( [ | : or " - "), at most 6 words;
    5. spans of 2-4 consecutive title words at positions drawn from a
       generator seeded by sha256(seed, product_id), until k are found or
       a fixed number of draws (8 k) is spent.

  Args:
    product: the product.
    k: how many at most (0: none).
    seed: the span draws' seed.

  Returns:
    Distinct queries of 1-6 words (longer phrases are cut), in the order
    above.
  """
  if k <= 0:
    return []
  title = _words(product.title)
  brand = _words(product.brand)
  body = title[len(brand) :] if brand and title[: len(brand)] == brand else title
  head = _trim(body[:4])
  out: list[str] = []

  def add(words: list[str]) -> None:
    words = _trim(words[:6])
    text = " ".join(words)
    if words and len(out) < k and text not in out:
      out.append(text)

  add(head)
  if brand:
    add(brand[:3] + _trim(body[:2]))
  color = _words(product.color)
  if color:
    add(color[:2] + _trim(body[:2]))
  first = re.split(r"[,(\[|:]| - ", product.title, maxsplit=1)[0]
  add(_words(first)[:6])
  digest = hashlib.sha256(f"{seed}:{product.product_id}".encode()).digest()
  state = int.from_bytes(digest[:8], "little")
  for _ in range(8 * k):
    if len(out) >= k or len(title) < 2:
      break
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    length = 2 + (state >> 33) % 3
    start = (state >> 13) % max(1, len(title) - 1)
    add(title[start : start + length])
  return out


def esci_world_tables(
  bench: EsciBenchmark,
  *,
  empty_split: str = "train",
  validation: int = 0,
  pseudo_per_item: int = 0,
  pseudo_seed: int = 0,
) -> dict[str, list[dict]]:
  """The benchmark as KuaiSearch-schema rows (see the module docstring).

  Args:
    bench: the loaded CSV.
    empty_split: the split of queries whose CSV split is empty.
    validation: 0, or the number of train queries held out as the "test"
      split of a validation world (``validation_ids``; the official test
      queries are then left out).
    pseudo_per_item: pseudo-queries per product (``pseudo_queries``) added
      as train sessions of ``PSEUDO_USER``.
    pseudo_seed: their span draws' seed.
  """
  if empty_split not in schema.SPLITS:
    raise ValueError(f"empty_split must be one of {schema.SPLITS}, got {empty_split!r}")
  if validation < 0 or pseudo_per_item < 0:
    raise ValueError(
      f"validation and pseudo_per_item must be >= 0, got {validation}, {pseudo_per_item}"
    )
  products = {p.product_id: p for p in bench.products}
  by_query: dict[str, list[EsciJudgement]] = collections.defaultdict(list)
  for j in bench.judgements:
    by_query[j.query_id].append(j)
  split_of = {q.query_id: q.split or empty_split for q in bench.queries}
  queries = list(bench.queries)
  if validation:
    held = set(validation_ids(bench, validation))
    queries = [q for q in queries if q.split != "test"]
    split_of = {q.query_id: "test" if q.query_id in held else "train" for q in queries}
  kept = {q.query_id for q in queries}
  ordered = sorted(queries, key=lambda q: schema.SPLITS.index(split_of[q.query_id]))
  recall = []
  # Pseudo sessions first: one per distinct pseudo-query, clicking every
  # product that made it.
  made: dict[str, list[str]] = {}
  for p in bench.products:
    for text in pseudo_queries(p, pseudo_per_item, seed=pseudo_seed):
      made.setdefault(text, []).append(p.product_id)
  for n, (text, pids) in enumerate(made.items()):
    recall.append(
      {
        "user_id": PSEUDO_USER,
        "session_id": f"esci-pseudo-{n}",
        "query": text,
        "impressed_item_ids": list(pids),
        "clicked_item_ids": list(pids),
        "purchased_item_ids": [],
        "time_index": n,
        "split": "train",
      }
    )
  for t, q in enumerate(ordered, start=len(recall)):
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
    if j.query_id not in kept:
      continue
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
  users = []
  for uid in (ANONYMOUS_USER, PSEUDO_USER) if made else (ANONYMOUS_USER,):
    user = {f.name: "unknown" for f in schema.USERS.fields}
    user.update(user_id=uid, fre_country="US")
    users.append(user)
  return {
    "users": users,
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
  validation: int = 0,
  pseudo_per_item: int = 0,
  pseudo_seed: int = 0,
) -> dict[str, int]:
  """Writes the ESCI excerpt as a world directory in the KuaiSearch schema.

  Args:
    src_csv: ``esci_pairs_with_titles.csv``; its directory must hold
      ``LICENSE`` and ``NOTICE``, which are copied to ``out_dir``.
    out_dir: the world directory (created if needed).
    empty_split: the split of queries whose CSV split is empty.
    validation, pseudo_per_item, pseudo_seed: see ``esci_world_tables``
      (recorded in the manifest's config).

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
  tables = esci_world_tables(
    load_esci_pairs(src_csv),
    empty_split=empty_split,
    validation=validation,
    pseudo_per_item=pseudo_per_item,
    pseudo_seed=pseudo_seed,
  )
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
      "validation": validation,
      "pseudo_per_item": pseudo_per_item,
      "pseudo_seed": pseudo_seed,
    },
    "counts": counts,
    "files": files,
    "content_hash": manifest_lib.content_hash(files),
  }
  manifest_lib.save_manifest(out_dir, manifest, indent=2, sort_keys=True)
  return counts
