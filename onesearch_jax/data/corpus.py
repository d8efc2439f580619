"""The raw examples of every task, built from the world: ``build_corpus``
(columns per task kind, skip counts, the sentencepiece texts),
``build_index`` (the Mu-Seq index of the world's sessions) and
``build_vocabulary``. ``data/tasks.py`` registers seqio tasks over them.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from onesearch_jax.data import item_phrases, museq, prompts, world_source
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.v2 import keyword_source
from onesearch_jax.v2.keyword_thoughts import KeywordGenerator, KeywordRequest

TRAIN, TEST = "train", "test"  # the world's splits (re-exported by tasks)
# Every task kind register_tasks can make (a kind with no examples, or one
# an ablation switches off, is not registered).
TASK_KINDS = (
  "s1_query_to_sid",
  "s1_sid_to_query",
  "s1_title_to_sid",
  "s1_sid_to_title",
  "s1_text_to_category",
  "s1_sid_to_category",
  "s2_query_to_title",
  "s2_title_to_query",
  "s2_sidq_to_sidi",
  "s2_sidi_to_sidq",
  "s2_query_to_sidi",
  "s2_phrase_to_sidi",  # only with MuSeqConfig.item_phrases
  *prompts.COT_KINDS,  # only with MuSeqConfig.cot_tasks (docs/V2.md)
  "s3_personal",
  "s3_window",
  "s3_query",
  "eval_click",
  "eval_order",
)
# The kinds an SFT phase may sample (the eval_* kinds are eval-only).
TRAIN_TASK_KINDS = tuple(k for k in TASK_KINDS if not k.startswith("eval_"))
# Augmentation kinds left out of the registered ``{p}_phase*`` mixtures (an
# SFT recipe samples them only where ``SFTConfig.phase_tasks`` names them).
AUGMENT_KINDS = ("s3_query", "s2_phrase_to_sidi")
# Phase-2 kinds over the (query, clicked item) pairs of the train split.
PAIR_KINDS = (
  "s2_query_to_title",
  "s2_title_to_query",
  "s2_sidq_to_sidi",
  "s2_sidi_to_sidq",
  "s2_query_to_sidi",
)


@dataclasses.dataclass(frozen=True)
class LazyColumns:
  """The examples of one kind, made on demand from a row stream.

  Attributes:
    fields: the string fields of every example.
    count: how many examples ``rows()`` yields.
    rows: a fresh iterator of the examples (dicts of ``fields``) per call.
  """

  fields: tuple[str, ...]
  count: int
  rows: Callable[[], Iterator[dict[str, str]]]


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Raw examples of every task, as columns (lists of equal length).

  Attributes:
    columns: task kind ("s1_query_to_sid", ..., "eval_order") -> field ->
      list of values (str, or int lists for the long-seq item rows, or str
      lists for "target_item_ids"); or, for the phase-1 item kinds of a
      streamed corpus (``build_corpus(..., item_stream=...)``), a
      ``LazyColumns``.
    skips: reason -> count of examples not made.
    texts: canonical text for the sentencepiece model.
  """

  columns: dict[str, dict[str, list] | LazyColumns]
  skips: dict[str, int]
  texts: list[str]

  def count(self, kind: str) -> int:
    cols = self.columns[kind]
    if isinstance(cols, LazyColumns):
      return cols.count
    return len(next(iter(cols.values()))) if cols else 0

  def rows(self, kind: str) -> Iterator[dict[str, Any]]:
    """The examples of ``kind`` one by one (either storage)."""
    cols = self.columns[kind]
    if isinstance(cols, LazyColumns):
      yield from cols.rows()
      return
    names = list(cols)
    for values in zip(*(cols[k] for k in names), strict=True):
      yield dict(zip(names, values, strict=True))


def _category_path(item: dict[str, Any]) -> str:
  return "/".join(str(item.get(f"category_level{lvl}_name", "")) for lvl in (1, 2, 3))


def _cols(rows: list[dict]) -> dict[str, list]:
  if not rows:
    return {}
  return {k: [r[k] for r in rows] for k in rows[0]}


def _phase3_row(
  ex: museq.Example,
  table: SIDTable,
  config: museq.MuSeqConfig,
  eval_row: bool,
  keywords: KeywordGenerator | None,
) -> dict[str, Any]:
  s = ex.session
  kws = keyword_source.prompt_keywords(keywords, s.user_id, s.query, ex.features)
  row = prompts.phase3_fields(s.user_id, s.query, ex.features, table, config, kws)
  row["target"] = table.item_sid(ex.targets[0])
  if eval_row:
    row.update(
      user_id=ex.session.user_id,
      session_id=ex.session.session_id,
      target_item_ids=list(ex.targets),
    )
  return row


def _without_user(
  row: dict[str, Any], config: museq.MuSeqConfig, keywords: KeywordGenerator | None
) -> dict[str, Any]:
  """A phase-3 row with its user segments blanked (the ``s3_query`` kind);
  its keywords, if any, are the query's alone (no calibration by clicks)."""
  out = dict(row)
  for k in ("uid", "seq_q", "seq_short", "profile"):
    out[k] = prompts.EMPTY
  if "keywords" in out:
    kws = keywords.keywords(KeywordRequest(row["query"])) if keywords else ()
    sep = prompts.LIST_SEP if config.prompt_style == "words" else "[SEP]"
    out["keywords"] = sep.join(kws) or prompts.EMPTY
  for k in ("long_click", "long_order", "long_rsu"):
    out[k] = []
  return out


def build_index(
  world: world_source.WorldTables, table: SIDTable, config: museq.MuSeqConfig
) -> museq.MuSeqIndex:
  """The Mu-Seq index of a world over the items of the SID table."""
  return museq.MuSeqIndex(
    world.users,
    world.items,
    world.recall,
    {i: table.item_codes[r] for i, r in table.item_row.items()},
    table.code_ranges,
    config,
  )


# Keyword SIDs in one CoT target at most (the first, most important keywords):
# 3 x (5-token SID + [SEP]) keeps the phase-1 targets under 20 tokens.
COT_MAX_KEYWORD_SIDS = 3


def _cot_columns(
  train_queries: list[str],
  s3_rows: list[dict[str, Any]],
  table: SIDTable,
  config: museq.MuSeqConfig,
  keywords: KeywordGenerator,
  keyword_sids: Callable[[list[str]], list[str]],
  skips: collections.Counter,
) -> dict[str, dict[str, list]]:
  """The four stage-1 keyword CoT tasks (``prompts.cot_templates``).

  * query-level (``s1_query_to_keywords``, ``s1_sidq_to_keyword_sids``): one
    example per train query with a SID, its keywords without calibration
    (``KeywordRequest(query)``);
  * personalised (``s1_user_*``): one per distinct (uid, query, Seq_short)
    of the ``s3_personal`` rows, with the session's calibrated keywords (the
    phase-3 prompt's, ``keyword_source.prompt_keywords``).

  A query or session with no keyword gives no example (skip reason
  ``cot_*_without_keywords``). Keyword SIDs: ``keyword_sids`` of every
  keyword text, the first ``COT_MAX_KEYWORD_SIDS`` of a list joined like
  the keywords.
  """
  sep = prompts.LIST_SEP if config.prompt_style == "words" else "[SEP]"
  query_rows = []
  for q in train_queries:
    kws = keywords.keywords(KeywordRequest(q))
    if not kws:
      skips["cot_query_without_keywords"] += 1
      continue
    query_rows.append({"query": q, "sid_q": table.query_sid(q), "kws": kws})
  personal_rows, seen = [], set()
  for r in s3_rows:
    kws = tuple(r["keywords"].split(sep)) if r["keywords"] != prompts.EMPTY else ()
    key = (r["uid"], r["query"], r["seq_short"], kws)
    if key in seen:
      continue
    seen.add(key)
    if not kws:
      skips["cot_session_without_keywords"] += 1
      continue
    personal_rows.append(
      {k: r[k] for k in ("uid", "query", "sid_q", "seq_short")} | {"kws": kws}
    )
  texts = sorted({k for r in query_rows + personal_rows for k in r["kws"]})
  codes = dict(zip(texts, keyword_sids(texts), strict=True))
  for r in query_rows + personal_rows:
    kws = r.pop("kws")
    r["keywords"] = sep.join(kws)
    r["keyword_sids"] = sep.join(codes[k] for k in kws[:COT_MAX_KEYWORD_SIDS])
  out = {}
  for kind, t in prompts.cot_templates(config).items():
    rows = personal_rows if kind.startswith("user_") else query_rows
    out[f"s1_{kind}"] = _cols([{f: r[f] for f in t.fields} for r in rows])
  return out


# Item titles a streamed corpus gives the sentencepiece trainer (the first
# ones of items.jsonl, plus every title the log references).
STREAM_VOCAB_TITLES = 200_000
# The phase-1 kinds with one example per catalogue item (streamed).
ITEM_KINDS = (
  "s1_title_to_sid",
  "s1_sid_to_title",
  "s1_sid_to_category",
  "s1_text_to_category",
)


def _lazy_item_kinds(
  item_stream: Callable[[], Iterable[dict[str, Any]]],
  table: SIDTable,
  text_cat_queries: list[dict[str, str]],
  skips: collections.Counter,
) -> tuple[dict[str, LazyColumns], set[str]]:
  """The phase-1 item kinds over a stream of item rows (file order), and the
  texts they add to the vocabulary; one counting pass over the stream."""
  has_item = table.item_row

  def examples(fields):
    def rows():
      for it in item_stream():
        if it["item_id"] in has_item:
          full = {
            "title": str(it["item_title"]),
            "text": str(it["item_title"]),
            "sid": table.item_sid(it["item_id"]),
            "category": _category_path(it),
          }
          yield {k: full[k] for k in fields}

    return rows

  n_with_sid = n_items = 0
  texts: set[str] = set()
  for it in item_stream():
    n_items += 1
    n_with_sid += it["item_id"] in has_item
    texts.add(_category_path(it))
    if n_items <= STREAM_VOCAB_TITLES:
      texts.add(str(it["item_title"]))
  skips["s1_item_without_sid"] += n_items - n_with_sid
  skips["s1_sid_item_not_in_world"] += len(table.item_ids) - n_with_sid
  text_cat = examples(("text", "category"))
  kinds = {
    "s1_title_to_sid": LazyColumns(
      ("title", "sid"), n_with_sid, examples(("title", "sid"))
    ),
    "s1_sid_to_title": LazyColumns(
      ("title", "sid"), n_with_sid, examples(("title", "sid"))
    ),
    "s1_sid_to_category": LazyColumns(
      ("sid", "category"), n_with_sid, examples(("sid", "category"))
    ),
    "s1_text_to_category": LazyColumns(
      ("text", "category"),
      n_with_sid + len(text_cat_queries),
      lambda: itertools.chain(text_cat(), iter(text_cat_queries)),
    ),
  }
  return kinds, texts


def build_corpus(
  world: world_source.WorldTables,
  table: SIDTable,
  config: museq.MuSeqConfig,
  *,
  item_stream: Callable[[], Iterable[dict[str, Any]]] | None = None,
  keyword_sids: Callable[[list[str]], list[str]] | None = None,
) -> Corpus:
  """Builds the raw examples of every task (pure Python / numpy).

  Args:
    world: users, items, recall.
    table: the SID table.
    config: Mu-Seq settings.
    item_stream: None (in memory), or a function returning a fresh iterator
      over every item row (``world_source.iter_table(dir, "items")``): then
      ``world.items`` need only hold the items the log clicks or purchases
      (``read_world(dir, items="referenced")``), the phase-1 item kinds
      (``ITEM_KINDS``) are ``LazyColumns`` over the stream in file order
      (the SID table's order when the SIDs were built from this world), and
      the vocabulary sees the first ``STREAM_VOCAB_TITLES`` titles plus
      those the log references (all of them for smaller catalogues).
    keyword_sids: texts -> their SID strings (``v2.keyword_sids``): the CoT
      tasks' keyword SIDs and the item phrases' SID_q; needed with
      ``config.cot_tasks`` or ``config.item_phrases`` only.

  Returns:
    The corpus.
  """
  skips: collections.Counter = collections.Counter()
  items = {r["item_id"]: r for r in world.items}
  has_item = table.item_row
  has_query = table.query_row
  # Phase 1.
  train_queries = sorted(
    {
      r["query"]
      for r in world.recall
      if r["split"] == TRAIN and r["query"] in has_query
    }
  )
  skips["s1_query_without_sid"] = len(
    {r["query"] for r in world.recall if r["split"] == TRAIN} - set(train_queries)
  )
  q_rows = [{"query": q, "sid": table.query_sid(q)} for q in train_queries]
  item_rows = []
  for item_id in table.item_ids if item_stream is None else ():
    if item_id not in items:
      skips["s1_sid_item_not_in_world"] += 1
      continue
    it = items[item_id]
    item_rows.append(
      {
        "title": str(it["item_title"]),
        "sid": table.item_sid(item_id),
        "category": _category_path(it),
      }
    )
  if item_stream is None:
    skips["s1_item_without_sid"] = sum(1 for i in items if i not in has_item)
  # Query category paths (most clicked train category; ties: smallest path).
  q_cats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  pairs = set()
  train_clicks: collections.Counter = collections.Counter()  # item id -> clicks
  for r in world.recall:
    if r["split"] != TRAIN:
      continue
    for i in r["clicked_item_ids"]:
      train_clicks[i] += 1
      if i in items:
        q_cats[r["query"]][_category_path(items[i])] += 1
      if i in has_item and r["query"] in has_query and i in items:
        pairs.add((r["query"], i))
      else:
        skips["s2_pair_without_sid"] += 1
  text_cat = [{"text": r["title"], "category": r["category"]} for r in item_rows]
  q_text_cat = []
  for q in sorted(q_cats):
    cats = q_cats[q]
    q_text_cat.append({"text": q, "category": min(cats, key=lambda c: (-cats[c], c))})
  text_cat += q_text_cat
  columns = {
    "s1_query_to_sid": _cols(q_rows),
    "s1_sid_to_query": _cols(q_rows),
    "s1_title_to_sid": _cols(
      [{"title": r["title"], "sid": r["sid"]} for r in item_rows]
    ),
    "s1_sid_to_title": _cols(
      [{"title": r["title"], "sid": r["sid"]} for r in item_rows]
    ),
    "s1_text_to_category": _cols(text_cat),
    "s1_sid_to_category": _cols(
      [{"sid": r["sid"], "category": r["category"]} for r in item_rows]
    ),
  }
  # Phase 2.
  s2 = [
    {
      "query": q,
      "title": str(items[i]["item_title"]),
      "sid_q": table.query_sid(q),
      "sid_i": table.item_sid(i),
    }
    for q, i in sorted(pairs)
  ]
  for kind in PAIR_KINDS:
    columns[kind] = _cols(s2)
  if config.item_phrases != "none":
    if item_stream is not None:
      raise ValueError(
        "build_corpus: MuSeqConfig.item_phrases needs the in-memory item table "
        "(register_tasks(stream_items=False)); a streamed catalogue has no "
        "phrase task"
      )
    if keyword_sids is None:
      raise ValueError(
        "build_corpus: MuSeqConfig.item_phrases needs keyword_sids (the "
        "artefact's text -> SID encoder) for the phrases' SID_q"
      )
    columns["s2_phrase_to_sidi"] = _cols(
      item_phrases.phrase_rows(
        world.items,
        table.item_sid,
        lambda i: i in has_item,
        lambda p: table.query_sid(p) if p in has_query else None,
        keyword_sids,
        skips,
        clicks=train_clicks if config.item_phrases == "clicks" else None,
      )
    )
  stream_texts: set[str] = set()
  if item_stream is not None:
    lazy, stream_texts = _lazy_item_kinds(item_stream, table, q_text_cat, skips)
    columns.update(lazy)
  # Phase 3 and eval.
  index = build_index(world, table, config)
  keywords = keyword_source.build_keyword_generator(
    config.keywords, world.items, world.recall
  )

  def rows_of(examples, eval_row, kind):
    out = []
    for ex in examples:
      if ex.session.query not in has_query:
        skips[f"{kind}_query_without_sid"] += 1
        continue
      out.append(_phase3_row(ex, table, config, eval_row, keywords))
    return out

  s3_rows = rows_of(index.train_examples(), False, "s3")
  if config.cot_tasks:
    if keyword_sids is None:
      raise ValueError("build_corpus: MuSeqConfig.cot_tasks needs keyword_sids")
    columns.update(
      _cot_columns(train_queries, s3_rows, table, config, keywords, keyword_sids, skips)
    )
  columns["s3_personal"] = _cols(s3_rows)
  columns["s3_query"] = _cols([_without_user(r, config, keywords) for r in s3_rows])
  if config.sliding_window:
    columns["s3_window"] = _cols(rows_of(index.window_examples(), False, "s3_window"))
  for kind in ("click", "order"):
    columns[f"eval_{kind}"] = _cols(rows_of(index.eval_examples(kind), True, "eval"))
  skips.update(index.skips)
  texts = set(prompts.template_words()) | stream_texts
  texts.update(str(it["item_title"]) for it in world.items)
  texts.update(str(r["query"]) for r in world.recall)
  texts.update(_category_path(it) for it in world.items)
  texts.update(index.profiles.values())
  return Corpus(
    columns=columns,
    skips={k: v for k, v in sorted(skips.items()) if v},
    texts=sorted(texts),
  )


def build_vocabulary(
  corpus: Corpus,
  table: SIDTable,
  config: museq.MuSeqConfig,
  sp_config: vocab_lib.SentencePieceConfig | None = None,
) -> vocab_lib.OneSearchVocabulary:
  """Trains the sentencepiece part on the corpus text and adds SID ranges."""
  sp_config = sp_config or vocab_lib.SentencePieceConfig()
  model = vocab_lib.train_sentencepiece(corpus.texts, sp_config)
  return vocab_lib.OneSearchVocabulary(model, vocab_layout(table, config))


def vocab_layout(table: SIDTable, config: museq.MuSeqConfig) -> vocab_lib.VocabLayout:
  """The vocabulary's appended ranges for a SID table and Mu-Seq settings:
  the SID levels, ``<u_*>`` for the hashed user id, and the CoT task
  markers with ``config.cot_tasks`` (none otherwise)."""
  return vocab_lib.VocabLayout(
    levels=table.levels,
    d_range=table.d_range,
    user_buckets=config.user_hash_buckets if config.user_id == "hashed" else 0,
    markers=prompts.COT_MARKERS if config.cot_tasks else (),
  )
