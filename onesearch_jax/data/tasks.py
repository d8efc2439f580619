"""seqio Tasks and Mixtures of the three SFT phases (SPEC §4.1) + eval tasks.

The ONLY module that calls ``seqio.TaskRegistry.add``. Nothing is registered
at import time: ``register_tasks(world_dir, sid_dir)`` reads a world and a SID
artefact, builds every example once (``build_corpus``), trains the vocabulary
(``build_vocabulary``) and registers, under a name prefix (default
"onesearch"):

Phase 1 (semantic alignment), split "train":
  ``{p}_s1_query_to_sid``, ``{p}_s1_sid_to_query`` (queries of train sessions),
  ``{p}_s1_title_to_sid``, ``{p}_s1_sid_to_title``, ``{p}_s1_sid_to_category``
  (every item with a SID), ``{p}_s1_text_to_category`` (item titles, and
  queries with their most clicked train category path).
Phase 2 (co-occurrence), split "train", one example per distinct (query,
  clicked item) pair of the train split:
  ``{p}_s2_query_to_title``, ``{p}_s2_title_to_query``, ``{p}_s2_sidq_to_sidi``,
  ``{p}_s2_sidi_to_sidq``, ``{p}_s2_query_to_sidi`` (query text + SID_q ->
  clicked item SID); with ``MuSeqConfig.item_phrases`` also
  ``{p}_s2_phrase_to_sidi`` (query-like item phrases + their SID_q -> the
  item's SID, ``data/item_phrases.py``; like ``s3_query`` it is left out of
  the phase mixtures and sampled where ``SFTConfig.phase_tasks`` names it).
Phase 3 (personalised), split "train": ``{p}_s3_personal`` (one example per
  clicked item of a train session), ``{p}_s3_window`` (sliding-window
  samples, ``museq.MuSeqIndex.window_examples``; absent when
  ``config.sliding_window`` is False) and ``{p}_s3_query`` (the
  ``s3_personal`` examples with the user segments blanked: uid, Seq_q,
  Seq_short and profile "none", no long-term items; the phase-3 prompt of a
  cold-start user). ``s3_query`` is context dropout: it teaches the query's
  own click distribution in the phase-3 prompt; the phase mixtures only
  sample it where ``SFTConfig.phase_tasks`` names it.
Eval, split "test": ``{p}_eval_click`` / ``{p}_eval_order``: one example per
  test session with a click / purchase, carrying "user_id", "session_id",
  "query" and "target_item_ids" (all clicked / purchased items) for item-level
  metrics; "targets" is the SID of the first of them.

Self-distillation (``config.keywords_in = "teacher"``, docs/V2.md): the
phase-3 training tasks (``TEACHER_KINDS``) also carry "teacher_inputs", the
same example's prompt with the keyword segment (``prompts.teacher_template``),
tokenised and trimmed like "inputs"; "inputs" (and every eval prompt) has
no keywords.

Mixtures ``{p}_phase1``, ``{p}_phase2``, ``{p}_phase3``: each task's rate is its
number of examples (examples-proportional mixing, i.e. every example is seen
about once per epoch of the mixture); the window task's rate is multiplied by
``config.window_rate``.

Examples whose query or target item has no SID are skipped and counted in
``RegisteredTasks.skips``.

Offline caching (seqio's Beam cache, ``data/cache_tasks.py``): every task has
a ``seqio.CacheDatasetPlaceholder`` after the prompt, tokenisation and
long-seq steps, so the cache holds tokenised examples with their dense
features, and ``append_eos_after_trim`` (which needs the sequence lengths)
runs when the cache is read. Reading on the fly (``use_cached=False``, the
main job) runs the same steps in the same order. ``source_shards > 1`` lists a
task's source as that many shards (examples ``i % n == index``,
``ShardedFunctionSource``), the unit of work the Beam cache spreads over its
workers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from onesearch_jax.data import (
  museq,
  preprocessors,
  prompts,
  seqio_warnings,
  task_arrays,
  world_source,
)
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.corpus import (
  AUGMENT_KINDS,
  TEST,
  TRAIN,
  LazyColumns,
  build_corpus,
  build_vocabulary,
)
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.v2.keyword_sids import artefact_keyword_sids
from onesearch_jax.world import manifest as manifest_lib

SHUFFLE_BUFFER = 10_000
# The tasks that carry a "teacher_inputs" feature under self-distillation
# (``MuSeqConfig.keywords_in = "teacher"``): the phase-3 training tasks.
TEACHER_KINDS = ("s3_personal", "s3_window", "s3_query")


@dataclasses.dataclass(frozen=True)
class RegisteredTasks:
  """What ``register_tasks`` registered.

  Attributes:
    tasks: task kind -> registered task name.
    mixtures: "phase1" | "phase2" | "phase3" -> mixture name.
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


def _column_batches(cols: LazyColumns, size: int = 1024):
  """The rows of ``cols`` as dicts of lists of up to ``size`` values (one
  Python-to-TF hand-over per batch, not per example)."""
  batch = {k: [] for k in cols.fields}
  for row in cols.rows():
    for k in cols.fields:
      batch[k].append(row[k])
    if len(batch[cols.fields[0]]) == size:
      yield batch
      batch = {k: [] for k in cols.fields}
  if batch[cols.fields[0]]:
    yield batch


def _dataset_fn(split, shuffle_files, seed=None, *, cols, task_split, shuffle_rows=0):
  """The task's raw rows (string columns), in corpus order.

  With ``shuffle_rows`` (the number of rows; 0 = off) and ``shuffle_files``
  (seqio's ``shuffle``: training), the rows come in a full shuffle seeded by
  ``seed`` and reshuffled on each repetition (MuSeqConfig.shuffle_rows).
  Otherwise the order is fixed and only the Task's example buffer shuffles.
  """
  if split != task_split:
    raise ValueError(f"split {split!r} not available (only {task_split!r})")
  if isinstance(cols, LazyColumns):  # made from items.jsonl, in batches
    ds = tf.data.Dataset.from_generator(
      functools.partial(_column_batches, cols),
      output_signature={k: tf.TensorSpec((None,), tf.string) for k in cols.fields},
    ).unbatch()
  else:
    ds = tf.data.Dataset.from_tensor_slices(_to_tensors(cols))
  if shuffle_rows and shuffle_files:
    ds = ds.shuffle(shuffle_rows, seed=seed, reshuffle_each_iteration=True)
  return ds


class ShardedFunctionSource(seqio.FunctionDataSource):
  """A ``FunctionDataSource`` listed as ``num_shards`` shards.

  Shard ``index`` of ``n`` holds the examples ``i % n == index`` of the
  function's dataset, so the shards partition it. seqio's Beam cache
  (``beam_utils.PreprocessTask``) makes one work item per listed shard, and
  ``Task.get_dataset(shard_info=...)`` shards at the source whenever the
  source lists at least as many shards as asked for (the same examples per
  host as seqio's example-level sharding of a one-shard source).
  """

  def __init__(self, dataset_fn, splits, num_shards: int, num_input_examples=None):
    if num_shards < 1:
      raise ValueError(
        f"ShardedFunctionSource: num_shards must be >= 1, got {num_shards}"
      )
    super().__init__(dataset_fn, splits, num_input_examples=num_input_examples)
    self._num_shards = num_shards

  def list_shards(self, split: str) -> list[str]:
    n = self._num_shards
    return [f"{split}-{i:05d}-of-{n:05d}" for i in range(n)]

  def get_dataset(
    self,
    split: str = TRAIN,
    shuffle: bool = True,
    seed: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
    *,
    sequence_length=None,
    use_cached: bool = False,
    num_epochs: int | None = 1,
  ) -> tf.data.Dataset:
    ds = super().get_dataset(split, shuffle, seed, None, num_epochs=num_epochs)
    if shard_info is not None and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


def _source(dataset_fn, split: str, n: int, source_shards: int) -> seqio.DataSource:
  if source_shards == 1:
    return seqio.FunctionDataSource(
      dataset_fn, splits=[split], num_input_examples={split: n}
    )
  return ShardedFunctionSource(
    dataset_fn, [split], source_shards, num_input_examples={split: n}
  )


def _output_features(
  vocabulary, dense: bool, d: int, teacher: bool = False
) -> dict[str, seqio.Feature]:
  out = {
    "inputs": seqio.Feature(vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary, add_eos=True),
  }
  if teacher:
    out[preprocessors.TEACHER_INPUTS] = seqio.Feature(vocabulary, add_eos=True)
  if dense:
    passthrough = seqio.PassThroughVocabulary(size=0)
    out["long_seq"] = seqio.Feature(
      passthrough, add_eos=False, dtype=tf.float32, rank=2
    )
    out["long_seq_mask"] = seqio.Feature(passthrough, add_eos=False, dtype=tf.int32)
  return out


_REGISTERED: dict[str, tuple[str, RegisteredTasks]] = {}
# task name -> what its examples are made of (in-memory tasks): the train
# batches' index path (``task_arrays``).
_TASK_ROWS: dict[str, task_arrays.TaskRows] = {}


def task_rows(name: str) -> task_arrays.TaskRows | None:
  """The raw material of a task registered by ``register_tasks`` in this
  process, or None (not registered here, or a streamed item task: read
  those through seqio)."""
  return _TASK_ROWS.get(name)


def _fingerprint(*parts) -> str:
  return hashlib.sha256(
    json.dumps(parts, sort_keys=True, default=str).encode()
  ).hexdigest()


def _remove(names) -> None:
  for name in names:
    _TASK_ROWS.pop(name, None)
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
  source_shards: int = 1,
  stream_items: bool = False,
  keyword_sids: Callable[[list[str]], list[str]] | None = None,
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
    source_shards: shards each task's source lists (1: seqio's
      ``FunctionDataSource``; more: ``ShardedFunctionSource``, for the Beam
      cache). The examples are the same.
    stream_items: keep no item table: only the items the log references are
      held, and the phase-1 item tasks read ``items.jsonl`` row by row when
      their dataset is iterated (``build_corpus(item_stream=...)``). For
      catalogues too big to hold; the main job's default world keeps the
      in-memory path (False), whose examples the streamed one equals
      (``tests/data/tasks_stream_test.py``).
    keyword_sids: texts -> SID strings for the CoT tasks' keywords
      (``config.cot_tasks``) and the item phrases' SID_q
      (``config.item_phrases``); None: ``v2.keyword_sids.artefact_keyword_sids``
      of ``sid_dir`` (a ``sid_table`` without it is an error then).

  Returns:
    The registered names, vocabulary, counts and skips.
  """
  seqio_warnings.install()
  config = config or museq.MuSeqConfig()
  sp_config = sp_config or vocab_lib.SentencePieceConfig()
  if (sid_dir is None) == (sid_table is None):
    raise ValueError("register_tasks: give exactly one of sid_dir and sid_table")
  world_dir = os.path.abspath(os.fspath(world_dir))
  needs_text_sids = config.cot_tasks or config.item_phrases != "none"
  if needs_text_sids and keyword_sids is None and sid_dir is None:
    raise ValueError(
      "register_tasks: MuSeqConfig.cot_tasks / item_phrases with a sid_table "
      "needs keyword_sids"
    )
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
    source_shards,
    stream_items,
    # The CoT tasks' keyword SIDs: the artefact's (part of sid_key) or a
    # caller's function (tests), told apart by the callable's identity.
    None if keyword_sids is None else id(keyword_sids),
  )
  if prefix in _REGISTERED:
    old_key, old = _REGISTERED[prefix]
    if old_key == key and all(
      n in seqio.TaskRegistry.names() for n in old.tasks.values()
    ):
      return old
    _remove(old.names)
    del _REGISTERED[prefix]
  if needs_text_sids and keyword_sids is None:
    keyword_sids = artefact_keyword_sids(sid_dir)

  if stream_items:
    corpus = build_corpus(
      world_source.read_world(world_dir, items="referenced"),
      sid_table,
      config,
      # read_world has checked every item row; the task passes re-read fast.
      item_stream=functools.partial(
        world_source.iter_table, world_dir, "items", schema_checks=False
      ),
      keyword_sids=keyword_sids,
    )
  else:
    corpus = build_corpus(
      world_source.read_world(world_dir), sid_table, config, keyword_sids=keyword_sids
    )
  if vocab_dir is not None and os.path.isfile(os.path.join(vocab_dir, "spm.model")):
    vocabulary = vocab_lib.OneSearchVocabulary.load(vocab_dir)
  else:
    vocabulary = build_vocabulary(corpus, sid_table, config, sp_config)
    if vocab_dir is not None:
      vocabulary.save(vocab_dir)

  templates = {f"s1_{k}": t for k, t in prompts.phase1_templates(config).items()}
  templates.update({f"s2_{k}": t for k, t in prompts.phase2_templates(config).items()})
  if config.cot_tasks:
    templates.update({f"s1_{k}": t for k, t in prompts.cot_templates(config).items()})
  s3 = prompts.phase3_template(config)
  for kind in ("s3_personal", "s3_window", "s3_query", "eval_click", "eval_order"):
    templates[kind] = s3
  d = sid_table.dim
  # Streamed: the items' codes + the codebooks, not the [N, 3, D] table.
  centroids = (
    preprocessors.CodeCentroids(
      sid_table.item_codes, sid_table.rq_centroids, sid_table.levels[1]
    )
    if stream_items
    else sid_table.item_centroids
  )
  tasks, counts = {}, {}
  for kind, cols in corpus.columns.items():
    name = f"{prefix}_{kind}"
    split = TEST if kind.startswith("eval_") else TRAIN
    dense = kind.startswith(("s3_", "eval_"))
    steps = [functools.partial(preprocessors.render_prompt, template=templates[kind])]
    # Self-distillation: the phase-3 training tasks also carry the teacher
    # prompt (with the keywords); "inputs" is the student's, without them.
    teacher = config.teacher_keywords and kind in TEACHER_KINDS
    if teacher:
      steps.append(
        functools.partial(
          preprocessors.render_teacher_prompt,
          template=prompts.teacher_template(config),
        )
      )
    steps.append(seqio.preprocessors.tokenize)
    if dense:
      steps.append(
        functools.partial(
          preprocessors.long_seq_feature,
          item_centroids=centroids,
          reduce=config.long_reduce,
          enabled=config.use_long_seq,
        )
      )
    steps.append(seqio.CacheDatasetPlaceholder())
    steps.append(seqio.preprocessors.append_eos_after_trim)
    n = corpus.count(kind)
    counts[kind] = n
    if n == 0:  # nothing to train on (e.g. no purchase on the test day)
      continue
    seqio.TaskRegistry.remove(name)
    _TASK_ROWS.pop(name, None)
    if not isinstance(cols, LazyColumns) and not stream_items:
      _TASK_ROWS[name] = task_arrays.TaskRows(
        cols=cols,
        count=n,
        inputs_template=templates[kind].inputs,
        targets_template=templates[kind].targets,
        vocabulary=vocabulary,
        item_centroids=np.asarray(centroids, np.float32) if dense else None,
        reduce=config.long_reduce,
        enabled=config.use_long_seq,
        shuffle_rows=n if config.shuffle_rows else 0,
        shuffle_buffer=SHUFFLE_BUFFER,
        teacher_template=prompts.teacher_template(config).inputs if teacher else None,
      )
    seqio.TaskRegistry.add(
      name,
      source=_source(
        functools.partial(
          _dataset_fn,
          cols=cols,
          task_split=split,
          shuffle_rows=n if config.shuffle_rows else 0,
        ),
        split,
        n,
        source_shards,
      ),
      preprocessors=steps,
      output_features=_output_features(vocabulary, dense, d, teacher),
      shuffle_buffer_size=SHUFFLE_BUFFER,
    )
    tasks[kind] = name
  mixtures = {}
  for phase in ("s1", "s2", "s3"):
    members = []
    for kind, name in tasks.items():
      if not kind.startswith(phase + "_") or kind in AUGMENT_KINDS:
        continue
      rate = float(counts[kind])
      if kind == "s3_window":
        rate *= config.window_rate
      members.append((name, rate))
    if not members:
      continue
    mname = f"{prefix}_phase{phase[1]}"
    seqio.MixtureRegistry.remove(mname)
    seqio.MixtureRegistry.add(mname, members)
    mixtures[f"phase{phase[1]}"] = mname
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
