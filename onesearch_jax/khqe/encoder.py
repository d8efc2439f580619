"""Aligned query/item text encoder trained on collaborative signals (SPEC §2.1).

OneSearch embeds queries and items with a distilled BGE model aligned by
    L = λ1·L_q2q + λ2·L_i2i + λ3·L_q2i + λ4·L_rank (+ λ5·L_rel).
This is a small stand-in that trains from scratch in seconds on CPU:

  * model: sentencepiece token embeddings, a learnt per-token importance
    (a soft IDF) for the weighted mean pool, then a residual GELU MLP and an
    L2 normalisation. Queries and items share the encoder, so both live in one
    space (the quantiser clusters them jointly);
  * L_q2i: symmetric in-batch InfoNCE over clicked (query, item) pairs;
  * L_q2q / L_i2i: the same over co-clicked pairs (two queries that clicked
    one item; two items clicked under one query);
  * L_rank: pairwise softplus on score(q, better) - score(q, worse) with a
    margin, over order > click and click > shown-not-clicked;
  * L_rel (LLM relevance correction) is not implemented: the paper does not
    define it (SPEC §10.1).

In-batch negatives that are in fact positives (a row whose query or item is
repeated elsewhere in the batch) are masked out of the softmax.

Public arrays are numpy; JAX is used inside.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from onesearch_jax.khqe import deterministic_npz, text_vocab

LogFn = Callable[[int, Mapping[str, float]], None]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Shape of the text encoder."""

  dim: int = 64  # D, the output embedding size
  hidden_dim: int = 128  # width of the residual MLP
  max_len: int = 32  # L, sentencepiece ids kept per text


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """λ of each collaborative loss (the paper does not publish its values)."""

  q2i: float = 1.0  # clicked (query, item) InfoNCE
  q2q: float = 0.5  # queries sharing a clicked item
  i2i: float = 0.5  # items clicked under the same query
  rank: float = 0.5  # order > click > shown-not-clicked


@dataclasses.dataclass(frozen=True)
class EncoderTrainConfig:
  """Optimisation of the aligned encoder."""

  steps: int = 400  # optimiser steps
  batch_size: int = 256  # pairs per loss per step
  learning_rate: float = 3e-3  # AdamW peak learning rate
  warmup_steps: int = 20  # linear warm-up, then cosine decay
  weight_decay: float = 1e-4  # AdamW decoupled weight decay
  temperature: float = 0.05  # InfoNCE temperature
  rank_margin: float = 0.05  # required score gap for L_rank
  rank_scale: float = 20.0  # softplus sharpness for L_rank
  weights: LossWeights = LossWeights()  # λ of each loss
  pairs_per_key: int = 20  # cap on co-click pairs built per shared item/query
  log_every: int = 50  # log_fn period (steps)
  seed: int = 0  # init, batch sampling and pair building


@dataclasses.dataclass(frozen=True)
class CollabPairs:
  """Index pairs mined from the logs (indices into the query / item lists).

  Attributes:
    q2i: [P1, 2] int32 (query, clicked item), one row per click.
    q2q: [P2, 2] int32 (query, query) sharing a clicked item.
    i2i: [P3, 2] int32 (item, item) clicked under the same query.
    rank: [P4, 3] int32 (query, better item, worse item).
    skipped: counts of log entries not used, by reason.
  """

  q2i: np.ndarray
  q2q: np.ndarray
  i2i: np.ndarray
  rank: np.ndarray
  skipped: Mapping[str, int]


def _pairs(rows: list[tuple[int, ...]], width: int) -> np.ndarray:
  if not rows:
    return np.zeros((0, width), np.int32)
  return np.asarray(rows, np.int32)


def _co_pairs(
  groups: Mapping[Any, Sequence[int]], per_key: int, rng: random.Random
) -> list[tuple[int, int]]:
  """Pairs of distinct members of each group, at most `per_key` per group."""
  out = []
  for key in sorted(groups):
    members = sorted(set(groups[key]))
    if len(members) < 2:
      continue
    for _ in range(min(per_key, len(members) * (len(members) - 1) // 2)):
      a, b = rng.sample(members, 2)
      out.append((a, b))
  return out


def collab_pairs(
  sessions: Sequence[Mapping[str, Any]],
  query_index: Mapping[str, int],
  item_index: Mapping[str, int],
  *,
  seed: int = 0,
  pairs_per_key: int = 20,
  split: str = "train",
) -> CollabPairs:
  """Builds the training pairs of the collaborative losses from recall sessions.

  Args:
    sessions: recall.jsonl rows (query, impressed/clicked/purchased item ids,
      split).
    query_index: query text -> row of the query list.
    item_index: item id -> row of the item list.
    seed: seed of the pair sampling.
    pairs_per_key: cap on co-click pairs per shared item (q2q) / query (i2i).
    split: only sessions of this split are used (the test day is held out).

  Returns:
    The CollabPairs; unknown queries / items are counted in `skipped`.
  """
  rng = random.Random(seed)
  skipped: dict[str, int] = defaultdict(int)
  q2i, rank = [], []
  queries_of_item: dict[int, list[int]] = defaultdict(list)
  items_of_query: dict[int, list[int]] = defaultdict(list)

  def known(ids):
    out = []
    for i in ids:
      j = item_index.get(i)
      if j is None:
        skipped["unknown_item"] += 1
      else:
        out.append(j)
    return out

  for s in sessions:
    if s.get("split") != split:
      continue
    q = query_index.get(s["query"])
    if q is None:
      skipped["unknown_query"] += 1
      continue
    shown = known(s["impressed_item_ids"])
    clicked = known(s["clicked_item_ids"])
    ordered = known(s["purchased_item_ids"])
    clicked_set, ordered_set = set(clicked), set(ordered)
    not_clicked = [i for i in shown if i not in clicked_set]
    clicked_only = [i for i in clicked if i not in ordered_set]
    for i in clicked:
      q2i.append((q, i))
      queries_of_item[i].append(q)
      items_of_query[q].append(i)
      if not_clicked:
        rank.append((q, i, rng.choice(not_clicked)))
    for i in ordered:
      worse = clicked_only or not_clicked
      if worse:
        rank.append((q, i, rng.choice(worse)))
  return CollabPairs(
    q2i=_pairs(q2i, 2),
    q2q=_pairs(_co_pairs(queries_of_item, pairs_per_key, rng), 2),
    i2i=_pairs(_co_pairs(items_of_query, pairs_per_key, rng), 2),
    rank=_pairs(rank, 3),
    skipped=dict(skipped),
  )


def _l2norm(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class TextEncoder(nnx.Module):
  """Token embeddings -> importance-weighted mean pool -> residual MLP -> L2."""

  def __init__(self, vocab_size: int, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, config.dim, rngs=rngs)
    self.importance = nnx.Embed(
      vocab_size, 1, embedding_init=nnx.initializers.zeros, rngs=rngs
    )
    self.hidden = nnx.Linear(config.dim, config.hidden_dim, rngs=rngs)
    self.out = nnx.Linear(config.hidden_dim, config.dim, rngs=rngs)

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Encodes token ids.

    Args:
      ids: [B, L] int32, padded with text_vocab.PAD_ID.

    Returns:
      [B, D] float32, L2-normalised (an all-padding row gives a zero-input
      vector that is still normalised).
    """
    mask = (ids != text_vocab.PAD_ID).astype(jnp.float32)  # [B, L]
    weight = jnp.exp(self.importance(ids)[..., 0]) * mask  # [B, L]
    pooled = jnp.einsum("bl,bld->bd", weight, self.embed(ids))
    pooled = pooled / jnp.maximum(weight.sum(-1, keepdims=True), 1e-6)
    x = pooled + self.out(jax.nn.gelu(self.hidden(pooled)))
    return _l2norm(x)


def _info_nce(
  a: jax.Array, b: jax.Array, a_idx: jax.Array, b_idx: jax.Array, tau: float
) -> jax.Array:
  """Symmetric in-batch InfoNCE; [B, D] x [B, D] -> scalar."""
  logits = a @ b.T / tau  # [B, B]
  eye = jnp.eye(a.shape[0], dtype=bool)
  dup = (a_idx[:, None] == a_idx[None, :]) | (b_idx[:, None] == b_idx[None, :])
  logits = jnp.where(dup & ~eye, -1e9, logits)
  labels = jnp.arange(a.shape[0])
  row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  col = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
  return 0.5 * (row.mean() + col.mean())


def _losses(
  model: TextEncoder,
  q_tok: jax.Array,
  i_tok: jax.Array,
  batch: Mapping[str, jax.Array],
  cfg: EncoderTrainConfig,
) -> dict[str, jax.Array]:
  q2i, q2q, i2i, rank = batch["q2i"], batch["q2q"], batch["i2i"], batch["rank"]
  tau = cfg.temperature
  out = {
    "q2i": _info_nce(
      model(q_tok[q2i[:, 0]]), model(i_tok[q2i[:, 1]]), q2i[:, 0], q2i[:, 1], tau
    ),
    "q2q": _info_nce(
      model(q_tok[q2q[:, 0]]), model(q_tok[q2q[:, 1]]), q2q[:, 0], q2q[:, 1], tau
    ),
    "i2i": _info_nce(
      model(i_tok[i2i[:, 0]]), model(i_tok[i2i[:, 1]]), i2i[:, 0], i2i[:, 1], tau
    ),
  }
  q = model(q_tok[rank[:, 0]])
  hi = jnp.sum(q * model(i_tok[rank[:, 1]]), -1)
  lo = jnp.sum(q * model(i_tok[rank[:, 2]]), -1)
  out["rank"] = jnp.mean(jax.nn.softplus(cfg.rank_scale * (lo - hi + cfg.rank_margin)))
  return out


@dataclasses.dataclass
class TrainedEncoder:
  """A trained encoder with its vocabulary; embeds any text.

  Attributes:
    vocab: the TextVocab.
    config: the EncoderConfig.
    model: the NNX TextEncoder.
    history: one dict of losses per logged step.
  """

  vocab: text_vocab.TextVocab
  config: EncoderConfig
  model: TextEncoder
  history: list[dict[str, float]]

  def embed(self, texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
    """L2-normalised embeddings of texts, [N, D] float32."""
    ids, _ = self.vocab.encode_batch(texts, self.config.max_len)
    return embed_ids(self.model, ids, batch_size)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, params: nnx.State, chunk: jax.Array) -> jax.Array:
  """The encoder on one [B, L] chunk -> [B, D]. Module-level, so calls with
  the same model structure and chunk shape share one compiled program."""
  return nnx.merge(graphdef, params)(chunk)


def embed_ids(
  model: TextEncoder, ids: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
  """Runs the encoder over [N, L] ids in fixed-size chunks; returns [N, D].

  Every chunk is ``min(batch_size, N)`` rows (the last one padded), and the
  compiled forward is shared across calls: embedding a stream block by
  block (``stream_build``) compiles once for the ``batch_size`` chunk, plus
  once per distinct N below ``batch_size`` (a short last block).
  """
  graphdef, params = nnx.split(model)
  n = ids.shape[0]
  dim = model.embed.features
  if n == 0:
    return np.zeros((0, dim), np.float32)
  size = min(batch_size, n)
  out = []
  for start in range(0, n, size):
    chunk = ids[start : start + size]
    pad = size - chunk.shape[0]  # keep one compiled shape
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, ids.shape[1]), ids.dtype)])
    out.append(np.asarray(_forward(graphdef, params, jnp.asarray(chunk)))[: size - pad])
  return np.concatenate(out).astype(np.float32)


def _sample(rng: np.random.Generator, pairs: np.ndarray, b: int) -> np.ndarray:
  if pairs.shape[0] == 0:
    return np.zeros((b, pairs.shape[1]), np.int32)
  return pairs[rng.integers(0, pairs.shape[0], size=b)]


def train_encoder(
  vocab: text_vocab.TextVocab,
  query_texts: Sequence[str],
  item_texts: Sequence[str],
  pairs: CollabPairs,
  config: EncoderConfig = EncoderConfig(),
  train_config: EncoderTrainConfig = EncoderTrainConfig(),
  *,
  log_fn: LogFn | None = None,
) -> TrainedEncoder:
  """Trains the aligned encoder with the collaborative losses.

  Args:
    vocab: the sentencepiece vocabulary.
    query_texts: Nq query strings (indexed by the pairs).
    item_texts: Ni item texts (indexed by the pairs).
    pairs: the CollabPairs; a loss with no pairs is switched off.
    config: encoder shape.
    train_config: optimisation settings and loss weights.
    log_fn: called as log_fn(step, {"loss", "q2i", ..., "seconds"}) every
      `log_every` steps and at the last step.

  Returns:
    The TrainedEncoder (its `history` holds the logged losses).

  Raises:
    ValueError: when there are no clicked (query, item) pairs at all.
  """
  cfg = train_config
  if pairs.q2i.shape[0] == 0:
    raise ValueError("train_encoder: no clicked (query, item) pair to train on")
  w = cfg.weights
  weights = {
    "q2i": w.q2i,
    "q2q": w.q2q if pairs.q2q.shape[0] else 0.0,
    "i2i": w.i2i if pairs.i2i.shape[0] else 0.0,
    "rank": w.rank if pairs.rank.shape[0] else 0.0,
  }
  q_tok = jnp.asarray(vocab.encode_batch(query_texts, config.max_len)[0])
  i_tok = jnp.asarray(vocab.encode_batch(item_texts, config.max_len)[0])
  model = TextEncoder(vocab.vocab_size, config, rngs=nnx.Rngs(cfg.seed))
  graphdef, params = nnx.split(model)
  warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))  # cosine needs >= 1 step
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, cfg.learning_rate, warmup, max(cfg.steps, 1)
  )
  tx = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  opt_state = tx.init(params)

  def step(params, opt_state, batch):
    def loss_fn(params):
      parts = _losses(nnx.merge(graphdef, params), q_tok, i_tok, batch, cfg)
      total = sum(weights[k] * v for k, v in parts.items())
      return total, parts

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss, **parts}

  step = jax.jit(step, donate_argnums=(0, 1))
  rng = np.random.default_rng(cfg.seed)
  history: list[dict[str, float]] = []
  start = time.perf_counter()
  b = cfg.batch_size
  for i in range(1, cfg.steps + 1):
    batch = {
      "q2i": _sample(rng, pairs.q2i, b),
      "q2q": _sample(rng, pairs.q2q, b),
      "i2i": _sample(rng, pairs.i2i, b),
      "rank": _sample(rng, pairs.rank, b),
    }
    params, opt_state, metrics = step(params, opt_state, batch)
    if i % cfg.log_every == 0 or i == cfg.steps or i == 1:
      logged = {k: float(v) for k, v in metrics.items()}
      logged["seconds"] = time.perf_counter() - start
      history.append({"step": float(i), **logged})
      if log_fn is not None:
        log_fn(i, logged)
  return TrainedEncoder(
    vocab=vocab, config=config, model=nnx.merge(graphdef, params), history=history
  )


ENCODER_FILES = ("spm.model", "encoder_config.json", "params.npz")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(_flatten(v, key + "/"))
    else:
      out[key] = np.asarray(v)
  return out


def save_encoder(trained: TrainedEncoder, directory: str | os.PathLike) -> None:
  """Writes the vocabulary, config and parameters (ENCODER_FILES) to a folder."""
  out = pathlib.Path(directory)
  out.mkdir(parents=True, exist_ok=True)
  trained.vocab.save(out / "spm.model")
  (out / "encoder_config.json").write_text(
    json.dumps(dataclasses.asdict(trained.config), indent=1, sort_keys=True) + "\n"
  )
  params = _flatten(nnx.to_pure_dict(nnx.state(trained.model)))
  deterministic_npz.save_npz(out / "params.npz", params)


def load_encoder(directory: str | os.PathLike) -> TrainedEncoder:
  """Reads a folder written by `save_encoder` (history is not kept).

  Raises:
    FileNotFoundError: a missing file, named.
    ValueError: parameters whose names or shapes do not fit the config.
  """
  root = pathlib.Path(directory)
  for name in ENCODER_FILES:
    if not (root / name).is_file():
      raise FileNotFoundError(f"{root / name}: missing (not an encoder folder)")
  vocab = text_vocab.TextVocab.load(root / "spm.model")
  config = EncoderConfig(**json.loads((root / "encoder_config.json").read_text()))
  model = TextEncoder(vocab.vocab_size, config, rngs=nnx.Rngs(0))
  state = nnx.state(model)
  want = _flatten(nnx.to_pure_dict(state))
  with np.load(root / "params.npz") as z:
    got = {k: z[k] for k in z.files}
  if set(got) != set(want):
    raise ValueError(
      f"{root / 'params.npz'}: parameters {sorted(got)} but the config needs "
      f"{sorted(want)}"
    )
  for k, v in want.items():
    if got[k].shape != v.shape:
      raise ValueError(
        f"{root / 'params.npz'}: '{k}' has shape {got[k].shape}, expected {v.shape}"
      )
  pure = nnx.to_pure_dict(state)

  def fill(tree, prefix=""):
    for k in tree:
      if isinstance(tree[k], Mapping):
        fill(tree[k], f"{prefix}{k}/")
      else:
        tree[k] = jnp.asarray(got[f"{prefix}{k}"])

  fill(pure)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return TrainedEncoder(vocab=vocab, config=config, model=model, history=[])
