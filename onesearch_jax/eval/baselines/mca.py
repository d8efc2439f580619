"""A multi-stage cascade (MCA) baseline: recall -> a small learned ranker.

Recall: the union of the BM25 top-R and the dense top-R items of the
query. Rank: a logistic regression (``hidden=0``) or a
one-hidden-layer MLP in JAX over hand-made features, trained with Adam on
train-split impressions (label: clicked) and applied to the candidates; the
output is the candidates sorted by ranker score (ties: item row ascending).

Features (``FEATURES``), all from the train split:
  bm25          BM25 score of (query, item)
  dense         inner product of the KHQE query and item embeddings
  log_clicks    log1p(item train clicks)
  log_imps      log1p(item train impressions)
  ctr           (clicks + 1) / (impressions + 10), item train CTR, smoothed
  user_l2       share of the user's train clicks in the item's L2 category
  user_l3       same for the L3 category
  query_l3      share of the query's train clicks in the item's L3 category
  in_bm25 / in_dense  1 when the item is in that channel's top-R (candidates
                only; for train impressions: in the channel's top-R too)

For a train impression the statistics leave the session's own impressions
and clicks out (leave-session-out), so the ranker does not learn from its
own label. This mirrors the cascade OneSearch replaces (onlineMCA).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

FEATURES = (
  "bm25",
  "dense",
  "log_clicks",
  "log_imps",
  "ctr",
  "user_l2",
  "user_l3",
  "query_l3",
  "in_bm25",
  "in_dense",
)


@dataclasses.dataclass(frozen=True)
class MCAConfig:
  """Cascade settings.

  Attributes:
    recall_k: R, items taken from each recall channel.
    hidden: 0 = logistic regression; > 0 = MLP hidden width.
    steps: full-batch Adam steps.
    learning_rate: Adam learning rate.
    l2: weight decay on the weights.
    max_train_sessions: train sessions with a click sampled for training.
    recall_negatives: non-impressed recall candidates added per training
      session as negatives.
    seed: sampling / init seed.
    drop_features: names of ``FEATURES`` set to 0 for the ranker (in
      training and at ranking), for feature ablations
      (experiments/recipe/mca_features.py); () = every feature.
  """

  recall_k: int = 350
  hidden: int = 0
  steps: int = 300
  learning_rate: float = 0.05
  l2: float = 1e-4
  max_train_sessions: int = 8000
  recall_negatives: int = 20
  seed: int = 0
  drop_features: tuple[str, ...] = ()

  def __post_init__(self):
    unknown = [f for f in self.drop_features if f not in FEATURES]
    if unknown:
      raise ValueError(
        f"MCAConfig.drop_features: unknown feature(s) {unknown}; known {FEATURES}"
      )


@dataclasses.dataclass(frozen=True)
class Session:
  """One search session as the ranker sees it."""

  query: str
  user_id: str
  session_id: str
  impressed: tuple[int, ...]  # item rows
  clicked: tuple[int, ...]


class TrainStats:
  """Train-split counts behind the features (item rows index ``item_l2``)."""

  def __init__(
    self, sessions: Sequence[Session], item_l2: np.ndarray, item_l3: np.ndarray
  ):
    n = len(item_l2)
    self.item_l2 = np.asarray(item_l2, np.int64)
    self.item_l3 = np.asarray(item_l3, np.int64)
    self.imps = np.zeros(n, np.float64)
    self.clicks = np.zeros(n, np.float64)
    self.user_l2: dict[str, collections.Counter] = collections.defaultdict(
      collections.Counter
    )
    self.user_l3: dict[str, collections.Counter] = collections.defaultdict(
      collections.Counter
    )
    self.query_l3: dict[str, collections.Counter] = collections.defaultdict(
      collections.Counter
    )
    for s in sessions:
      np.add.at(self.imps, list(s.impressed), 1)
      np.add.at(self.clicks, list(s.clicked), 1)
      for i in s.clicked:
        self.user_l2[s.user_id][int(self.item_l2[i])] += 1
        self.user_l3[s.user_id][int(self.item_l3[i])] += 1
        self.query_l3[s.query][int(self.item_l3[i])] += 1
    # The counters as dense [categories] int64 vectors, made on first use.
    self._dense: dict[tuple[int, str], np.ndarray] = {}

  def _counts(self, source: dict, key: str, size: int) -> np.ndarray:
    """``source[key]`` (a Counter of category ids) as a dense int64 vector."""
    dense_key = (id(source), key)
    if dense_key not in self._dense:
      out = np.zeros(size, np.int64)
      counter = source[key]
      out[list(counter)] = list(counter.values())
      self._dense[dense_key] = out
    return self._dense[dense_key]

  def features(
    self,
    sessions: Sequence[Session],
    cand: np.ndarray,
    bm25: np.ndarray,
    dense: np.ndarray,
    in_bm25: np.ndarray,
    in_dense: np.ndarray,
    leave_out: bool,
  ) -> np.ndarray:
    """[E, C, F] features of candidate rows ``cand`` [E, C] (-1 pad -> 0)."""
    cand = np.asarray(cand, np.int64)
    safe = np.maximum(cand, 0)
    imps = self.imps[safe].copy()
    clicks = self.clicks[safe].copy()
    l2 = self.item_l2[safe]
    l3 = self.item_l3[safe]
    user_l2 = np.zeros(cand.shape)
    user_l3 = np.zeros(cand.shape)
    query_l3 = np.zeros(cand.shape)
    n2 = int(self.item_l2.max()) + 1 if self.item_l2.size else 1
    n3 = int(self.item_l3.max()) + 1 if self.item_l3.size else 1
    for e, s in enumerate(sessions):
      own2: collections.Counter = collections.Counter()
      own3: collections.Counter = collections.Counter()
      if leave_out:
        imp_set, clk_set = set(s.impressed), set(s.clicked)
        row = cand[e]
        imps[e] -= np.isin(row, list(imp_set))
        clicks[e] -= np.isin(row, list(clk_set))
        own2 = collections.Counter(int(self.item_l2[i]) for i in s.clicked)
        own3 = collections.Counter(int(self.item_l3[i]) for i in s.clicked)
      n_own = sum(own2.values())
      for source, key, out, cats, own, size in (
        (self.user_l2, s.user_id, user_l2, l2, own2, n2),
        (self.user_l3, s.user_id, user_l3, l3, own3, n3),
        (self.query_l3, s.query, query_l3, l3, own3, n3),
      ):
        table = source.get(key)
        if table is None:
          continue
        total = sum(table.values()) - n_own
        if total <= 0:
          continue
        # The group's clicks per candidate category, this session's left out
        # (integer counts, then one division: the per-candidate formula).
        num = self._counts(source, key, size)[cats[e]]
        if own:
          own_counts = np.zeros(size, np.int64)
          own_counts[list(own)] = list(own.values())
          num = num - own_counts[cats[e]]
        out[e] = num / total
    f = np.stack(
      [
        bm25,
        dense,
        np.log1p(np.maximum(clicks, 0)),
        np.log1p(np.maximum(imps, 0)),
        (np.maximum(clicks, 0) + 1.0) / (np.maximum(imps, 0) + 10.0),
        user_l2,
        user_l3,
        query_l3,
        in_bm25,
        in_dense,
      ],
      axis=-1,
    ).astype(np.float32)
    return np.where((cand >= 0)[..., None], f, 0.0)


def _init(key, n_features: int, hidden: int):
  if hidden == 0:
    return {"w": jnp.zeros((n_features,)), "b": jnp.zeros(())}
  k1, k2 = jax.random.split(key)
  return {
    "w1": jax.random.normal(k1, (n_features, hidden)) / np.sqrt(n_features),
    "b1": jnp.zeros((hidden,)),
    "w2": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden),
    "b": jnp.zeros(()),
  }


def _logits(params, x):
  if "w" in params:
    return x @ params["w"] + params["b"]
  h = jax.nn.relu(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b"]


@dataclasses.dataclass(frozen=True)
class Ranker:
  """A trained ranker: standardisation + parameters."""

  mean: np.ndarray
  std: np.ndarray
  params: dict
  losses: tuple[float, ...]  # train log loss per step

  def score(self, features: np.ndarray) -> np.ndarray:
    """Logits of [..., F] features (numpy: no compile per shape)."""
    x = (np.asarray(features, np.float32) - self.mean) / self.std
    p = self.params
    if "w" in p:
      return x @ p["w"] + p["b"]
    return np.maximum(x @ p["w1"] + p["b1"], 0.0) @ p["w2"] + p["b"]


def train_ranker(features: np.ndarray, labels: np.ndarray, config: MCAConfig) -> Ranker:
  """Fits the ranker by full-batch Adam on the mean log loss (+ l2).

  Args:
    features: [M, F] float32.
    labels: [M] {0, 1}.
    config: settings.
  """
  x = np.asarray(features, np.float32)
  y = np.asarray(labels, np.float32)
  if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
    raise ValueError(f"train_ranker: features {x.shape}, labels {y.shape}")
  mean = x.mean(axis=0)
  std = x.std(axis=0) + 1e-6
  xs = jnp.asarray((x - mean) / std)
  yj = jnp.asarray(y)
  params = _init(jax.random.key(config.seed), x.shape[1], config.hidden)
  opt = optax.adam(config.learning_rate)

  def loss_fn(p):
    z = _logits(p, xs)
    ll = optax.sigmoid_binary_cross_entropy(z, yj).mean()
    reg = sum(jnp.sum(v**2) for k, v in p.items() if k.startswith("w"))
    return ll + config.l2 * reg, ll

  @jax.jit
  def run(p):
    def step(carry, _):
      p, s = carry
      (_, ll), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
      upd, s = opt.update(g, s, p)
      return (optax.apply_updates(p, upd), s), ll

    (p, _), lls = jax.lax.scan(step, (p, opt.init(p)), None, length=config.steps)
    return p, lls

  params, lls = run(params)
  return Ranker(
    mean=mean,
    std=std,
    params=jax.tree.map(np.asarray, params),
    losses=tuple(float(v) for v in np.asarray(lls)),
  )


def union_candidates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise union of two [E, R] rankings (-1 pad), a's order then b's new
  items; [E, Ra + Rb] int32 (-1 pad)."""
  both = np.concatenate([a, b], axis=1).astype(np.int64)
  e, c = both.shape
  out = np.full((e, c), -1, np.int32)
  for i in range(e):
    row = both[i][both[i] >= 0]
    _, first = np.unique(row, return_index=True)
    keep = row[np.sort(first)]
    out[i, : len(keep)] = keep
  return out


def rank_candidates(
  ranker: Ranker, features: np.ndarray, cand: np.ndarray, k: int
) -> np.ndarray:
  """Sorts candidates by ranker score (ties: item row); [E, k] (-1 pad)."""
  z = ranker.score(features)
  z = np.where(cand >= 0, z, -np.inf)
  out = np.full((cand.shape[0], k), -1, np.int32)
  for i in range(cand.shape[0]):
    ok = np.flatnonzero(cand[i] >= 0)
    order = ok[np.lexsort((cand[i, ok], -z[i, ok]))][:k]
    out[i, : len(order)] = cand[i, order]
  return out


def channel_membership(cand: np.ndarray, channel: np.ndarray) -> np.ndarray:
  """[E, C] 1.0 where cand[e, c] is in channel[e] (-1 never)."""
  cand = np.asarray(cand, np.int64)
  channel = np.asarray(channel, np.int64)
  # One membership test over keys row * width + item (width > every item, so
  # keys of different rows never meet).
  width = max(int(cand.max(initial=-1)), int(channel.max(initial=-1))) + 2
  rows = np.arange(cand.shape[0], dtype=np.int64)[:, None] * width
  out = np.isin(rows + cand, (rows + channel)[channel >= 0])
  return np.where(cand >= 0, out, 0.0).astype(np.float32)


def pair_scores(
  score_rows: Callable[[Sequence[str]], np.ndarray],
  queries: Sequence[str],
  cand: np.ndarray,
  chunk: int = 256,
) -> np.ndarray:
  """Scores [E, C] of each row's candidates from a per-query full score
  function ``score_rows(distinct queries) -> [Q, N]`` (-1 pad -> 0)."""
  out = np.zeros(cand.shape, np.float32)
  by_query = collections.defaultdict(list)
  for i, q in enumerate(queries):
    by_query[q].append(i)
  distinct = sorted(by_query)
  safe = np.maximum(cand, 0)
  for start in range(0, len(distinct), chunk):
    block = distinct[start : start + chunk]
    full = score_rows(block)
    for j, q in enumerate(block):
      idx = by_query[q]
      out[idx] = full[j][safe[idx]]
  return np.where(cand >= 0, out, 0.0)


def sample_training_sessions(
  train_sessions: Sequence[Session], config: MCAConfig
) -> list[Session]:
  """Up to ``config.max_train_sessions`` train sessions with impressions and
  a click, sampled without replacement (seeded), in input order."""
  pool = [s for s in train_sessions if s.clicked and s.impressed]
  if len(pool) > config.max_train_sessions:
    rng = np.random.default_rng(config.seed)
    pick = rng.choice(len(pool), config.max_train_sessions, replace=False)
    pool = [pool[i] for i in np.sort(pick)]
  return pool


@dataclasses.dataclass
class Cascade:
  """The MCA cascade over a BM25 and a dense retriever.

  Attributes:
    bm25: a ``bm25.BM25Retriever``.
    dense: a ``dense.DenseRetriever``.
    embed_queries: texts -> [E, D] query embeddings (dense's space).
    stats: train-split statistics.
    config: settings.
    ranker: set by ``fit``.
  """

  bm25: object
  dense: object
  embed_queries: Callable[[Sequence[str]], np.ndarray]
  stats: TrainStats
  config: MCAConfig
  ranker: Ranker | None = None

  def _bm25_full(self, queries: Sequence[str]) -> np.ndarray:
    return np.stack([self.bm25.scores(q) for q in queries])

  def _features(self, sessions, cand, leave_out: bool, qemb=None, channels=None):
    queries = [s.query for s in sessions]
    r = self.config.recall_k
    if qemb is None:
      qemb = self.embed_queries(queries)
    if channels is None:
      channels = (self.bm25.search(queries, r)[0], self.dense.search(qemb, r)[0])
    b_rows, d_rows = channels
    feats = self.stats.features(
      sessions,
      cand,
      pair_scores(self._bm25_full, queries, cand),
      self.dense.scores_of(qemb, cand),
      channel_membership(cand, b_rows),
      channel_membership(cand, d_rows),
      leave_out=leave_out,
    )
    for name in self.config.drop_features:
      feats[..., FEATURES.index(name)] = 0.0
    return feats

  def sample_training_sessions(
    self, train_sessions: Sequence[Session]
  ) -> list[Session]:
    return sample_training_sessions(train_sessions, self.config)

  def training_data(self, train_sessions: Sequence[Session]):
    """(features [M, F], labels [M]) of up to ``max_train_sessions`` sampled
    train sessions with a click: their impressions (label: clicked) plus
    ``recall_negatives`` non-impressed items of each session's recall union
    (label 0), so the ranker also sees the candidates it must reject."""
    pool = self.sample_training_sessions(train_sessions)
    rng = np.random.default_rng(self.config.seed + 1)
    if not pool:
      raise ValueError("MCA: no train session with impressions and a click")
    queries = [s.query for s in pool]
    qemb = self.embed_queries(queries)
    r = self.config.recall_k
    channels = (self.bm25.search(queries, r)[0], self.dense.search(qemb, r)[0])
    union = union_candidates(*channels)
    n_neg = self.config.recall_negatives
    width = max(len(s.impressed) for s in pool) + n_neg
    cand = np.full((len(pool), width), -1, np.int32)
    lab = np.zeros((len(pool), width), np.float32)
    for i, s in enumerate(pool):
      cand[i, : len(s.impressed)] = s.impressed
      lab[i] = np.isin(cand[i], list(s.clicked)) & (cand[i] >= 0)
      extra = union[i][(union[i] >= 0) & ~np.isin(union[i], list(s.impressed))]
      if len(extra) > n_neg:
        extra = rng.choice(extra, n_neg, replace=False)
      cand[i, len(s.impressed) : len(s.impressed) + len(extra)] = extra
    feats = self._features(pool, cand, leave_out=True, qemb=qemb, channels=channels)
    ok = cand >= 0
    return feats[ok], lab[ok]

  def fit(self, train_sessions: Sequence[Session]) -> Ranker:
    x, y = self.training_data(train_sessions)
    self.ranker = train_ranker(x, y, self.config)
    return self.ranker

  def impression_scores(
    self, sessions: Sequence[Session], chunk: int = 512
  ) -> tuple[np.ndarray, np.ndarray]:
    """Ranker logits of every impression of ``sessions`` (test sessions: the
    features use the full train statistics, no leave-out) and their click
    labels; ([M], [M]) in session then display order."""
    if self.ranker is None:
      raise ValueError("Cascade.impression_scores: call fit first")
    scores, labels = [], []
    for start in range(0, len(sessions), chunk):
      part = [s for s in sessions[start : start + chunk] if s.impressed]
      if not part:
        continue
      width = max(len(s.impressed) for s in part)
      cand = np.full((len(part), width), -1, np.int32)
      for i, s in enumerate(part):
        cand[i, : len(s.impressed)] = s.impressed
      z = self.ranker.score(self._features(part, cand, leave_out=False))
      ok = cand >= 0
      scores.append(z[ok])
      labels.append(
        np.stack([np.isin(cand[i], list(s.clicked)) for i, s in enumerate(part)])[ok]
      )
    if not scores:
      return np.zeros(0, np.float32), np.zeros(0, bool)
    return np.concatenate(scores), np.concatenate(labels)

  def rank(self, sessions: Sequence[Session], k: int, chunk: int = 512) -> np.ndarray:
    """[E, k] item rows: recall union, then the ranker's order."""
    if self.ranker is None:
      raise ValueError("Cascade.rank: call fit first")
    out = np.full((len(sessions), k), -1, np.int32)
    r = self.config.recall_k
    for start in range(0, len(sessions), chunk):
      part = list(sessions[start : start + chunk])
      queries = [s.query for s in part]
      qemb = self.embed_queries(queries)
      b_rows, _ = self.bm25.search(queries, r)
      d_rows, _ = self.dense.search(qemb, r)
      cand = union_candidates(b_rows, d_rows)
      feats = self._features(
        part, cand, leave_out=False, qemb=qemb, channels=(b_rows, d_rows)
      )
      out[start : start + len(part)] = rank_candidates(self.ranker, feats, cand, k)
    return out
