"""The build_sids stage: world directory -> the versioned SID artefact.

Steps (each reported through `log` with its wall time):

  1. read the world (items, recall and ranking queries);
  2. embeddings: train the sentencepiece vocabulary and the aligned encoder
     (text_vocab.py, encoder.py) and embed every item and every distinct
     query, or load precomputed ones (embeddings_io.py);
  3. keywords: mine the dictionary, match items (titles) and queries, embed
     the keywords, fuse (keywords.py);
  4. quantise: fit the RQ-OPQ quantiser jointly on [queries; items] (queries
     first, as the official rq_dynamic.py) for the report variants
       rq_plain    raw embeddings, global L3, no OPQ
       +keywords   fused embeddings, global L3, no OPQ
       +l3_parent  fused, per-L2-parent L3 (official --balanced 2), no OPQ
       +opq        fused, parent L3, OPQ on the L3 residual (the default SIDs);
     the codes are the fit's own (``quantizer.fit_encode``, no re-encoding);
     ``BuildConfig.final_variant`` picks the variant whose codes become the
     artefact's SIDs (the tokenizer ablation);
  5. write the report (report.write_report) and the final artefact
     (artefact.SIDArtefact) into ``out_dir``. The artefact's content hash
     covers the tokenizer files too (``text_encoder/``, ``keywords.tsv``,
     ``embeddings/``) and no path: the world is pinned by its content hash,
     its location relative to ``out_dir`` and the step wall times are in the
     manifest's unhashed ``info``.

CUR/ICR are computed over items (the catalogue the SIDs index), as in the
paper's Table 2; queries share the codebooks but not the metric.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from onesearch_jax.khqe import artefact as artefact_lib
from onesearch_jax.khqe import embeddings_io, report, sid_metrics, text_vocab
from onesearch_jax.khqe import encoder as encoder_lib
from onesearch_jax.khqe import keywords as keywords_lib
from onesearch_jax.khqe import quantizer as quantizer_lib
from onesearch_jax.khqe.text_embedder import (
  EMBEDDER_FILE,
  ENCODER_DIR,
  KEYWORDS_FILE,
  item_texts,
)
from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import reader

VARIANTS = ("rq_plain", "+keywords", "+l3_parent", "+opq")
FINAL_VARIANT = "+opq"
EMBEDDINGS_DIR = "embeddings"  # save_embeddings: raw/fused .npy + ids

# variant -> (use keyword fusion, L3 mode, use OPQ)
VARIANT_SPEC = {
  "rq_plain": (False, "global", False),
  "+keywords": (True, "global", False),
  "+l3_parent": (True, "parent", False),
  "+opq": (True, "parent", True),
}


@dataclasses.dataclass(frozen=True)
class PrecomputedEmbeddings:
  """Precomputed embedding files (see embeddings_io.py for the format)."""

  items_npy: str  # [N_items, D] rows
  items_ids: str  # item ids, one per line
  queries_npy: str  # [N_queries, D] rows
  queries_ids: str  # query texts, one per line
  keywords_npy: str | None = None  # optional keyword embeddings; else centroids
  keywords_ids: str | None = None  # keyword texts, one per line


@dataclasses.dataclass(frozen=True)
class StreamSample:
  """Sample sizes and block size of the streamed build (``BuildConfig.stream``;
  stream_build.py says why these sizes).

  Attributes:
    sessions: recall rows sampled for the encoder pairs and keyword queries.
    items: catalogue rows sampled for the vocabulary, encoder and keywords
      (plus the items the sampled sessions reference).
    queries: distinct queries sampled into the vocabulary's text.
    points_per_centroid: the quantiser fits on at most this times k1 rows.
    block_rows: rows embedded, encoded and written per block.
    seed: seed of every sample.
  """

  sessions: int = 200_000
  items: int = 200_000
  queries: int = 200_000
  points_per_centroid: int = 256
  block_rows: int = 65_536
  seed: int = 0

  def __post_init__(self):
    small = {k: v for k, v in dataclasses.asdict(self).items() if k != "seed" and v < 1}
    if small:
      raise ValueError(f"StreamSample: fields must be >= 1, got {small}")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """Everything the build_sids stage needs."""

  vocab: text_vocab.VocabConfig = text_vocab.VocabConfig()  # sentencepiece
  encoder: encoder_lib.EncoderConfig = encoder_lib.EncoderConfig()  # encoder shape
  train: encoder_lib.EncoderTrainConfig = (
    encoder_lib.EncoderTrainConfig()
  )  # its training
  keywords: keywords_lib.KeywordConfig = (
    keywords_lib.KeywordConfig()
  )  # dictionary mining
  quantizer: quantizer_lib.QuantizerConfig | None = None  # None: scaled to the data
  variants: tuple[str, ...] = VARIANTS  # report variants; final_variant always runs
  item_text_fields: tuple[str, ...] = (  # fields joined into the item text
    "item_title",
    "brand_name",
    "category_level3_name",
  )
  # L3 mode of the "+l3_parent" and "+opq" variants: "parent_ab" = a k-means
  # inside each (L1, L2) pair (official --balanced 1), "parent" = inside each
  # L2 code group (official --balanced 2). parent_ab is the default because
  # per-L2 groups mix unrelated L1 branches and LOWERED ICR on the default
  # world (0.57 -> 0.40) while per-(L1, L2) groups raise it; its codebook holds
  # k1*k2*k3 centroids (fine at the scaled sizes; 2^31 at the paper's sizes).
  l3_parent_mode: str = "parent_ab"
  # The variant whose codes become the artefact's SIDs (the tokenizer
  # ablation trains one model per variant). Without OPQ the SIDs are the 3
  # RQ codes <a><b><c>; with it 3 + opq_subspaces codes.
  final_variant: str = FINAL_VARIANT
  # QuantizerConfig fields set on top of the sizes scaled to the data (used
  # when `quantizer` is None), e.g. {"opq_subspaces": 4} (the Table 7 OPQ
  # depth ablation) or {"levels": (64, 16, 16)}.
  quantizer_overrides: Mapping[str, Any] | None = None
  precomputed: PrecomputedEmbeddings | None = None  # skip vocab + encoder
  save_embeddings: bool = False  # also write raw/fused .npy under out_dir/embeddings
  # Keyword fusion weights by keyword tag: the fused embedding's keyword mean
  # weighs those tags' keywords so much more than the others (weight 1).
  # The default, brand and product type x4, was chosen on validation days
  # (docs/TRAINING.md, "Brand- and type-weighted keyword fusion": click
  # MRR@10 up on 3 training seeds of two worlds); () = the plain mean (the
  # paper's). Left out of the stage marker and the artefact metadata while
  # empty, so unweighted SIDs built before the field existed stay up to date.
  keyword_tag_weights: tuple[tuple[str, float], ...] = (
    ("brand", 4.0),
    ("entity", 4.0),
  )
  # Streamed build (stream_build.py): encoder, vocabulary and keywords on
  # bounded samples of the log and catalogue, embeddings and codes block by
  # block on disk, the quantiser fitted on a sample, the artefact written in
  # blocks; memory bounded by the samples, not the catalogue. Off: the
  # in-memory build below (the main job's).
  stream: bool = False
  stream_sample: StreamSample = StreamSample()  # the streamed build's samples

  def __post_init__(self):
    keywords_lib.tag_weights((), self.keyword_tag_weights)  # raises if bad
    if self.stream and (self.precomputed is not None or self.save_embeddings):
      raise ValueError(
        "BuildConfig: stream = True trains its own encoder and keeps no "
        "embeddings; precomputed and save_embeddings need stream = False"
      )
    unknown = [v for v in self.variants if v not in VARIANT_SPEC]
    if unknown:
      raise ValueError(f"unknown variants {unknown}; expected a subset of {VARIANTS}")
    if self.final_variant not in VARIANT_SPEC:
      raise ValueError(f"final_variant {self.final_variant!r} is not one of {VARIANTS}")
    if self.quantizer_overrides:
      names = {f.name for f in dataclasses.fields(quantizer_lib.QuantizerConfig)}
      bad = sorted(set(self.quantizer_overrides) - names)
      if bad:
        raise ValueError(
          f"quantizer_overrides: unknown QuantizerConfig fields {bad}; known: "
          f"{sorted(names)}"
        )


@dataclasses.dataclass(frozen=True)
class BuildSummary:
  """What build_sids measured and wrote.

  Attributes:
    out_dir: the artefact directory.
    content_hash: the artefact's content hash (for later stages to pin).
    metrics: variant -> sid_metrics.cur_icr over items + reconstruction errors.
    levels: the (k1, k2, k3) used.
    n_items, n_queries: catalogue and query counts.
    keyword_source: "attributes" or "ngrams" (the mining fallback).
    n_keywords: dictionary size.
    match_rates: {"items": ..., "queries": ...} keyword match statistics.
    timings: step -> seconds.
    encoder_history: logged losses of the encoder (empty if precomputed).
  """

  out_dir: str
  content_hash: str
  metrics: Mapping[str, Mapping[str, float]]
  levels: tuple[int, int, int]
  n_items: int
  n_queries: int
  keyword_source: str
  n_keywords: int
  match_rates: Mapping[str, Mapping[str, float]]
  timings: Mapping[str, float]
  encoder_history: Sequence[Mapping[str, float]]


def _distinct_queries(world: reader.World) -> list[str]:
  """Distinct query strings of recall then ranking, in first-seen order."""
  seen: dict[str, None] = {}
  for table in (world.recall, world.ranking):
    for row in table:
      q = row["query"]
      if q.strip():
        seen.setdefault(q, None)
  return list(seen)


def world_hash(world_dir: str | os.PathLike, world: reader.World) -> str:
  """The world's content hash: its manifest's, or (real data without a
  manifest) the hash of its ``*.jsonl`` files, the rule the pipeline's world
  check uses (``manifest.world_content_hash``). Independent of the path."""
  return manifest_lib.world_content_hash(world_dir, world.manifest)


def _popularity(world: reader.World) -> np.ndarray:
  """Per item (world order): train clicks + purchases + impressions (ties)."""
  counts: Counter = Counter()
  for s in world.recall:
    if s["split"] != "train":
      continue
    counts.update(s["impressed_item_ids"])
    counts.update(s["clicked_item_ids"])
    counts.update(s["purchased_item_ids"])
  return np.asarray([counts[row["item_id"]] for row in world.items], np.int64)


class Clock:
  """Step wall times of a build, logged as ``[build_sids +T s] step: ...``."""

  def __init__(self, log: Callable[[str], None] | None):
    self._log = log
    self.timings: dict[str, float] = {}
    self._t0 = time.perf_counter()

  def log(self, msg: str) -> None:
    if self._log is not None:
      self._log(f"[build_sids +{time.perf_counter() - self._t0:6.1f}s] {msg}")

  def done(self, step: str, start: float, msg: str) -> None:
    self.timings[step] = time.perf_counter() - start
    self.log(f"{step}: {msg} ({self.timings[step]:.1f} s)")


def train_text_encoder(
  texts: Sequence[str],
  item_ids: Sequence[str],
  queries: Sequence[str],
  sessions: Sequence[Mapping[str, Any]],
  config: BuildConfig,
  clock: Clock,
  *,
  vocab_texts: Sequence[str] | None,
) -> encoder_lib.TrainedEncoder:
  """The vocabulary and the aligned encoder (``config.vocab``, ``.encoder``,
  ``.train``).

  Args:
    texts: item texts, one per entry of ``item_ids``.
    item_ids: the ids the sessions' item ids are looked up in.
    queries: the query list the pairs index.
    sessions: recall rows (the train split gives the pairs).
    config: the BuildConfig.
    clock: the build's logger.
    vocab_texts: the vocabulary's training text (None: texts + queries).
  """
  vocab_in = [*texts, *queries] if vocab_texts is None else vocab_texts
  vocab = text_vocab.train_vocab(vocab_in, config.vocab)
  pairs = encoder_lib.collab_pairs(
    sessions,
    {q: i for i, q in enumerate(queries)},
    {i: n for n, i in enumerate(item_ids)},
    seed=config.train.seed,
    pairs_per_key=config.train.pairs_per_key,
  )
  clock.log(
    f"encoder: vocab {vocab.vocab_size} pieces; pairs q2i={len(pairs.q2i)} "
    f"q2q={len(pairs.q2q)} i2i={len(pairs.i2i)} rank={len(pairs.rank)}; "
    f"skipped {pairs.skipped or 'nothing'}"
  )

  def log_fn(step: int, m: Mapping[str, float]) -> None:
    clock.log(
      f"encoder step {step}/{config.train.steps}: loss {m['loss']:.3f} "
      f"(q2i {m['q2i']:.3f} q2q {m['q2q']:.3f} i2i {m['i2i']:.3f} "
      f"rank {m['rank']:.3f})"
    )

  return encoder_lib.train_encoder(
    vocab, queries, texts, pairs, config.encoder, config.train, log_fn=log_fn
  )


def variant_config(
  base: quantizer_lib.QuantizerConfig, variant: str, l3_parent_mode: str
) -> quantizer_lib.QuantizerConfig:
  """The quantiser settings of a report variant (``VARIANT_SPEC``) on ``base``."""
  _, l3_mode, use_opq = VARIANT_SPEC[variant]
  return dataclasses.replace(
    base,
    l3_mode=l3_parent_mode if l3_mode == "parent" else l3_mode,
    opq_subspaces=base.opq_subspaces if use_opq else 0,
  )


def save_tokenizer(
  out: pathlib.Path,
  entries: Sequence[keywords_lib.Keyword],
  keyword_embeddings: np.ndarray,
  trained: encoder_lib.TrainedEncoder | None,
  item_text_fields: Sequence[str],
  keyword_tag_weights: Sequence[tuple[str, float]] = (),
) -> list[str]:
  """Writes the text side of the tokenizer (keyword dictionary, encoder);
  returns the paths for ``artefact.save(covered=...)``.

  So new queries/items can be embedded and encoded later (text_embedder.py);
  covered by the artefact's content hash. Outputs of an earlier build in
  ``out`` are removed first so a stale encoder or embeddings folder is never
  hashed into this artefact.
  """
  for stale in (ENCODER_DIR, EMBEDDINGS_DIR):
    shutil.rmtree(out / stale, ignore_errors=True)
  (out / KEYWORDS_FILE).unlink(missing_ok=True)
  covered = [KEYWORDS_FILE]
  keywords_lib.save_dictionary(out / KEYWORDS_FILE, entries, keyword_embeddings)
  if trained is not None:
    encoder_lib.save_encoder(trained, out / ENCODER_DIR)
    settings: dict[str, Any] = {"item_text_fields": list(item_text_fields)}
    if keyword_tag_weights:  # absent while empty: older artefacts' bytes
      settings["keyword_tag_weights"] = [[t, float(w)] for t, w in keyword_tag_weights]
    (out / ENCODER_DIR / EMBEDDER_FILE).write_text(json.dumps(settings) + "\n")
    covered.append(ENCODER_DIR)
  return covered


def artefact_metadata(
  config: BuildConfig,
  *,
  world_hash: str,
  embeddings: str,
  trained: bool,
  keywords: Mapping[str, Any],
  metrics: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
  """The artefact's ``config.json`` metadata (covered by its hash).

  ``keywords`` holds "source", "count" and "match_rates"; the keyword config
  is added from ``config``.
  """
  kw = dict(keywords)
  out = {
    "world_content_hash": world_hash,
    "embeddings": embeddings,
    "encoder": dataclasses.asdict(config.encoder) if trained else None,
    "encoder_train": dataclasses.asdict(config.train) if trained else None,
    "vocab": dataclasses.asdict(config.vocab) if trained else None,
    "item_text_fields": list(config.item_text_fields),
    "keywords": {
      "source": kw["source"],
      "count": kw["count"],
      "config": dataclasses.asdict(config.keywords),
      "match_rates": kw["match_rates"],
    },
    "variant": config.final_variant,
    "metrics": metrics,
    "popularity": "train impressions + clicks + purchases",
  }
  if config.keyword_tag_weights:  # absent while empty: older artefacts' hash
    out["keywords"]["tag_weights"] = [
      [t, float(w)] for t, w in config.keyword_tag_weights
    ]
  return out


def artefact_info(
  world_dir: str | os.PathLike, out: pathlib.Path, clock: Clock
) -> dict[str, Any]:
  """The manifest's ``info``: informational only, outside the hash (the world
  is pinned by its content hash in the metadata, so moving the workdir keeps
  the hash)."""
  return {
    "world_dir": os.path.relpath(os.path.abspath(world_dir), out.resolve()),
    "timings_s": {k: round(v, 3) for k, v in clock.timings.items()},
  }


def build_sids(
  world_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  config: BuildConfig = BuildConfig(),
  *,
  log: Callable[[str], None] | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> BuildSummary:
  """Builds item and query SIDs for a world and writes the SID artefact.

  Args:
    world_dir: a world directory in the KuaiSearch schema.
    out_dir: the artefact directory (created; artefact.save puts the report in
      ``out_dir/report``).
    config: the BuildConfig.
    log: optional printer of one line per step, with timings.
    mesh: optional mesh the quantiser shards its points over.

  Returns:
    The BuildSummary (metrics of every variant, timings, artefact hash).

  Raises:
    reader.SchemaError: bad world rows.
    embeddings_io.EmbeddingsError: bad precomputed embeddings.
    ValueError: a world with no item or no query.
  """
  clock = Clock(log)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)

  t = time.perf_counter()
  world = reader.load_world(world_dir)
  queries = _distinct_queries(world)
  item_ids = [row["item_id"] for row in world.items]
  if not item_ids or not queries:
    raise ValueError(
      f"{world_dir}: need items and queries, got {len(item_ids)} items and "
      f"{len(queries)} distinct queries"
    )
  clock.done("read", t, f"{len(item_ids)} items, {len(queries)} distinct queries")

  # --- embeddings
  t = time.perf_counter()
  trained = None
  history: list[dict[str, float]] = []
  if config.precomputed is None:
    texts = item_texts(world.items, config.item_text_fields)
    trained = train_text_encoder(
      texts, item_ids, queries, world.recall, config, clock, vocab_texts=None
    )
    history = trained.history
    item_raw = trained.embed(texts)
    query_raw = trained.embed(queries)
    how = f"trained encoder D={config.encoder.dim}"
  else:
    p = config.precomputed
    ids, emb = embeddings_io.load_embeddings(p.items_npy, p.items_ids)
    item_raw = embeddings_io.align(item_ids, ids, emb, source=p.items_ids)
    ids, emb = embeddings_io.load_embeddings(p.queries_npy, p.queries_ids)
    query_raw = embeddings_io.align(queries, ids, emb, source=p.queries_ids)
    if item_raw.shape[1] != query_raw.shape[1]:
      raise embeddings_io.EmbeddingsError(
        f"{p.items_npy} has D={item_raw.shape[1]} but {p.queries_npy} has "
        f"D={query_raw.shape[1]}"
      )
    how = f"precomputed D={item_raw.shape[1]}"
  clock.done("embed", t, how)

  # --- keywords
  t = time.perf_counter()
  kws, source = keywords_lib.mine_keywords(world.items, world.recall, config.keywords)
  matcher = keywords_lib.KeywordMatcher([k.text for k in kws])
  item_matches = matcher.match_all([row["item_title"] for row in world.items])
  query_matches = matcher.match_all(queries)
  valid = None
  if not kws:
    kw_emb = np.zeros((0, item_raw.shape[1]), np.float32)
  elif trained is not None:
    kw_emb = trained.embed([k.text for k in kws])
  elif config.precomputed.keywords_npy is not None:
    p = config.precomputed
    ids, emb = embeddings_io.load_embeddings(p.keywords_npy, p.keywords_ids)
    ids = [keywords_lib.normalise(i) for i in ids]
    kw_emb = embeddings_io.align([k.text for k in kws], ids, emb, source=p.keywords_ids)
  else:
    kw_emb, valid = keywords_lib.keyword_centroids(
      item_matches + query_matches, np.concatenate([item_raw, query_raw]), len(kws)
    )
  kw_w = keywords_lib.tag_weights(kws, config.keyword_tag_weights)
  item_fused = keywords_lib.fuse(item_raw, item_matches, kw_emb, valid, weights=kw_w)
  query_fused = keywords_lib.fuse(query_raw, query_matches, kw_emb, valid, weights=kw_w)
  match_rates = {
    "items": keywords_lib.match_stats(item_matches),
    "queries": keywords_lib.match_stats(query_matches),
  }
  clock.done(
    "keywords",
    t,
    f"{len(kws)} keywords from {source}; match rate items "
    f"{match_rates['items']['match_rate']:.3f}, queries "
    f"{match_rates['queries']['match_rate']:.3f}",
  )
  kw_keep = [n for n in range(len(kws)) if valid is None or valid[n]]
  covered = save_tokenizer(
    out,
    [kws[n] for n in kw_keep],
    kw_emb[kw_keep],
    trained,
    config.item_text_fields,
    config.keyword_tag_weights,
  )
  if config.save_embeddings:
    emb_dir = out / EMBEDDINGS_DIR
    emb_dir.mkdir(exist_ok=True)
    covered.append(EMBEDDINGS_DIR)
    for name, ids, arr in (
      ("items_raw", item_ids, item_raw),
      ("items_fused", item_ids, item_fused),
      ("queries_raw", queries, query_raw),
      ("queries_fused", queries, query_fused),
    ):
      embeddings_io.save_embeddings(
        emb_dir / f"{name}.npy", emb_dir / f"{name}.txt", ids, arr
      )

  # --- quantise every variant
  n_q = len(queries)
  base = config.quantizer or quantizer_lib.QuantizerConfig.scaled(
    n_q + len(item_ids), **dict(config.quantizer_overrides or {})
  )
  joint = {
    False: np.concatenate([query_raw, item_raw]),
    True: np.concatenate([query_fused, item_fused]),
  }
  final_name = config.final_variant
  variants = [v for v in VARIANTS if v in config.variants or v == final_name]
  metrics: dict[str, dict[str, float]] = {}
  report_in: dict[str, Any] = {}
  final = final_codes = None
  for name in variants:
    t = time.perf_counter()
    use_kw = VARIANT_SPEC[name][0]
    qcfg = variant_config(base, name, config.l3_parent_mode)
    # The fit's own codes (no re-encoding pass); they equal quant.encode.
    quant, codes, sq = quantizer_lib.fit_encode(joint[use_kw], qcfg, mesh=mesh)
    item_codes = codes[n_q:]
    errors = quantizer_lib.mean_errors(joint[use_kw][n_q:], sq[n_q:])
    metrics[name] = {**sid_metrics.cur_icr(item_codes, qcfg.levels), **errors}
    report_in[name] = (item_codes, qcfg.levels, errors)
    if name == final_name:
      final, final_codes = quant, codes
    m = metrics[name]
    clock.done(
      f"quantise[{name}]",
      t,
      f"levels {qcfg.levels} l3={qcfg.l3_mode} opq={qcfg.opq_subspaces}: "
      f"ICR {m['ICR']:.4f} CUR_L1 {m['CUR_L1']:.3f} CUR_L1xL2 "
      f"{m['CUR_L1xL2']:.4f} CUR_Total {m['CUR_Total']:.5f}",
    )

  # --- report and artefact
  t = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    markdown = report.write_report(report_in, tmp)
    extra = {
      p.name: p.read_bytes()
      for p in sorted(pathlib.Path(tmp).iterdir())
      if p.is_file() and p.name != "report.md"
    }
  markdown += report.build_notes(source, len(kws), match_rates, history)
  metadata = artefact_metadata(
    config,
    world_hash=world_hash(world_dir, world),
    embeddings=how,
    trained=trained is not None,
    keywords={"source": source, "count": len(kws), "match_rates": match_rates},
    metrics=metrics,
  )
  art = artefact_lib.SIDArtefact(
    quantizer=final,
    item_ids=tuple(item_ids),
    item_codes=final_codes[n_q:],
    item_popularity=_popularity(world),
    query_texts=tuple(queries),
    query_codes=final_codes[:n_q],
    report=markdown,
    report_files=extra,
    metadata=metadata,
    info=artefact_info(world_dir, out, clock),
  )
  content_hash = artefact_lib.save(art, out, covered=covered)
  clock.done("artefact", t, f"{out} content hash {content_hash[:12]}")
  return BuildSummary(
    out_dir=str(out),
    content_hash=content_hash,
    metrics=metrics,
    levels=tuple(base.levels),
    n_items=len(item_ids),
    n_queries=n_q,
    keyword_source=source,
    n_keywords=len(kws),
    match_rates=match_rates,
    timings=dict(clock.timings),
    encoder_history=history,
  )
