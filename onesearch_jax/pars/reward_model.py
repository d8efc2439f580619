"""Three-tower reward model (CTR, CVR, CTCVR) and R_score (SPEC §4.2).

Architecture (small, SIM-flavoured; the paper gives no details):

  item / seq items : per-position SID code embeddings (shared table), concat
                     over the C positions -> Linear -> E
  query            : query SID code embeddings -> Linear -> E, plus the mean
                     of hashed word embeddings
  user             : behaviour uid (2C codes) -> Linear -> E (0 if none),
                     plus a hashed user-id embedding, gender and age embeddings
  sequence         : target attention of the candidate over the short
                     sequence (softmax(seq·item/√E), masked) and a masked mean
  shared bottom    : MLP over [item, query, user, profile, att, mean,
                     item⊙query, item⊙att, item⊙user, match, stats] -> H
  statistics       : the train-split statistics of the pair (rm_stats.py:
                     item CTR / CVR, user-category / brand / style / price
                     affinity, query-category and query-item click shares),
                     into the bottom and a wide linear logit per head
  towers           : three MLP heads -> logits of CTR (click | shown),
                     CVR (order | click), CTCVR (order | shown)
  position bias    : a learned scalar per display position added to the CTR
                     and CTCVR logits in training only (position 0 = unknown
                     = no bias), so scores of generated candidates are
                     position-free
  prefix match     : 3 indicators "query SID and item SID agree on RQ levels
                     1..k" (one shared codebook), fed to the bottom and the
                     relevance tower
  relevance tower  : [item, query, item⊙query, match] -> 4 grade logits, on
                     the relevance labels; S_rel = E[grade] / 3

Losses: BCE(CTR, click) and BCE(CTCVR, order) over all shown items,
BCE(CVR, order) over clicked items only, plus cross-entropy of the grade.

R_score = λ1·CTR + λ2·CVR + λ3·CTCVR + 10·λ4·S_rel with the probabilities;
S_rel is the label grade / 3 where the (query, item) pair is labelled, else
the relevance tower's expected grade / 3.

Training and the test metrics are in pars/reward_training.py.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.pars.rm_features import RelevanceRows, RMContext

HEADS = ("ctr", "cvr", "ctcvr")


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
  """Sizes and training of the reward model."""

  embed_dim: int = 16  # E
  hidden: int = 64  # shared bottom width H
  tower_hidden: int = 32  # per-head hidden width
  max_position: int = 20  # display positions with their own bias
  learning_rate: float = 3e-3
  weight_decay: float = 1e-5
  batch_size: int = 512  # impressions per step
  rel_batch_size: int = 128  # relevance rows per step
  rel_weight: float = 1.0  # weight of the relevance loss
  # Unshown negatives per step (click = order = 0, no position): items of a
  # train session's category it did not show, and random items, so the
  # heads also judge candidates no engine showed (generated SIDs are mostly
  # such items); 0 = impressions only.
  unshown_negatives: int = 128
  num_steps: int = 600  # the main job's (configs.pars_config rm_steps)
  eval_batch: int = 8192  # rows per jitted predict call
  seed: int = 0

  def __post_init__(self):
    if min(self.embed_dim, self.hidden, self.tower_hidden, self.batch_size) < 1:
      raise ValueError(f"RewardModelConfig sizes must be >= 1: {self}")
    if self.num_steps < 1 or self.learning_rate <= 0:
      raise ValueError("num_steps must be >= 1 and learning_rate > 0")


@dataclasses.dataclass(frozen=True)
class RScoreConfig:
  """R_score = λ1·CTR + λ2·CVR + λ3·CTCVR + 10·λ4·S_rel (λ not in the paper),
  and the weight of the generator's log-probability where candidates the
  generator proposed are ordered (re-rank, phase-1 lists):
  key = R_score + gen_weight · log π(SID | prompt).

  Chosen on the validation day (docs/PARS.md, "Choosing R_score"): CTR +
  CTCVR with gen_weight 0.1. The pure R_score order (gen_weight 0) of the
  beam halved click HR@10 there, whatever the λ: the heads judge the user's
  taste, the generator's probability carries the query match.
  """

  lambda_ctr: float = 1.0
  lambda_cvr: float = 0.0
  lambda_ctcvr: float = 1.0
  lambda_rel: float = 0.0  # x10 inside the formula
  gen_weight: float = 0.1
  # "linear": R_score as above; "log": log(R_score), so that with gen_weight
  # 1 the key is log(R_score · π): the generator's distribution multiplied
  # by the heads' probability (λ = (1, 0, 0, 0): π · CTR).
  form: str = "linear"

  def __post_init__(self):
    if self.form not in ("linear", "log"):
      raise ValueError(f"RScoreConfig.form must be 'linear' or 'log': {self.form!r}")


def r_score(ctr, cvr, ctcvr, s_rel, cfg: RScoreConfig):
  """The paper's combination (numpy arrays, any shape); its log for
  ``cfg.form == "log"`` (floored at log 1e-9)."""
  r = (
    cfg.lambda_ctr * ctr
    + cfg.lambda_cvr * cvr
    + cfg.lambda_ctcvr * ctcvr
    + 10.0 * cfg.lambda_rel * s_rel
  )
  if cfg.form == "log":
    return np.log(np.maximum(r, 1e-9))
  return r


def _offsets(ranges) -> np.ndarray:
  return np.concatenate([[0], np.cumsum(ranges)[:-1]]).astype(np.int32)


class _MLP(nnx.Module):
  def __init__(self, sizes, *, rngs: nnx.Rngs):
    self.layers = nnx.List(
      [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    )

  def __call__(self, x):
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = jax.nn.relu(x)
    return x


class RewardModel(nnx.Module):
  """Flax NNX three-tower reward model (see the module docstring).

  Args:
    cfg: sizes.
    code_ranges: [C] exclusive SID code bounds per position.
    n_genders, n_ages: profile vocabularies.
    word_buckets, user_buckets: hashed vocabularies.
  """

  def __init__(
    self,
    cfg: RewardModelConfig,
    code_ranges,
    n_genders: int,
    n_ages: int,
    word_buckets: int,
    user_buckets: int,
    n_stats: int = 0,
    *,
    rngs: nnx.Rngs,
  ):
    e = cfg.embed_dim
    c = len(code_ranges)
    self.code_width = c
    self.offsets = nnx.Variable(jnp.asarray(_offsets(code_ranges)))
    total = int(sum(code_ranges))
    self.item_embed = nnx.Embed(total, e, rngs=rngs)
    self.query_embed = nnx.Embed(total, e, rngs=rngs)
    self.uid_embed = nnx.Embed(total, e, rngs=rngs)
    self.item_proj = nnx.Linear(c * e, e, rngs=rngs)
    self.query_proj = nnx.Linear(c * e, e, rngs=rngs)
    self.uid_proj = nnx.Linear(2 * c * e, e, rngs=rngs)
    self.word_embed = nnx.Embed(word_buckets, e, rngs=rngs)
    self.user_embed = nnx.Embed(user_buckets, e, rngs=rngs)
    self.gender_embed = nnx.Embed(max(n_genders, 1), e, rngs=rngs)
    self.age_embed = nnx.Embed(max(n_ages, 1), e, rngs=rngs)
    self.n_stats = n_stats
    self.bottom = _MLP((9 * e + 3 + n_stats, cfg.hidden, cfg.hidden), rngs=rngs)
    # Wide part: a linear logit per head straight from the statistics.
    self.stats_wide = nnx.Linear(max(n_stats, 1), len(HEADS), rngs=rngs)
    self.towers = nnx.List(
      [_MLP((cfg.hidden, cfg.tower_hidden, 1), rngs=rngs) for _ in HEADS]
    )
    self.rel_tower = _MLP((3 * e + 3, cfg.tower_hidden, 4), rngs=rngs)
    self.position_bias = nnx.Param(jnp.zeros((cfg.max_position + 1,), jnp.float32))
    self.max_position = cfg.max_position
    self.scale = float(e) ** -0.5

  def _codes(self, table, proj, codes):
    """codes [..., C'] (C' a multiple of C) -> [..., E]."""
    c = self.code_width
    off = jnp.tile(self.offsets[...], codes.shape[-1] // c)
    x = table(codes + off)  # [..., C', E]
    return proj(x.reshape(codes.shape[:-1] + (-1,)))

  def item_vectors(self, codes):
    return self._codes(self.item_embed, self.item_proj, codes)

  def query_vectors(self, codes, valid, words):
    """codes [B, C], valid [B], words [B, Lq] -> [B, E]."""
    q = self._codes(self.query_embed, self.query_proj, codes) * valid[:, None]
    wmask = (words > 0).astype(jnp.float32)
    w = self.word_embed(words) * wmask[..., None]
    return q + w.sum(1) / jnp.maximum(wmask.sum(1, keepdims=True), 1.0)

  @staticmethod
  def prefix_match(query_codes, query_valid, item_codes):
    """[B, 3] 1.0 where the query SID and the item SID share the RQ prefix
    up to level 1, 2, 3 (queries and items share one codebook, SPEC §2.3)."""
    eq = (query_codes[..., :3] == item_codes[..., :3]).astype(jnp.float32)
    return jnp.cumprod(eq, axis=-1) * query_valid[..., None]

  def relevance_logits(self, query_codes, query_valid, query_words, item_codes):
    """[B, 4] grade logits of (query, item) pairs."""
    q = self.query_vectors(query_codes, query_valid, query_words)
    i = self.item_vectors(item_codes)
    m = self.prefix_match(query_codes, query_valid, item_codes)
    return self.rel_tower(jnp.concatenate([i, q, i * q, m], -1))

  def __call__(self, f: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Head logits of (context, item) rows.

    Args:
      f: per-row arrays: the RMContext.arrays() fields gathered per row, plus
        'item' [B, C] codes, 'stats' [B, F] (rm_stats features, when the
        model has n_stats > 0) and optional 'position' [B] (0 = unknown).

    Returns:
      {'ctr', 'cvr', 'ctcvr'}: [B] logits (position bias included when
      'position' is given).
    """
    item = self.item_vectors(f["item"])
    query = self.query_vectors(f["query_codes"], f["query_valid"], f["query_words"])
    user = (
      self._codes(self.uid_embed, self.uid_proj, f["uid"]) * f["uid_valid"][:, None]
    )
    user = user + self.user_embed(f["user_hash"])
    profile = self.gender_embed(f["gender"]) + self.age_embed(f["age"])
    seq = self.item_vectors(f["seq"])  # [B, W, E]
    mask = f["seq_mask"]
    att = jnp.einsum("bwe,be->bw", seq, item) * self.scale
    att = jnp.where(mask > 0, att, -1e9)
    p = jax.nn.softmax(att, -1) * (mask.sum(-1, keepdims=True) > 0)
    attended = jnp.einsum("bw,bwe->be", p, seq)
    mean = (seq * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    parts = [item, query, user, profile, attended, mean, item * query, item * attended,
             item * user, self.prefix_match(f["query_codes"], f["query_valid"], f["item"])]  # fmt: skip
    if self.n_stats:
      parts.append(f["stats"])
    h = jax.nn.relu(self.bottom(jnp.concatenate(parts, -1)))
    out = {
      name: tower(h)[..., 0] for name, tower in zip(HEADS, self.towers, strict=True)
    }
    if self.n_stats:
      wide = self.stats_wide(f["stats"])
      out = {name: out[name] + wide[..., j] for j, name in enumerate(HEADS)}
    if "position" in f:
      pos = jnp.clip(f["position"], 0, self.max_position)
      bias = jnp.where(pos > 0, self.position_bias[...][pos], 0.0)
      out["ctr"] = out["ctr"] + bias
      out["ctcvr"] = out["ctcvr"] + bias
    return out


def _bce(logits, labels):
  return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))


def gather_rows(ctx: Mapping[str, jax.Array], session: jax.Array) -> dict:
  """Per-session context arrays -> per-row arrays (jit-friendly)."""
  return {k: v[session] for k, v in ctx.items()}


def losses(model: RewardModel, f, click, order, rel) -> tuple[jax.Array, dict]:
  """Total loss and its parts for a batch of impressions + relevance rows."""
  out = model(f)
  l_ctr = _bce(out["ctr"], click).mean()
  l_ctcvr = _bce(out["ctcvr"], order).mean()
  cw = click.astype(jnp.float32)
  l_cvr = (_bce(out["cvr"], order) * cw).sum() / jnp.maximum(cw.sum(), 1.0)
  logits = model.relevance_logits(
    rel["query_codes"], rel["query_valid"], rel["query_words"], rel["item"]
  )
  l_rel = optax.softmax_cross_entropy_with_integer_labels(logits, rel["grade"]).mean()
  parts = {"ctr": l_ctr, "cvr": l_cvr, "ctcvr": l_ctcvr, "rel": l_rel}
  return l_ctr + l_cvr + l_ctcvr + rel["weight"] * l_rel, parts


@dataclasses.dataclass
class TrainedRewardModel:
  """A trained RM with its inputs and a jitted scorer."""

  model: RewardModel
  context: RMContext
  interactions: InteractionLog
  relevance: RelevanceRows
  metrics: dict[str, float]
  history: list[dict[str, float]]
  _predict: Callable | None = None

  def _device_ctx(self):
    if not hasattr(self, "_dctx"):
      self._dctx = {k: jnp.asarray(v) for k, v in self.context.arrays().items()}
      self._ditems = jnp.asarray(self.context.item_codes)
    return self._dctx, self._ditems

  def predict(
    self,
    session: np.ndarray,
    item: np.ndarray,
    position: np.ndarray | None = None,
  ) -> dict[str, np.ndarray]:
    """Head probabilities of (session, item) rows, same shape as the inputs.

    Args:
      session: [...] int session rows.
      item: [...] int item rows (-1 allowed: scored as item 0, caller masks).
      position: optional [...] 1-based display positions (training bias).

    Returns:
      {'ctr', 'cvr', 'ctcvr', 's_rel_model'} float32 arrays.
    """
    ctx, items = self._device_ctx()
    session, item = np.broadcast_arrays(np.asarray(session), np.asarray(item))
    shape = session.shape
    s = session.reshape(-1).astype(np.int32)
    i = np.maximum(item.reshape(-1), 0).astype(np.int32)
    stats = self.context.stats
    st_all = None if stats is None else stats.features(s, i)
    pos = (
      None if position is None else np.asarray(position).reshape(-1).astype(np.int32)
    )
    if self._predict is None:
      graphdef, state = nnx.split(self.model)

      def run(state, ctx, items, s, i, pos, st):
        model = nnx.merge(graphdef, state)
        f = gather_rows(ctx, s)
        f["item"] = items[i]
        if st is not None:
          f["stats"] = st
        if pos is not None:
          f["position"] = pos
        out = {k: jax.nn.sigmoid(v) for k, v in model(f).items()}
        rel = model.relevance_logits(
          f["query_codes"], f["query_valid"], f["query_words"], f["item"]
        )
        grades = jnp.arange(4, dtype=jnp.float32)
        out["s_rel_model"] = (jax.nn.softmax(rel, -1) * grades).sum(-1) / 3.0
        return out

      self._state = state
      self._predict = jax.jit(run)
    n = s.shape[0]
    # Chunks padded to a power of two (<= eval_batch) bound the recompiles.
    step = min(8192, 1 << max(int(np.ceil(np.log2(max(n, 1)))), 4))
    parts = []
    for a in range(0, n, step):
      b = min(a + step, n)
      pad = step - (b - a)
      ss = np.pad(s[a:b], (0, pad))
      ii = np.pad(i[a:b], (0, pad))
      pp = None if pos is None else np.pad(pos[a:b], (0, pad))
      st = None if st_all is None else np.pad(st_all[a:b], ((0, pad), (0, 0)))
      out = jax.device_get(self._predict(self._state, ctx, items, ss, ii, pp, st))
      parts.append({k: v[: b - a] for k, v in out.items()})
    if not parts:
      return {k: np.zeros(shape, np.float32) for k in (*HEADS, "s_rel_model")}
    return {k: np.concatenate([p[k] for p in parts]).reshape(shape) for k in parts[0]}

  def label_relevance(self, session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """grade / 3 where (session's query, item) is labelled, else NaN."""
    if not hasattr(self, "_rel_keys"):
      rel, n = self.relevance, self.interactions.n_items
      ok = rel.query_index >= 0
      keys = rel.query_index[ok].astype(np.int64) * n + rel.item[ok]
      uniq, inv = np.unique(keys, return_inverse=True)
      sums = np.bincount(inv, weights=rel.grade[ok], minlength=uniq.size)
      cnt = np.bincount(inv, minlength=uniq.size)
      self._rel_keys, self._rel_vals = uniq, sums / np.maximum(cnt, 1) / 3.0
    session, item = np.broadcast_arrays(np.asarray(session), np.asarray(item))
    q = self.interactions.session_query[session].astype(np.int64)
    keys = np.where(item >= 0, q * self.interactions.n_items + item, -1)
    hit = InteractionLog.member(self._rel_keys, keys)
    pos = np.clip(
      np.searchsorted(self._rel_keys, keys), 0, max(self._rel_keys.size - 1, 0)
    )
    vals = self._rel_vals[pos] if self._rel_keys.size else np.zeros(keys.shape)
    return np.where(hit, vals, np.nan)

  def score(
    self, session: np.ndarray, item: np.ndarray, cfg: RScoreConfig = RScoreConfig()
  ) -> dict[str, np.ndarray]:
    """R_score and its parts for (session, item) pairs; item -1 -> -inf.

    Args:
      session: [...] session rows (broadcast against item, e.g. [B, 1]).
      item: [...] item rows, -1 for an invalid SID.
      cfg: the λ weights.

    Returns:
      {'ctr', 'cvr', 'ctcvr', 's_rel', 'r_score'} arrays of item's shape.
    """
    session, item = np.broadcast_arrays(np.asarray(session), np.asarray(item))
    out = self.predict(session, item)
    label = self.label_relevance(session, item)
    s_rel = np.where(np.isnan(label), out["s_rel_model"], label)
    r = r_score(out["ctr"], out["cvr"], out["ctcvr"], s_rel, cfg)
    return {
      "ctr": out["ctr"],
      "cvr": out["cvr"],
      "ctcvr": out["ctcvr"],
      "s_rel": s_rel,
      "r_score": np.where(item >= 0, r, -np.inf),
    }


def create_model(cfg: RewardModelConfig, ctx: RMContext) -> RewardModel:
  fc = ctx.config
  return RewardModel(
    cfg,
    ctx.code_ranges,
    ctx.n_genders,
    ctx.n_ages,
    fc.word_buckets,
    fc.user_buckets,
    ctx.n_stats,
    rngs=nnx.Rngs(params=cfg.seed),
  )


def save(trm: TrainedRewardModel, directory: str | pathlib.Path) -> None:
  """Params (npz of the flattened pure dict) + metrics.json."""
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  params = nnx.to_pure_dict(nnx.state(trm.model, nnx.Param))
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(directory / "params", params, force=True)
  ckpt.wait_until_finished()
  (directory / "metrics.json").write_text(
    json.dumps(trm.metrics, indent=2, sort_keys=True)
  )


def restore(
  directory: str | pathlib.Path,
  cfg: RewardModelConfig,
  ctx: RMContext,
  interactions: InteractionLog,
  relevance: RelevanceRows,
) -> TrainedRewardModel:
  """The inverse of `save` (same config and context sizes)."""
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).absolute()
  model = create_model(cfg, ctx)
  params = nnx.state(model, nnx.Param)
  target = nnx.to_pure_dict(params)
  restored = ocp.StandardCheckpointer().restore(directory / "params", target)
  nnx.replace_by_pure_dict(params, restored)
  nnx.update(model, params)
  metrics = json.loads((directory / "metrics.json").read_text())
  return TrainedRewardModel(model, ctx, interactions, relevance, metrics, [])
