"""Phase-3 model inputs of logged sessions or live requests, on the host.

The seqio phase-3 / eval tasks (``tasks.py``) build the personalised prompt of
a session inside tf.data. PARS (``prompt_fn(session_ids)``) and inference
(``run.py --mode=infer``) need the same model inputs for arbitrary sessions or
requests; ``SessionPrompter`` makes them through the same code paths, so the
training and serving prompts cannot drift:

* features: ``museq.MuSeqIndex.features`` (index built by
  ``corpus.build_index``), no leakage: only interactions strictly before the
  session / request time;
* prompt fields: ``prompts.phase3_fields`` (also used by ``tasks``), rendered
  with ``prompts.phase3_template(config)``;
* tokens: ``OneSearchVocabulary.encode`` (tested equal to the tf.data path),
  trimmed like seqio's ``append_eos_after_trim`` (the first L-1 tokens, then
  EOS = 1) and padded with 0 to L;
* long-seq feature: ``preprocessors.long_seq_example``, the per-example
  function of the tasks' ``long_seq_feature``, in a tf.function traced once.

Which interactions a prompt sees:

* ``for_sessions``: a TRAIN session sees the train-split interactions before
  its time (exactly its ``s3_personal`` example), a TEST session every
  interaction before its time (exactly its ``eval_click`` / ``eval_order``
  example).
* ``for_requests``: a request at time t is an eval example at t (every logged
  interaction before t; co-occurrence statistics from the train split before
  t). ``time_index=None`` means after the whole log (``end_time``).

Edge cases (documented in docs/DATA_tasks.md):

* unknown user (not in the world): no behaviour, so Mu-Seq's cold start (the
  query's default sequence stands in for Seq_short and the uid; a query never
  clicked gives ``none``); profile ``"unknown"``.
* query without a SID (not in the SID table): ``query id: none`` (the
  ``EMPTY`` marker of every empty segment). The training tasks skip such
  sessions, so the model has only the query text to go on.

Batch (``for_sessions`` / ``for_requests``; B = number of inputs):

  encoder_input_tokens  [B, L] int32    prompt tokens + EOS, 0 = pad
  long_seq_features     [B, 9, D] float32  click, order, RSU x levels L1..L3
  long_seq_mask         [B, 9] int32    only with ``with_mask=True``
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from onesearch_jax.data import (
  corpus,
  museq,
  preprocessors,
  prompts,
  tasks,
  world_source,
)
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.v2 import keyword_source
from onesearch_jax.world import jsonl

REQUEST_FIELDS = ("user_id", "query", "time_index", "request_id")


@dataclasses.dataclass(frozen=True)
class Request:
  """One search request.

  Attributes:
    user_id: the user (one not in the world is a cold-start user).
    query: the query text (one not in the SID table gets ``query id: none``).
    time_index: the request time, in the world's ``time_index`` units; only
      interactions strictly before it count. None: after the whole log.
    request_id: an optional caller id, carried through untouched.
  """

  user_id: str
  query: str
  time_index: int | None = None
  request_id: str = ""

  def __post_init__(self):
    if not isinstance(self.user_id, str) or not self.user_id:
      raise ValueError(f"Request.user_id must be a non-empty str: {self.user_id!r}")
    if not isinstance(self.query, str) or not self.query.strip():
      raise ValueError(f"Request.query must be a non-empty str: {self.query!r}")
    t = self.time_index
    if t is not None and (isinstance(t, bool) or not isinstance(t, int)):
      raise ValueError(f"Request.time_index must be an int or None: {t!r}")
    if not isinstance(self.request_id, str):
      raise ValueError(f"Request.request_id must be a str: {self.request_id!r}")


def _request_from_row(row: dict[str, Any], where: str) -> Request:
  """A Request from a parsed row; errors name ``where`` and the field."""
  unknown = sorted(set(row) - set(REQUEST_FIELDS))
  if unknown:
    raise ValueError(
      f"{where}: field '{unknown[0]}' is unknown (expected {REQUEST_FIELDS})"
    )
  for field in ("user_id", "query"):
    if field not in row:
      raise ValueError(f"{where}: field '{field}' is missing")
    v = row[field]
    if not isinstance(v, str) or not v.strip():
      raise ValueError(f"{where}: field '{field}' must be a non-empty string: {v!r}")
  t = row.get("time_index")
  if isinstance(t, str):
    t = t.strip()
    try:
      t = int(t) if t else None
    except ValueError:
      raise ValueError(
        f"{where}: field 'time_index' must be an integer: {row['time_index']!r}"
      ) from None
  if t is not None and (isinstance(t, bool) or not isinstance(t, int)):
    raise ValueError(f"{where}: field 'time_index' must be an integer: {t!r}")
  rid = row.get("request_id", "")
  if not isinstance(rid, str):
    raise ValueError(f"{where}: field 'request_id' must be a string: {rid!r}")
  return Request(row["user_id"], row["query"], t, rid)


def read_requests(path: str | os.PathLike) -> list[Request]:
  """Reads requests from a JSON-lines or TSV file.

  * ``*.jsonl`` / ``*.json``: one object per line with "user_id", "query",
    optional "time_index" (int or null) and "request_id" (str).
  * ``*.tsv``: a header line naming the columns (the same names; user_id and
    query required), then one request per line; an empty time_index cell is
    None.

  Blank lines are skipped. Unknown fields are errors.

  Args:
    path: the file.

  Returns:
    The requests in file order.

  Raises:
    ValueError: the first bad row, as ``path:line: field 'name' ...``.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".jsonl", ".json", ".tsv"):
    raise ValueError(f"{path}: unknown request file type {ext!r} (.jsonl or .tsv)")
  if ext != ".tsv":
    return [
      _request_from_row(row, f"{path}:{line_no}")
      for line_no, row in jsonl.iter_jsonl(path)
    ]
  out = []
  with open(path, encoding="utf-8", newline="") as f:
    header = None
    for line_no, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      cells = line.split("\t")
      if header is None:
        header = [c.strip() for c in cells]
        bad = [c for c in header if c not in REQUEST_FIELDS]
        if bad or len(set(header)) != len(header):
          field = bad[0] if bad else header[0]
          raise ValueError(
            f"{path}:{line_no}: header field '{field}' is unknown or repeated "
            f"(expected {REQUEST_FIELDS})"
          )
        for field in ("user_id", "query"):
          if field not in header:
            raise ValueError(f"{path}:{line_no}: header field '{field}' is missing")
        continue
      if len(cells) < len(header):
        raise ValueError(
          f"{path}:{line_no}: field '{header[len(cells)]}' is missing "
          f"({len(cells)} tab-separated cells, header has {len(header)})"
        )
      if len(cells) > len(header):
        raise ValueError(
          f"{path}:{line_no}: {len(cells)} tab-separated cells, header has "
          f"{len(header)} fields {tuple(header)}"
        )
      row = dict(zip(header, cells, strict=True))
      out.append(_request_from_row(row, f"{path}:{line_no}"))
    return out


def trim_and_pad(ids: Sequence[int], length: int) -> np.ndarray:
  """seqio's ``append_eos_after_trim`` (first L-1 ids + EOS), 0-padded to L.

  Args:
    ids: token ids without EOS.
    length: L >= 1.

  Returns:
    [L] int32.
  """
  out = np.zeros(length, np.int32)
  kept = list(ids[: length - 1]) + [vocab_lib.EOS_ID]
  out[: len(kept)] = kept
  return out


class SessionPrompter:
  """Phase-3 prompts + long-seq features of logged sessions and requests.

  Args:
    world: the world tables (``world_source.read_world``) or its directory.
    sid_table: the SID table of the tasks.
    vocabulary: the tasks' vocabulary (``RegisteredTasks.vocabulary`` or
      ``OneSearchVocabulary.load(vocab_dir)``).
    config: the tasks' Mu-Seq settings (None: defaults).
    inputs_length: encoder length L (the ``inputs_length`` of the batches).

  Attributes:
    index: the Mu-Seq index of the world.
    sessions: session id -> ``museq.Session``.
    end_time: the time of a request with ``time_index=None`` (last logged
      time + 1: every logged interaction counts).
    template: the phase-3 template of ``config``.
    keywords: the keyword generator of ``config.keywords`` (None when off).
  """

  def __init__(
    self,
    world: world_source.WorldTables | str | os.PathLike,
    sid_table: SIDTable,
    vocabulary: vocab_lib.OneSearchVocabulary,
    config: museq.MuSeqConfig | None = None,
    inputs_length: int = 256,
  ):
    if inputs_length < 1:
      raise ValueError(f"SessionPrompter: inputs_length must be >= 1: {inputs_length}")
    if not isinstance(world, world_source.WorldTables):
      world = world_source.read_world(world)
    self.config = config or museq.MuSeqConfig()
    want = corpus.vocab_layout(sid_table, self.config)
    if vocabulary.layout != want:
      raise ValueError(
        f"SessionPrompter: vocabulary layout {vocabulary.layout} does not match "
        f"the SID table and config ({want}); use the tasks' own vocabulary"
      )
    self.table = sid_table
    self.vocabulary = vocabulary
    self.inputs_length = int(inputs_length)
    self.template = prompts.phase3_template(self.config)
    self.index = corpus.build_index(world, sid_table, self.config)
    # Serving prompts of a self-distilled model (keywords_in "teacher") are
    # the student's: no keyword segment, so no keywords are made.
    self.keywords = keyword_source.build_keyword_generator(
      self.config.keywords if self.config.keywords_in_prompt else "none",
      world.items,
      world.recall,
    )
    self.sessions: dict[str, museq.Session] = {}
    for s in self.index.sessions:
      if s.session_id in self.sessions:
        raise ValueError(f"{world.path}: session_id {s.session_id!r} is repeated")
      self.sessions[s.session_id] = s
    times = [s.time for s in self.index.sessions]
    self.end_time = (max(times) + 1) if times else 0

  # ------------------------------------------------------------ features

  def _session(self, session_id: str) -> museq.Session:
    try:
      return self.sessions[session_id]
    except KeyError:
      raise KeyError(f"SessionPrompter: unknown session_id {session_id!r}") from None

  def features(self, item: str | Request) -> museq.UserFeatures:
    """Mu-Seq features of a session id or a request."""
    if isinstance(item, Request):
      t = self.end_time if item.time_index is None else item.time_index
      return self.index.features(item.user_id, item.query, t, train_only=False)
    s = self._session(item)
    return self.index.features(
      s.user_id, s.query, s.time, train_only=s.split == tasks.TRAIN
    )

  def fields(self, item: str | Request) -> dict[str, Any]:
    """``prompts.phase3_fields`` of a session id or a request."""
    if isinstance(item, Request):
      user, query = item.user_id, item.query
    else:
      s = self._session(item)
      user, query = s.user_id, s.query
    features = self.features(item)
    kws = keyword_source.prompt_keywords(self.keywords, user, query, features)
    return prompts.phase3_fields(user, query, features, self.table, self.config, kws)

  def prompt_text(self, item: str | Request) -> str:
    """The rendered prompt of a session id or a request (before trimming)."""
    return prompts.render(self.template.inputs, self.fields(item))

  # ------------------------------------------------------------ batches

  def for_sessions(
    self, session_ids: Sequence[str], *, with_mask: bool = False
  ) -> dict[str, np.ndarray]:
    """Model inputs of logged sessions (a PARS ``prompt_fn``).

    Args:
      session_ids: B session ids of the world (train or test).
      with_mask: also return "long_seq_mask" [B, 9].

    Returns:
      The batch of the module docstring.
    """
    return self._batch([self.fields(str(s)) for s in session_ids], with_mask)

  def for_requests(
    self, requests: Sequence[Request], *, with_mask: bool = False
  ) -> dict[str, np.ndarray]:
    """Model inputs of requests, each as an eval example at its time.

    Args:
      requests: B requests.
      with_mask: also return "long_seq_mask" [B, 9].

    Returns:
      The batch of the module docstring.
    """
    for r in requests:
      if not isinstance(r, Request):
        raise TypeError(f"for_requests: expected Request, got {type(r).__name__}")
    return self._batch([self.fields(r) for r in requests], with_mask)

  def _batch(
    self, rows: list[dict[str, Any]], with_mask: bool
  ) -> dict[str, np.ndarray]:
    b, n = len(rows), self.inputs_length
    tokens = np.zeros((b, n), np.int32)
    for k, row in enumerate(rows):
      text = prompts.render(self.template.inputs, row)
      tokens[k] = trim_and_pad(self.vocabulary.encode(text), n)
    long_seq, mask = self._long_seq(rows)
    out = {"encoder_input_tokens": tokens, "long_seq_features": long_seq}
    if with_mask:
      out["long_seq_mask"] = mask
    return out

  @functools.cached_property
  def _long_seq_fn(self):
    """A tf.function (traced once) mapping ``preprocessors.long_seq_example``."""
    d, cfg = self.table.dim, self.config
    rows = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)
    out = (tf.TensorSpec([9, d], tf.float32), tf.TensorSpec([9], tf.int32))

    @tf.function(
      input_signature=[rows, rows, rows, tf.TensorSpec([None, 3, d], tf.float32)]
    )
    def fn(click, order, rsu, table):
      def one(i):
        ex = {"long_click": click[i], "long_order": order[i], "long_rsu": rsu[i]}
        return preprocessors.long_seq_example(
          ex, table, cfg.long_reduce, cfg.use_long_seq
        )

      return tf.map_fn(one, tf.range(click.nrows()), fn_output_signature=out)

    return fn

  def _long_seq(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """[B, 9, D] float32 and [B, 9] int32 (``preprocessors.long_seq_example``)."""
    b, d = len(rows), self.table.dim
    if b == 0:
      return np.zeros((0, 9, d), np.float32), np.zeros((0, 9), np.int32)
    # Only the batch's items go to TF: the gather + per-sequence sum see the
    # same vectors in the same order as with the whole table.
    flat, lengths = {}, {}
    for name in preprocessors.LONG_SEQ_FIELDS:
      seqs = [row[name] for row in rows]
      lengths[name] = np.asarray([len(x) for x in seqs], np.int64)
      flat[name] = np.fromiter(
        (i for x in seqs for i in x), np.int64, int(lengths[name].sum())
      )
    used, local = np.unique(np.concatenate(list(flat.values())), return_inverse=True)
    ragged, start = [], 0
    for name in preprocessors.LONG_SEQ_FIELDS:
      part = local[start : start + flat[name].size].astype(np.int32)
      start += flat[name].size
      ragged.append(tf.RaggedTensor.from_row_lengths(part, lengths[name]))
    centroids = self.table.item_centroids[used]
    if used.size == 0:
      centroids = np.zeros((1, 3, d), np.float32)
    with tf.device("/CPU:0"):  # the tf.data pipeline's device
      long_seq, mask = self._long_seq_fn(*ragged, tf.constant(centroids, tf.float32))
    return np.asarray(long_seq, np.float32), np.asarray(mask, np.int32)
