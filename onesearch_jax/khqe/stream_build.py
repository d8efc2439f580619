"""The build_sids stage without holding the world (``BuildConfig.stream``).

``build.build_sids`` reads every table into memory, trains the text encoder
and mines keywords on all of it, quantises ``[queries; items]`` in memory and
writes the artefact from Python lists. This module writes the same artefact
(same files, same schema) with memory bounded by samples and blocks, not by
the number of items N:

  1. items pass (``stream_items.ItemScan``, the only full read of
     items.jsonl before the embeddings): every item id is written to a
     scratch file (then a fixed-width byte array on disk, sorted once for
     id -> row look-ups), the byte offset of every row kept (int64 of N);
     ``StreamSample.items`` catalogue rows are reservoir-sampled. The
     pipeline's sids stage passes ``world_checked``: the world stage has
     validated (or simulated) the directory, so this pass checks only the
     ids it reads, not every field;
  2. log pass over recall.jsonl: the distinct queries (first-seen order,
     then ranking.jsonl's), ``StreamSample.sessions`` recall rows
     reservoir-sampled, and per item (int64 arrays of N) the train
     popularity (impressions + clicks + purchases, the artefact's tie policy)
     and PV (impressions + clicks, the keyword dictionary's);
  3. the encoder's items: the sampled catalogue rows plus the items the
     sampled sessions reference (read at their byte offsets, not by a
     second pass over the file);
     vocabulary, aligned encoder and keyword dictionary are trained and mined
     on those (PV counted over the whole log);
  4. embeddings pass: every query, then every item, is embedded, matched
     and fused ``block_rows`` at a time into one memory-mapped
     ``[Q + N, D]`` float32 file (queries first, as the in-memory build);
  5. ``stream_sids``: the quantiser of ``BuildConfig.final_variant`` is fitted
     on at most ``points_per_centroid * k1`` sampled rows, then every row is
     encoded block by block into int32 ``.npy`` files;
  6. the artefact (``artefact.write``): items.jsonl in blocks, and
     sid_to_items.jsonl from an ``np.lexsort`` of the codes (an int array of
     N), the item ids of each block read from the on-disk id array.

Sample sizes (``build.StreamSample``, ``BuildConfig.stream_sample``) and why:

  * ``sessions`` = 200,000 recall rows: the encoder draws ``steps x
    batch_size`` = 400 x 256 = 102,400 pairs per loss; 200k sessions give at
    least as many clicked (query, item) pairs, so a step never sees a pair
    more often than it would on the whole log; the n-gram keyword fallback
    takes its query n-grams from them too;
  * ``items`` = 200,000 catalogue rows: the sentencepiece vocabulary samples
    200,000 sentences anyway (``VocabConfig.input_sentence_size``), and
    keyword PVs ranked on 200k items keep the dictionary's head (its
    ``max_keywords`` = 20,000 most viewed values);
  * ``queries`` = 200,000 distinct queries go into the vocabulary's text;
  * ``points_per_centroid`` = 256 x k1 rows fit the quantiser (faiss's
    default sampling, ``stream_sids``).

A world within every sample (the default and tiny worlds) trains, mines and
fits on exactly what ``build.build_sids`` does, in the same order, so the
codebooks are the same; the codes are ``Quantizer.encode``'s (the in-memory
build keeps the fit's own codes: they differ only where a small level-3
group held exact duplicates, see quantizer.py).

Rows that reference an id missing from the catalogue are kept, the unknown
ids ignored (counted as ``unknown_item`` by the encoder's pairs); the
in-memory reader's ``dangling="drop"`` (the public release's layout) drops
such rows instead, so on a release sample the two builds can see different
queries.

What stays in memory: the samples, one block, the distinct query strings and
their token ids (they scale with the log's distinct queries, not with N), and
per item a few numbers: popularity and PV (int64), the lexsort order and
codes (int32/int64), the sorted fixed-width id array (its width in
bytes), and until step 3 each row's byte offset and line number (int64).
No Python object per item. Only the final variant is built (the
report has one row; ``BuildConfig.variants`` is ignored); precomputed
embeddings and ``save_embeddings`` are not supported here.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from onesearch_jax.data import world_source
from onesearch_jax.khqe import artefact as artefact_lib
from onesearch_jax.khqe import (
  build,
  embeddings_io,
  report,
  sid_metrics,
  stream_items,
  stream_sids,
)
from onesearch_jax.khqe import keywords as keywords_lib
from onesearch_jax.khqe import quantizer as quantizer_lib
from onesearch_jax.khqe.text_embedder import (
  item_texts,
)
from onesearch_jax.world import jsonl, reader
from onesearch_jax.world import manifest as manifest_lib


def _iter(world: pathlib.Path, table: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line, row) of a table, every row schema-checked."""
  return reader.iter_rows(reader.table_path(world, table), table)


def _reread(world: pathlib.Path, table: str) -> Iterator[dict[str, Any]]:
  """The rows of a table already checked (by the first pass, or by the world
  stage when ``world_checked``): JSON and required fields only (the plain
  reader, ~5x faster than the schema reader)."""
  return world_source.iter_table(world, table, schema_checks=False)


def _counts(
  ids: stream_items.ItemIds,
  pending: list[str],
  weights: list[int],
  out: Sequence[np.ndarray],
) -> None:
  """Adds ``weights[j]``'s bits to the counters: bit b -> ``out[b]``."""
  if not pending:
    return
  rows = ids.rows(pending)
  w = np.asarray(weights)
  known = rows >= 0
  for bit, arr in enumerate(out):
    sel = known & ((w >> bit) & 1).astype(bool)
    np.add.at(arr, rows[sel], 1)
  pending.clear()
  weights.clear()


def build_sids_streamed(
  world_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  config: build.BuildConfig,
  *,
  log: Callable[[str], None] | None = None,
  mesh: jax.sharding.Mesh | None = None,
  world_checked: bool = False,
) -> build.BuildSummary:
  """``build.build_sids`` streamed: same artefact files, bounded memory.

  Args:
    world_dir: a world directory in the KuaiSearch schema.
    out_dir: the artefact directory (created). Scratch files (item ids, the
      ``[Q + N, D]`` embeddings, the codes) go to a temporary folder next to
      it, removed at the end.
    config: the BuildConfig (``stream_sample`` sizes the samples).
    log: optional printer of one line per step and per ~10% of a long pass.
    mesh: optional mesh the quantiser shards its points over.
    world_checked: the world was validated already (``reader.validate_world``,
      the world stage; or simulated): the items pass checks only what it
      reads (JSON, ``item_id``; ``stream_items.py``), not every field of
      every row. False: the schema reader's per-row checks.

  Returns:
    The BuildSummary (metrics of the final variant only).

  Raises:
    reader.SchemaError: a bad row (file, line, field) or a repeated item id.
    ValueError: a world with no item or no query, or no clicked pair.
  """
  s = config.stream_sample
  world = pathlib.Path(world_dir)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  clock = build.Clock(log)
  with tempfile.TemporaryDirectory(
    dir=out.resolve().parent, prefix=f".{out.name}_stream_"
  ) as tmp:
    scratch = pathlib.Path(tmp)
    return _build(world, out, scratch, config, s, clock, mesh, world_checked)


def _build(
  world: pathlib.Path,
  out: pathlib.Path,
  scratch: pathlib.Path,
  config: build.BuildConfig,
  s: build.StreamSample,
  clock: build.Clock,
  mesh: jax.sharding.Mesh | None,
  world_checked: bool,
) -> build.BuildSummary:
  """The steps of ``build_sids_streamed`` (module doc), scratch files under
  ``scratch``."""
  # --- 1. items pass: ids to disk, line offsets, catalogue sample
  t = time.perf_counter()
  items = stream_items.ItemScan(
    world,
    scratch,
    stream_items.Reservoir(s.items, s.seed),
    checked=world_checked,
    log=clock.log,
  )
  ids, n_items = items.ids, len(items)
  checks = "item ids only, the world checked" if world_checked else "schema checks"
  clock.done(
    "read_items",
    t,
    f"{n_items} items, {items.sample.k} sampled at most ({checks})",
  )

  # --- 2. log pass: distinct queries, session sample, popularity and PV
  t = time.perf_counter()
  queries: dict[str, None] = {}
  sessions = stream_items.Reservoir(s.sessions, s.seed + 1)
  popularity = np.zeros(n_items, np.int64)
  pv = np.zeros(n_items, np.int64)
  pending: list[str] = []
  weights: list[int] = []  # bit 0: popularity, bit 1: PV
  n_recall = 0
  for _, row in _iter(world, "recall"):
    n_recall += 1
    if row["query"].strip():
      queries.setdefault(row["query"], None)
    sessions.add(row)
    if row["split"] == "train":
      for field, w in (
        ("impressed_item_ids", 3),
        ("clicked_item_ids", 3),
        ("purchased_item_ids", 1),
      ):
        pending.extend(row[field])
        weights.extend([w] * len(row[field]))
      if len(pending) >= s.block_rows:
        _counts(ids, pending, weights, (popularity, pv))
  _counts(ids, pending, weights, (popularity, pv))
  ranking = pathlib.Path(reader.table_path(world, "ranking"))
  for _, row in jsonl.iter_jsonl(ranking, name=ranking.name, required=("query",)):
    if row["query"].strip():
      queries.setdefault(row["query"], None)
  query_list = list(queries)
  del queries
  if not query_list:
    raise ValueError(f"{world}: need queries, got {n_items} items and no query")
  sampled_sessions = [r for _, r in sessions.rows()]
  clock.done(
    "read_log",
    t,
    f"{n_recall} recall rows ({len(sampled_sessions)} sampled), "
    f"{len(query_list)} distinct queries",
  )

  # --- 3. encoder items, vocabulary, encoder, keywords
  t = time.perf_counter()
  wanted: set[str] = set()
  for r in sampled_sessions:
    for field in ("impressed_item_ids", "clicked_item_ids", "purchased_item_ids"):
      wanted.update(r[field])
  train_rows = items.sampled()
  shown = ids.rows(sorted(wanted)) if wanted else np.zeros(0, np.int64)
  # unknown ids (-1) are ignored; the sampled rows are there already
  train_rows.update(
    items.fetch([n for n in shown.tolist() if n >= 0 and n not in train_rows])
  )
  train_items = [train_rows[n] for n in sorted(train_rows)]
  del train_rows, wanted, items
  texts = item_texts(train_items, config.item_text_fields)
  vocab_queries = query_list
  if len(query_list) > s.queries:
    pick = stream_sids.fit_rows(len(query_list), s.queries, s.seed + 2)
    vocab_queries = [query_list[i] for i in pick]
  clock.log(f"encoder: {len(train_items)} items from the samples")
  trained = build.train_text_encoder(
    texts,
    [row["item_id"] for row in train_items],
    query_list,
    sampled_sessions,
    config,
    clock,
    vocab_texts=[*texts, *vocab_queries],
  )
  clock.done("embed", t, f"trained encoder D={config.encoder.dim} on the samples")

  t = time.perf_counter()
  sample_pv = Counter({row["item_id"]: 0 for row in train_items})
  train_ids = [row["item_id"] for row in train_items]
  for i, r in zip(train_ids, ids.rows(train_ids).tolist(), strict=True):
    sample_pv[i] = int(pv[r])
  kws, source = keywords_lib.mine_keywords(
    train_items, sampled_sessions, config.keywords, pv=sample_pv
  )
  del train_items, texts, sampled_sessions, sample_pv
  matcher = keywords_lib.KeywordMatcher([k.text for k in kws])
  dim = config.encoder.dim
  kw_emb = (
    trained.embed([k.text for k in kws]) if kws else np.zeros((0, dim), np.float32)
  )
  clock.done("keywords", t, f"{len(kws)} keywords from {source} (sampled)")

  # --- 4. embeddings of every query and item, block by block
  t = time.perf_counter()
  use_kw = build.VARIANT_SPEC[config.final_variant][0]
  kw_w = keywords_lib.tag_weights(kws, config.keyword_tag_weights)
  stats = {"queries": [0, 0, 0], "items": [0, 0, 0]}  # texts, matched, matches

  def embed_block(name: str, raw_texts: list[str], match_texts: list[str]):
    raw = trained.embed(raw_texts)
    matches = matcher.match_all(match_texts)
    st = stats[name]
    st[0] += len(matches)
    st[1] += sum(1 for m in matches if m)
    st[2] += sum(len(m) for m in matches)
    return keywords_lib.fuse(raw, matches, kw_emb, weights=kw_w) if use_kw else raw

  n_q = len(query_list)
  joint_path = scratch / "joint.npy"
  with embeddings_io.BlockWriter(joint_path, n_q + n_items, dim) as writer:
    for a in range(0, n_q, s.block_rows):
      block = query_list[a : a + s.block_rows]
      writer.write(embed_block("queries", block, block))
    rows: list[dict[str, Any]] = []
    for row in _reread(world, "items"):
      rows.append(row)
      if len(rows) == s.block_rows:
        writer.write(
          embed_block(
            "items",
            item_texts(rows, config.item_text_fields),
            [r["item_title"] for r in rows],
          )
        )
        rows = []
        clock.log(f"embedded {writer.rows - n_q}/{n_items} items")
    if rows:
      writer.write(
        embed_block(
          "items",
          item_texts(rows, config.item_text_fields),
          [r["item_title"] for r in rows],
        )
      )
  match_rates = {
    name: {
      "texts": float(n),
      "match_rate": hit / n if n else 0.0,
      "mean_keywords_per_matched": total / hit if hit else 0.0,
    }
    for name, (n, hit, total) in stats.items()
  }
  match_rates = {"items": match_rates["items"], "queries": match_rates["queries"]}
  clock.done(
    "embed_all",
    t,
    f"{n_q} queries + {n_items} items; match rate items "
    f"{match_rates['items']['match_rate']:.3f}, queries "
    f"{match_rates['queries']['match_rate']:.3f}",
  )

  # --- 5. quantise the final variant: fit on a sample, encode in blocks
  t = time.perf_counter()
  base = config.quantizer or quantizer_lib.QuantizerConfig.scaled(
    n_q + n_items, **dict(config.quantizer_overrides or {})
  )
  qcfg = build.variant_config(base, config.final_variant, config.l3_parent_mode)
  emb = embeddings_io.open_embeddings(joint_path)
  stream = stream_sids.StreamConfig(s.points_per_centroid, s.block_rows, s.seed)
  quant = stream_sids.fit_sample(emb, qcfg, stream, mesh=mesh, log=clock.log)
  kw = {"block_rows": s.block_rows, "mesh": mesh}
  stream_sids.encode_file(quant, emb[:n_q], scratch / "query_codes.npy", **kw)
  errors = stream_sids.encode_file(
    quant, emb[n_q:], scratch / "item_codes.npy", log=clock.log, **kw
  )
  del emb
  item_codes = np.load(scratch / "item_codes.npy")
  name = config.final_variant
  metrics = {name: {**sid_metrics.cur_icr(item_codes, qcfg.levels), **errors}}
  m = metrics[name]
  clock.done(
    f"quantise[{name}]",
    t,
    f"levels {qcfg.levels} l3={qcfg.l3_mode} opq={qcfg.opq_subspaces}: ICR "
    f"{m['ICR']:.4f} CUR_L1 {m['CUR_L1']:.3f} CUR_L1xL2 {m['CUR_L1xL2']:.4f}",
  )

  # --- 6. report and artefact, block by block
  t = time.perf_counter()
  covered = build.save_tokenizer(
    out, kws, kw_emb, trained, config.item_text_fields, config.keyword_tag_weights
  )
  markdown = report.write_report({name: (item_codes, qcfg.levels, errors)}, scratch)
  extra = {
    p.name: p.read_bytes()
    for p in sorted(scratch.iterdir())
    if p.is_file() and p.suffix == ".png"
  }
  markdown += report.build_notes(source, len(kws), match_rates, trained.history)
  metadata = build.artefact_metadata(
    config,
    world_hash=manifest_lib.world_content_hash(
      world, manifest_lib.read_manifest(world)
    ),
    embeddings=f"trained encoder D={dim}",
    trained=True,
    keywords={"source": source, "count": len(kws), "match_rates": match_rates},
    metrics=metrics,
  )
  metadata["stream"] = dataclasses.asdict(s)
  query_codes = np.load(scratch / "query_codes.npy", mmap_mode="r")
  tables = artefact_lib.Tables(
    items=_item_blocks(ids, item_codes, popularity, s.block_rows),
    queries=(
      (query_list[a : a + s.block_rows], query_codes[a : a + s.block_rows])
      for a in range(0, n_q, s.block_rows)
    ),
    groups=_group_blocks(ids, item_codes, popularity, s.block_rows),
  )
  content_hash = artefact_lib.write(
    out,
    quant,
    tables,
    report=markdown,
    report_files=extra,
    metadata=metadata,
    info=build.artefact_info(world, out, clock),
    covered=covered,
  )
  clock.done("artefact", t, f"{out} content hash {content_hash[:12]}")
  return build.BuildSummary(
    out_dir=str(out),
    content_hash=content_hash,
    metrics=metrics,
    levels=tuple(base.levels),
    n_items=n_items,
    n_queries=n_q,
    keyword_source=source,
    n_keywords=len(kws),
    match_rates=match_rates,
    timings=dict(clock.timings),
    encoder_history=trained.history,
  )


def _item_blocks(
  ids: stream_items.ItemIds, codes: np.ndarray, popularity: np.ndarray, block: int
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
  """items.jsonl in row order: (ids, codes [B, L], popularity [B]) blocks."""
  for a in range(0, len(popularity), block):
    b = min(a + block, len(popularity))
    yield (
      [i.decode() for i in ids.ids[a:b].tolist()],
      codes[a:b],
      popularity[a:b],
    )


def _group_blocks(
  ids: stream_items.ItemIds, codes: np.ndarray, popularity: np.ndarray, block: int
) -> Iterator[tuple[np.ndarray, list[list[str]]]]:
  """sid_to_items.jsonl: SIDs in lexicographic code order, each SID's items
  by descending popularity then ascending id (``SIDArtefact.sid_to_items``).

  Yields (SID codes [G, L], G lists of item ids), at most ~``block`` items a
  block; memory: the [N] int64 lexsort order and the codes it sorts.
  """
  keys = [-popularity] + [codes[:, j] for j in range(codes.shape[1] - 1, -1, -1)]
  order = np.lexsort(keys)
  sorted_codes = codes[order]
  change = np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)
  starts = np.flatnonzero(np.concatenate([[True], change]))
  ends = np.append(starts[1:], len(order))
  g = 0
  while g < len(starts):
    h = max(g + 1, int(np.searchsorted(starts, starts[g] + block)))
    rows = order[starts[g] : ends[h - 1]]
    block_ids = [i.decode() for i in ids.ids[rows].tolist()]
    block_pop = popularity[rows].tolist()
    groups = []
    for a, b in zip(starts[g:h] - starts[g], ends[g:h] - starts[g], strict=True):
      members = sorted(range(a, b), key=lambda k: (-block_pop[k], block_ids[k]))
      groups.append([block_ids[k] for k in members])
    yield sorted_codes[starts[g:h]], groups
    g = h
