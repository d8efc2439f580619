r"""The Beam job that writes seqio's offline cache of the OneSearch tasks.

Runs in the Beam environment (``bash scripts/beam_venv.sh`` -> ``.venv-beam``;
apache-beam does not resolve against constraints.txt):

  .venv-beam/bin/python -m onesearch_jax.data.cache_tasks --workdir=workdir \
      --output_cache_dir=/data/onesearch_cache [--gin_file=... as for run.py] \
      [--cache_tasks=s1_title_to_sid,s3_personal] \
      [--pipeline_options=--runner=FnApiRunner,--direct_num_workers=2]

It reads the world (``--world_dir``, else ``WORKDIR/world``) and the SID
artefact (``--sid_dir``, else ``WORKDIR/sids``) that
``run.py --mode=build_sids`` wrote, registers
the tasks with the SFT config's Mu-Seq / sentencepiece settings and prefix
(gin, as ``run.py``), and caches each task's train split with seqio's Beam
transforms (``seqio.beam_utils``, what ``seqio_cache_tasks`` runs): every
source shard (``--source_shards``; examples ``i % n == index``) is one work
item that runs the pre-cache steps (prompt, tokenisation, long-seq feature),
the examples are reshuffled and written as ``--output_shards`` TFRecord files
of ``tf.train.Example`` in seqio's layout, with ``info`` / ``stats`` JSON and a
``COMPLETED`` marker per task, then the cache manifest
(``data/task_cache.py``). Training reads it with
``--gin_bindings="sft_config.task_cache_dir='/data/onesearch_cache'"``.

The default runner is ``FnApiRunner``, Beam's in-process Python runner:
Beam 2.77's ``DirectRunner`` first tries the Prism runner, which downloads a
binary from GitHub at run time, and falls back to ``FnApiRunner`` when that
fails; naming it directly downloads nothing.

Workers register the tasks themselves (``PreprocessTask``'s ``setup_fn``):
the world, artefact and vocabulary directories are read on each worker, and
``gs://`` directories are first copied to a local temporary directory there.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
import seqio
import tensorflow as tf
from absl import app, flags
from seqio import beam_utils

import gin
from onesearch_jax import main as main_lib  # run.py's flags and gin set-up
from onesearch_jax.data import corpus, museq, task_cache, tasks
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.stages.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class CacheJob:
  """What every worker registers (pickled into the pipeline).

  Attributes:
    world_dir: world directory (local or ``gs://``).
    sid_dir: SID artefact directory (local or ``gs://``).
    vocab_dir: the saved vocabulary (the cache's ``vocab/``).
    museq: ``museq.config_dict(MuSeqConfig)``.
    sentencepiece: ``dataclasses.asdict(SentencePieceConfig)``.
    prefix: task name prefix.
    source_shards: shards each task's source lists (work items per task).
  """

  world_dir: str
  sid_dir: str
  vocab_dir: str
  museq: dict[str, Any]
  sentencepiece: dict[str, Any]
  prefix: str = "onesearch"
  source_shards: int = 4


_LOCAL: dict[str, str] = {}


def _local(path: str) -> str:
  """``path`` itself, or (``scheme://...``) a local copy, made once per process."""
  if "://" not in path:
    return path
  if path not in _LOCAL:
    dst = tempfile.mkdtemp(prefix="onesearch_cache_input_")
    for root, _, files in tf.io.gfile.walk(path):
      rel = os.path.relpath(root, path) if root != path else ""
      tf.io.gfile.makedirs(os.path.join(dst, rel))
      for name in files:
        tf.io.gfile.copy(os.path.join(root, name), os.path.join(dst, rel, name))
    _LOCAL[path] = dst
  return _LOCAL[path]


def _absolute(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


def register(job: CacheJob) -> tasks.RegisteredTasks:
  """Registers the job's tasks in this process (idempotent)."""
  return tasks.register_tasks(
    _local(job.world_dir),
    _local(job.sid_dir),
    config=museq.MuSeqConfig(**job.museq),
    sp_config=vocab_lib.SentencePieceConfig(**job.sentencepiece),
    vocab_dir=_local(job.vocab_dir),
    prefix=job.prefix,
    source_shards=job.source_shards,
  )


def _fingerprint(job: CacheJob) -> dict[str, Any]:
  return task_cache.fingerprint(
    _local(job.world_dir),
    _local(job.sid_dir),
    museq.MuSeqConfig(**job.museq),
    vocab_lib.SentencePieceConfig(**job.sentencepiece),
    job.prefix,
  )


def _prepare_vocabulary(job: CacheJob, vocab_src: str) -> None:
  """Puts a vocabulary at ``job.vocab_dir`` when it has none: a copy of
  ``vocab_src``, else the one the registration trains."""
  if task_cache.has_vocabulary(job.vocab_dir):
    return
  if vocab_src:
    task_cache.copy_vocabulary(vocab_src, job.vocab_dir)
  elif "://" in job.vocab_dir:  # train locally, then upload
    local = tempfile.mkdtemp(prefix="onesearch_cache_vocab_")
    register(dataclasses.replace(job, vocab_dir=local))
    task_cache.copy_vocabulary(local, job.vocab_dir)
  else:
    register(job)  # trains and saves the vocabulary there


def _numpy(ex: dict[str, Any]) -> dict[str, Any]:
  """Dense tensors -> numpy (portable between workers); ragged ones stay."""
  return {k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in ex.items()}


def add_task(
  pipeline: beam.Pipeline,
  job: CacheJob,
  task: seqio.Task,
  cache_dir: str,
  output_shards: int,
) -> str:
  """Adds one task's train split to the pipeline; returns its output directory."""
  split = tasks.TRAIN
  out = os.path.join(cache_dir, seqio.get_task_dir_from_name(task.name))
  label = f"{task.name}_{split}"
  examples = (
    pipeline
    | f"{label}_preprocess"
    >> beam_utils.PreprocessTask(task, split, setup_fn=functools.partial(register, job))
    | f"{label}_numpy" >> beam.Map(_numpy)
    | f"{label}_shuffle" >> beam.Reshuffle()
  )
  _ = examples | f"{label}_write" >> beam_utils.WriteExampleTfRecord(
    seqio.get_cached_tfrecord_prefix(out, split), num_shards=output_shards
  )
  _ = (
    examples
    | f"{label}_info" >> beam_utils.GetInfo(output_shards)
    | f"{label}_write_info"
    >> beam_utils.WriteJson(seqio.get_cached_info_path(out, split))
  )
  _ = (
    examples
    | f"{label}_stats" >> beam_utils.GetStats(task.output_features)
    | f"{label}_write_stats"
    >> beam_utils.WriteJson(seqio.get_cached_stats_path(out, split))
  )
  return out


def run(
  job: CacheJob,
  cache_dir: str,
  kinds: Sequence[str] = (),
  *,
  pipeline_options: Sequence[str] = ("--runner=FnApiRunner",),
  output_shards: int = 4,
  overwrite: bool = False,
  vocab_src: str = "",
  log: Callable[[str], None] = print,
) -> dict[str, str]:
  """Caches the train split of the job's tasks in ``cache_dir``.

  Args:
    job: the registration (``job.vocab_dir`` should be ``cache_dir/vocab``).
    cache_dir: the cache directory (local or ``gs://``).
    kinds: task kinds (``s1_title_to_sid``, ...); () = every train task.
    pipeline_options: Beam pipeline options (runner and its flags).
    output_shards: TFRecord files per task.
    overwrite: re-cache a task that is already cached (else it is skipped).
    vocab_src: a saved vocabulary to use when the cache has none yet (e.g.
      an earlier training run's ``train/vocab``); "" = train one.
    log: progress printer.

  Returns:
    task kind -> task name of the tasks cached by this call.

  Raises:
    ValueError: an unknown kind, or a kind without examples.
    task_cache.CacheError: the cache holds other data.
  """
  t0 = time.perf_counter()
  tf.io.gfile.makedirs(cache_dir)
  _prepare_vocabulary(job, vocab_src)
  registered = register(job)
  fp = _fingerprint(job)
  if task_cache.read_manifest(cache_dir) is not None:
    task_cache.check(cache_dir, fp, _local(job.vocab_dir))
  wanted = list(kinds) or [k for k in corpus.TRAIN_TASK_KINDS if k in registered.tasks]
  unknown = [k for k in wanted if k not in corpus.TRAIN_TASK_KINDS]
  if unknown:
    raise ValueError(
      f"cache_tasks: unknown train task kinds {unknown}; known: "
      f"{list(corpus.TRAIN_TASK_KINDS)}"
    )
  empty = [k for k in wanted if k not in registered.tasks]
  if empty:
    raise ValueError(f"cache_tasks: no examples for {empty}")
  todo: dict[str, str] = {}
  for kind in wanted:
    name = registered.tasks[kind]
    out = os.path.join(cache_dir, seqio.get_task_dir_from_name(name))
    if tf.io.gfile.exists(os.path.join(out, "COMPLETED")):
      if not overwrite:
        log(f"[cache] {name} is cached already in {out}; skipping")
        continue
      tf.io.gfile.rmtree(out)
    elif tf.io.gfile.exists(out):
      tf.io.gfile.rmtree(out)  # an unfinished earlier run
    todo[kind] = name
  log(
    f"[cache] tasks registered in {time.perf_counter() - t0:.1f} s; caching "
    f"{list(todo.values()) or 'nothing'} with {job.source_shards} source shards, "
    f"{output_shards} output shards, {' '.join(pipeline_options)}"
  )
  outs = []
  if todo:
    options = beam.options.pipeline_options.PipelineOptions(list(pipeline_options))
    with beam.Pipeline(options=options) as pipeline:
      for name in todo.values():
        task = seqio.TaskRegistry.get(name)
        outs.append(add_task(pipeline, job, task, cache_dir, output_shards))
  # The pipeline has finished (the ``with`` block waits for the runner).
  for out in outs:
    with tf.io.gfile.GFile(os.path.join(out, "COMPLETED"), "w") as f:
      f.write("")
  task_cache.write_manifest(cache_dir, fp, [registered.tasks[k] for k in wanted])
  log(f"[cache] done in {time.perf_counter() - t0:.1f} s: {cache_dir}")
  return todo


# ------------------------------------------------------------ command line


flags.DEFINE_string(
  "output_cache_dir", None, "Where the task cache goes (local or gs://)."
)
flags.DEFINE_list(
  "cache_tasks", [], "Train task kinds to cache (default: every train task)."
)
flags.DEFINE_list(
  "pipeline_options",
  ["--runner=FnApiRunner"],
  "Beam pipeline options, comma-separated (runner and its flags; the default "
  "runs in this process and downloads nothing).",
)
flags.DEFINE_integer("source_shards", 4, "Work items per task (source shards).")
flags.DEFINE_integer("output_shards", 4, "TFRecord files per task.")
flags.DEFINE_bool("overwrite", False, "Re-cache tasks that are cached already.")
flags.DEFINE_string(
  "vocab_dir", "", "A saved vocabulary to use when the cache has none yet."
)
flags.DEFINE_string(
  "sid_dir", "", "The SID artefact (local or gs://; default WORKDIR/sids)."
)


def main(argv: list[str]) -> int:
  """The command line (flags: this module's, and run.py's --workdir,
  --world_dir, --gin_file, --gin_bindings)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  fl = flags.FLAGS
  if not fl.output_cache_dir:
    raise app.UsageError("--output_cache_dir is required")
  made = main_lib.register_configurables()
  for path in fl.gin_search_paths:
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(fl.gin_file, fl.gin_bindings)
  sft = main_lib.build_config(made).train
  wd = Workdir.of(fl.workdir)
  job = CacheJob(
    world_dir=_absolute(str(wd.world_source(fl.world_dir))),
    sid_dir=_absolute(fl.sid_dir or str(wd.sids)),
    vocab_dir=os.path.join(fl.output_cache_dir, task_cache.VOCAB),
    museq=museq.config_dict(sft.museq),
    sentencepiece=dataclasses.asdict(sft.sentencepiece),
    prefix=sft.prefix,
    source_shards=fl.source_shards,
  )
  run(
    job,
    fl.output_cache_dir,
    fl.cache_tasks,
    pipeline_options=fl.pipeline_options,
    output_shards=fl.output_shards,
    overwrite=fl.overwrite,
    vocab_src=fl.vocab_dir,
  )
  return 0


if __name__ == "__main__":
  app.run(main)
