"""seqio Tasks and Mixtures of the three SFT stages (SPEC §4.1) + eval tasks.

The ONLY module that calls ``seqio.TaskRegistry.add``. Nothing is registered
at import time: ``register_tasks(world_dir, sid_dir)`` reads a world and a SID
artefact, builds every example once (``build_corpus``), trains the vocabulary
(``build_vocabulary``) and registers, under a name prefix (default
"onesearch"):

Stage 1 (semantic alignment), split "train":
  ``{p}_s1_query_to_sid``, ``{p}_s1_sid_to_query`` (queries of train sessions),
  ``{p}_s1_title_to_sid``, ``{p}_s1_sid_to_title``, ``{p}_s1_sid_to_category``
  (every item with a SID), ``{p}_s1_text_to_category`` (item titles, and
  queries with their most clicked train category path).
Stage 2 (co-occurrence), split "train", one example per distinct (query,
  clicked item) pair of the train split:
  ``{p}_s2_query_to_title``, ``{p}_s2_title_to_query``, ``{p}_s2_sidq_to_sidi``,
  ``{p}_s2_sidi_to_sidq``, ``{p}_s2_query_to_sidi`` (query text + SID_q ->
  clicked item SID).
Stage 3 (personalised), split "train": ``{p}_s3_personal`` (one example per
  clicked item of a train session), ``{p}_s3_window`` (sliding-window
  samples, ``museq.MuSeqIndex.window_examples``; absent when
  ``config.sliding_window`` is False) and ``{p}_s3_query`` (the
  ``s3_personal`` examples with the user segments blanked: uid, Seq_q,
  Seq_short and profile "none", no long-term items; the stage-3 prompt of a
  cold-start user). ``s3_query`` is context dropout: it teaches the query's
  own click distribution in the stage-3 prompt; the stage mixtures only
  sample it where ``SFTConfig.stage_tasks`` names it.
Eval, split "test": ``{p}_eval_click`` / ``{p}_eval_order``: one example per
  test session with a click / purchase, carrying "user_id", "session_id",
  "query" and "target_item_ids" (all clicked / purchased items) for item-level
  metrics; "targets" is the SID of the first of them.

Mixtures ``{p}_stage1``, ``{p}_stage2``, ``{p}_stage3``: each task's rate is its
number of examples (examples-proportional mixing, i.e. every example is seen
about once per epoch of the mixture); the window task's rate is multiplied by
``config.window_rate``.

Examples whose query or target item has no SID are skipped and counted in
``RegisteredTasks.skips``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from onesearch_jax.data import (
  museq,
  preprocessors,
  prompts,
  seqio_warnings,
  world_source,
)
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.world import manifest as manifest_lib

TRAIN, TEST = "train", "test"
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
  "s3_personal",
  "s3_window",
  "s3_query",
  "eval_click",
  "eval_order",
)
# The kinds a training stage may sample (the eval_* kinds are eval-only).
TRAIN_TASK_KINDS = tuple(k for k in TASK_KINDS if not k.startswith("eval_"))
# Augmentation kinds left out of the registered ``{p}_stage*`` mixtures (an
# SFT recipe samples them only where ``SFTConfig.stage_tasks`` names them).
AUGMENT_KINDS = ("s3_query",)
SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Raw examples of every task, as columns (lists of equal length).

  Attributes:
    columns: task kind ("s1_query_to_sid", ..., "eval_order") -> field ->
      list of values (str, or int lists for the long-seq item rows, or str
      lists for "target_item_ids").
    skips: reason -> count of examples not made.
    texts: canonical text for the sentencepiece model.
  """

  columns: dict[str, dict[str, list]]
  skips: dict[str, int]
  texts: list[str]

  def count(self, kind: str) -> int:
    cols = self.columns[kind]
    return len(next(iter(cols.values()))) if cols else 0


@dataclasses.dataclass(frozen=True)
class RegisteredTasks:
  """What ``register_tasks`` registered.

  Attributes:
    tasks: task kind -> registered task name.
    mixtures: "stage1" | "stage2" | "stage3" -> mixture name.
    vocabulary: the shared vocabulary.
    counts: task kind -> number of examples (a kind with 0 is not registered).
    skips: reason -> count.
    long_seq_dim: D of the dense long-seq feature.
  """

  tasks: dict[str, str]
  mixtures: dict[str, str]
  vocabulary: vocab_lib.OneSearchVocabulary
  counts: dict[str, int]
  skips: dict[str, int]
  long_seq_dim: int

  @property
  def names(self) -> list[str]:
    return list(self.tasks.values()) + list(self.mixtures.values())


# ------------------------------------------------------------ corpus


def _category_path(item: dict[str, Any]) -> str:
  return "/".join(str(item.get(f"category_level{lvl}_name", "")) for lvl in (1, 2, 3))


def _cols(rows: list[dict]) -> dict[str, list]:
  if not rows:
    return {}
  return {k: [r[k] for r in rows] for k in rows[0]}


def _stage3_row(
  ex: museq.Example, table: SIDTable, config: museq.MuSeqConfig, eval_row: bool
) -> dict[str, Any]:
  row = prompts.stage3_fields(
    ex.session.user_id, ex.session.query, ex.features, table, config
  )
  row["target"] = table.item_sid(ex.targets[0])
  if eval_row:
    row.update(
      user_id=ex.session.user_id,
      session_id=ex.session.session_id,
      target_item_ids=list(ex.targets),
    )
  return row


def _without_user(row: dict[str, Any]) -> dict[str, Any]:
  """A stage-3 row with its user segments blanked (the ``s3_query`` kind)."""
  out = dict(row)
  for k in ("uid", "seq_q", "seq_short", "profile"):
    out[k] = prompts.EMPTY
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


def build_corpus(
  world: world_source.WorldTables, table: SIDTable, config: museq.MuSeqConfig
) -> Corpus:
  """Builds the raw examples of every task (pure Python / numpy).

  Args:
    world: users, items, recall.
    table: the SID table.
    config: Mu-Seq settings.

  Returns:
    The corpus.
  """
  skips: collections.Counter = collections.Counter()
  items = {r["item_id"]: r for r in world.items}
  has_item = table.item_row
  has_query = table.query_row
  # Stage 1.
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
  for item_id in table.item_ids:
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
  skips["s1_item_without_sid"] = sum(1 for i in items if i not in has_item)
  # Query category paths (most clicked train category; ties: smallest path).
  q_cats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  pairs = set()
  for r in world.recall:
    if r["split"] != TRAIN:
      continue
    for i in r["clicked_item_ids"]:
      if i in items:
        q_cats[r["query"]][_category_path(items[i])] += 1
      if i in has_item and r["query"] in has_query and i in items:
        pairs.add((r["query"], i))
      else:
        skips["s2_pair_without_sid"] += 1
  text_cat = [{"text": r["title"], "category": r["category"]} for r in item_rows]
  for q in sorted(q_cats):
    cats = q_cats[q]
    text_cat.append({"text": q, "category": min(cats, key=lambda c: (-cats[c], c))})
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
  # Stage 2.
  s2 = [
    {
      "query": q,
      "title": str(items[i]["item_title"]),
      "sid_q": table.query_sid(q),
      "sid_i": table.item_sid(i),
    }
    for q, i in sorted(pairs)
  ]
  for kind in TASK_KINDS:
    if kind.startswith("s2_"):
      columns[kind] = _cols(s2)
  # Stage 3 and eval.
  index = build_index(world, table, config)

  def rows_of(examples, eval_row, kind):
    out = []
    for ex in examples:
      if ex.session.query not in has_query:
        skips[f"{kind}_query_without_sid"] += 1
        continue
      out.append(_stage3_row(ex, table, config, eval_row))
    return out

  s3_rows = rows_of(index.train_examples(), False, "s3")
  columns["s3_personal"] = _cols(s3_rows)
  columns["s3_query"] = _cols([_without_user(r) for r in s3_rows])
  if config.sliding_window:
    columns["s3_window"] = _cols(rows_of(index.window_examples(), False, "s3_window"))
  for kind in ("click", "order"):
    columns[f"eval_{kind}"] = _cols(rows_of(index.eval_examples(kind), True, "eval"))
  skips.update(index.skips)
  texts = set(prompts.template_words())
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
  layout = vocab_lib.VocabLayout(
    levels=table.levels,
    d_range=table.d_range,
    user_buckets=config.user_hash_buckets if config.user_id == "hashed" else 0,
  )
  model = vocab_lib.train_sentencepiece(corpus.texts, sp_config)
  return vocab_lib.OneSearchVocabulary(model, layout)


# ------------------------------------------------------------ datasets


def _to_tensors(cols: dict[str, list]) -> dict[str, Any]:
  out = {}
  for k, v in cols.items():
    if k in preprocessors.LONG_SEQ_FIELDS:
      lengths = [len(x) for x in v]
      flat = np.fromiter((i for x in v for i in x), np.int32, sum(lengths))
      out[k] = tf.RaggedTensor.from_row_lengths(flat, np.asarray(lengths, np.int64))
    elif k == "target_item_ids":
      out[k] = tf.ragged.constant(v, dtype=tf.string)
    else:
      out[k] = tf.constant(v, tf.string)
  return out


def _dataset_fn(split, shuffle_files, seed=None, *, cols, task_split):
  del shuffle_files, seed  # order is fixed; the Task shuffles by seed
  if split != task_split:
    raise ValueError(f"split {split!r} not available (only {task_split!r})")
  return tf.data.Dataset.from_tensor_slices(_to_tensors(cols))


def _output_features(vocabulary, dense: bool, d: int) -> dict[str, seqio.Feature]:
  out = {
    "inputs": seqio.Feature(vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary, add_eos=True),
  }
  if dense:
    passthrough = seqio.PassThroughVocabulary(size=0)
    out["long_seq"] = seqio.Feature(
      passthrough, add_eos=False, dtype=tf.float32, rank=2
    )
    out["long_seq_mask"] = seqio.Feature(passthrough, add_eos=False, dtype=tf.int32)
  return out


_REGISTERED: dict[str, tuple[str, RegisteredTasks]] = {}


def _fingerprint(*parts) -> str:
  return hashlib.sha256(
    json.dumps(parts, sort_keys=True, default=str).encode()
  ).hexdigest()


def _remove(names) -> None:
  for name in names:
    seqio.MixtureRegistry.remove(name)
    seqio.TaskRegistry.remove(name)


def register_tasks(
  world_dir: str | os.PathLike,
  sid_dir: str | os.PathLike | None = None,
  *,
  config: museq.MuSeqConfig | None = None,
  sid_table: SIDTable | None = None,
  sp_config: vocab_lib.SentencePieceConfig | None = None,
  vocab_dir: str | os.PathLike | None = None,
  prefix: str = "onesearch",
) -> RegisteredTasks:
  """Registers every task and mixture of a world + SID artefact (idempotent).

  Calling again with the same arguments returns the same registration;
  calling with different ones under the same prefix replaces it.

  Args:
    world_dir: world directory (KuaiSearch schema).
    sid_dir: SID artefact directory (or None with ``sid_table``).
    config: Mu-Seq settings and ablation switches (None: defaults).
    sid_table: a ready table instead of ``sid_dir`` (tests, benchmarks).
    sp_config: sentencepiece settings (None: defaults).
    vocab_dir: if it holds a saved vocabulary it is loaded, else the trained
      one is saved there (None: train in memory).
    prefix: task / mixture name prefix.

  Returns:
    The registered names, vocabulary, counts and skips.
  """
  seqio_warnings.install()
  config = config or museq.MuSeqConfig()
  sp_config = sp_config or vocab_lib.SentencePieceConfig()
  if (sid_dir is None) == (sid_table is None):
    raise ValueError("register_tasks: give exactly one of sid_dir and sid_table")
  world_dir = os.path.abspath(os.fspath(world_dir))
  if sid_table is None:
    sid_table = SIDTable.from_artefact(sid_dir)
    sid_key = ("artefact", os.path.abspath(os.fspath(sid_dir)), sid_table.content_hash)
  else:
    h = hashlib.sha256(sid_table.item_codes.tobytes() + sid_table.query_codes.tobytes())
    h.update("\x00".join(sid_table.item_ids + sid_table.query_texts).encode())
    sid_key = ("table", h.hexdigest())
  world_manifest = manifest_lib.read_manifest(world_dir)
  world_key = None if world_manifest is None else world_manifest.get("content_hash")
  key = _fingerprint(
    world_dir,
    world_key,
    sid_key,
    dataclasses.asdict(config),
    dataclasses.asdict(sp_config),
    str(vocab_dir),
  )
  if prefix in _REGISTERED:
    old_key, old = _REGISTERED[prefix]
    if old_key == key and all(
      n in seqio.TaskRegistry.names() for n in old.tasks.values()
    ):
      return old
    _remove(old.names)
    del _REGISTERED[prefix]

  corpus = build_corpus(world_source.read_world(world_dir), sid_table, config)
  if vocab_dir is not None and os.path.isfile(os.path.join(vocab_dir, "spm.model")):
    vocabulary = vocab_lib.OneSearchVocabulary.load(vocab_dir)
  else:
    vocabulary = build_vocabulary(corpus, sid_table, config, sp_config)
    if vocab_dir is not None:
      vocabulary.save(vocab_dir)

  templates = {f"s1_{k}": t for k, t in prompts.stage1_templates(config).items()}
  templates.update({f"s2_{k}": t for k, t in prompts.stage2_templates(config).items()})
  s3 = prompts.stage3_template(config)
  for kind in ("s3_personal", "s3_window", "s3_query", "eval_click", "eval_order"):
    templates[kind] = s3
  d = sid_table.dim
  tasks, counts = {}, {}
  for kind, cols in corpus.columns.items():
    name = f"{prefix}_{kind}"
    split = TEST if kind.startswith("eval_") else TRAIN
    dense = kind.startswith(("s3_", "eval_"))
    steps = [
      functools.partial(preprocessors.render_prompt, template=templates[kind]),
      seqio.preprocessors.tokenize,
    ]
    if dense:
      steps.append(
        functools.partial(
          preprocessors.long_seq_feature,
          item_centroids=sid_table.item_centroids,
          reduce=config.long_reduce,
          enabled=config.use_long_seq,
        )
      )
    steps.append(seqio.preprocessors.append_eos_after_trim)
    n = corpus.count(kind)
    counts[kind] = n
    if n == 0:  # nothing to train on (e.g. no purchase on the test day)
      continue
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(
        functools.partial(_dataset_fn, cols=cols, task_split=split),
        splits=[split],
        num_input_examples={split: n},
      ),
      preprocessors=steps,
      output_features=_output_features(vocabulary, dense, d),
      shuffle_buffer_size=SHUFFLE_BUFFER,
    )
    tasks[kind] = name
  mixtures = {}
  for stage in ("s1", "s2", "s3"):
    members = []
    for kind, name in tasks.items():
      if not kind.startswith(stage + "_") or kind in AUGMENT_KINDS:
        continue
      rate = float(counts[kind])
      if kind == "s3_window":
        rate *= config.window_rate
      members.append((name, rate))
    if not members:
      continue
    mname = f"{prefix}_stage{stage[1]}"
    seqio.MixtureRegistry.remove(mname)
    seqio.MixtureRegistry.add(mname, members)
    mixtures[f"stage{stage[1]}"] = mname
  out = RegisteredTasks(
    tasks=tasks,
    mixtures=mixtures,
    vocabulary=vocabulary,
    counts=counts,
    skips=corpus.skips,
    long_seq_dim=d,
  )
  _REGISTERED[prefix] = (key, out)
  return out
