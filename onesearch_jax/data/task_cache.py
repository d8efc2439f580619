"""seqio's offline task cache, as the caching job writes it and training reads it.

The Beam job (``data/cache_tasks.py``, run in the ``.venv-beam`` environment)
writes a cache directory; training (``SFTConfig.task_cache_dir``) reads it
with seqio's ``use_cached=True``. Nothing here imports apache_beam. Layout:

  {cache}/onesearch_cache.json   the manifest: what the examples were made from
                                 (``fingerprint``), the vocabulary's hash, the
                                 cached task names
  {cache}/vocab/                 the vocabulary the cached token ids are in
                                 (``spm.model`` + ``vocab.json``)
  {cache}/{task}/                seqio's layout: ``{split}.tfrecord-*-of-*``,
                                 ``info.{split}.json``, ``stats.{split}.json``,
                                 ``COMPLETED``

Paths go through ``tf.io.gfile``, so the cache may live in a bucket
(``gs://...``). A training run adopts the cache's vocabulary
(``adopt_vocabulary``) and refuses a cache made from other data or another
vocabulary (``check``): cached token ids are only meaningful with the
vocabulary they were encoded with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import seqio
import tensorflow as tf

from onesearch_jax.data import museq
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.khqe import artefact
from onesearch_jax.world import manifest as manifest_lib

MANIFEST = "onesearch_cache.json"
VOCAB = "vocab"
VOCAB_FILES = ("spm.model", "vocab.json")


class CacheError(ValueError):
  """A task cache that is missing, incomplete or made from other data."""


def fingerprint(
  world_dir: str | os.PathLike,
  sid_dir: str | os.PathLike,
  config: museq.MuSeqConfig,
  sp_config: vocab_lib.SentencePieceConfig,
  prefix: str,
) -> dict[str, Any]:
  """What the examples of a registration depend on (no paths: a copy of the
  same world and artefact elsewhere gives the same fingerprint)."""
  world_dir = os.fspath(world_dir)
  return {
    "world_hash": manifest_lib.world_content_hash(
      world_dir, manifest_lib.read_manifest(world_dir)
    ),
    "sid_hash": artefact.check_hash(sid_dir),
    "museq": museq.config_dict(config),
    "sentencepiece": dataclasses.asdict(sp_config),
    "prefix": prefix,
  }


def vocab_hash(directory: str) -> str:
  """sha256 over a saved vocabulary's files (``OneSearchVocabulary.save``)."""
  h = hashlib.sha256()
  for name in VOCAB_FILES:
    with tf.io.gfile.GFile(os.path.join(directory, name), "rb") as f:
      h.update(name.encode() + b"\x00" + f.read())
  return h.hexdigest()


def has_vocabulary(directory: str) -> bool:
  """Whether ``directory`` holds a saved vocabulary."""
  return all(tf.io.gfile.exists(os.path.join(directory, n)) for n in VOCAB_FILES)


def copy_vocabulary(src: str, dst: str) -> None:
  """Copies a saved vocabulary (local or bucket paths)."""
  tf.io.gfile.makedirs(dst)
  for name in VOCAB_FILES:
    tf.io.gfile.copy(os.path.join(src, name), os.path.join(dst, name), overwrite=True)


def read_manifest(cache_dir: str) -> dict[str, Any] | None:
  """The cache's manifest, or None when there is none."""
  path = os.path.join(cache_dir, MANIFEST)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def write_manifest(
  cache_dir: str, fp: Mapping[str, Any], task_names: Iterable[str]
) -> dict[str, Any]:
  """Writes (or extends) the manifest after a caching run.

  A cache holds one registration: an existing manifest must have the same
  fingerprint and vocabulary; its task names are kept and the new ones added.

  Raises:
    CacheError: the directory holds a cache of other data or another
      vocabulary.
  """
  want = {
    "fingerprint": json.loads(json.dumps(dict(fp))),
    "vocab_hash": vocab_hash(os.path.join(cache_dir, VOCAB)),
  }
  old = read_manifest(cache_dir)
  names = set(task_names)
  if old is not None:
    _same(old, want, f"{cache_dir} (a cache of other data: use another directory)")
    names |= set(old.get("tasks", []))
  out = {**want, "tasks": sorted(names)}
  path = os.path.join(cache_dir, MANIFEST)
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    json.dump(out, f, indent=2, sort_keys=True)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
  return out


def _same(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
  for key in ("fingerprint", "vocab_hash"):
    if have.get(key) != want[key]:
      diff = key
      if key == "fingerprint" and isinstance(have.get(key), dict):
        diff = ", ".join(
          sorted(k for k in want[key] if have[key].get(k) != want[key][k])
        )
      raise CacheError(f"{where}: {diff} differs from this run's")


def adopt_vocabulary(cache_dir: str, vocab_dir: str) -> None:
  """Copies the cache's vocabulary to ``vocab_dir`` unless one is there.

  ``tasks.register_tasks(vocab_dir=...)`` then loads it, so the tasks encode
  with the vocabulary of the cached token ids (``check`` verifies it).
  """
  src = os.path.join(cache_dir, VOCAB)
  if not has_vocabulary(src):
    raise CacheError(f"{src}: no saved vocabulary (not a task cache?)")
  if not has_vocabulary(vocab_dir):
    copy_vocabulary(src, vocab_dir)


def check(cache_dir: str, fp: Mapping[str, Any], vocab_dir: str) -> dict[str, Any]:
  """The cache's manifest, after checking it matches this registration.

  Raises:
    CacheError: no manifest (the caching run did not finish), or a cache of
      other data or another vocabulary than ``vocab_dir``'s.
  """
  have = read_manifest(cache_dir)
  if have is None:
    raise CacheError(
      f"{os.path.join(cache_dir, MANIFEST)}: missing (no finished caching run: "
      "python -m onesearch_jax.data.cache_tasks, docs/DATA.md)"
    )
  want = {
    "fingerprint": json.loads(json.dumps(dict(fp))),
    "vocab_hash": vocab_hash(vocab_dir),
  }
  _same(have, want, f"task cache {cache_dir}")
  return have


def enable(cache_dir: str, task_names: Iterable[str]) -> None:
  """Puts ``cache_dir`` first among seqio's global cache directories and
  checks that every named task is cached there (seqio's ``COMPLETED``
  marker) and that seqio reads it from there.

  Raises:
    CacheError: a task is not cached, naming them all.
  """
  others = [d for d in seqio.utils.get_global_cache_dirs() if d != cache_dir]
  seqio.set_global_cache_dirs([cache_dir, *others])
  missing = []
  for name in task_names:
    here = os.path.join(cache_dir, seqio.get_task_dir_from_name(name))
    if not tf.io.gfile.exists(os.path.join(here, "COMPLETED")):
      missing.append(name)
    elif seqio.get_mixture_or_task(name).cache_dir != here:
      raise CacheError(f"{name}: seqio reads another cache than {here}")
  if missing:
    raise CacheError(
      f"task cache {cache_dir}: {missing} not cached (run "
      "python -m onesearch_jax.data.cache_tasks with --cache_tasks naming them)"
    )
