"""Training and test metrics of the reward model (pars/reward_model.py).

`train_reward_model` runs the loop core (train/step_loop.py) without a
checkpointer: batches of impressions and relevance rows sampled with a
seeded numpy rng, one jitted step, a record every num_steps // 5 steps, the
NaN guard. `evaluate` reports AUC / logloss on the test split.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.eval import metrics
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.pars.reward_model import (
  RewardModelConfig,
  TrainedRewardModel,
  create_model,
  gather_rows,
  losses,
)
from onesearch_jax.pars.rm_features import RelevanceRows, RMContext
from onesearch_jax.train import state as state_lib
from onesearch_jax.train import step_loop


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
  p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
  y = np.asarray(labels, np.float64)
  return (
    float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if y.size else float("nan")
  )


def evaluate(trm: TrainedRewardModel) -> dict[str, float]:
  """AUC / logloss on the TEST split (position-free scores and with the
  training position bias), plus held-out relevance accuracy."""
  interactions = trm.interactions
  rows = interactions.test_impressions()
  s, i = interactions.imp_session[rows], interactions.imp_item[rows]
  click, order = interactions.imp_click[rows], interactions.imp_order[rows]
  free = trm.predict(s, i)
  biased = trm.predict(s, i, interactions.imp_pos[rows])
  out = {"test_impressions": float(rows.size), "test_clicks": float(click.sum()),
         "test_orders": float(order.sum())}  # fmt: skip
  for tag, p in (("", free), ("_pos", biased)):
    out[f"ctr_auc{tag}"] = metrics.roc_auc(click, p["ctr"])
    out[f"ctr_logloss{tag}"] = logloss(click, p["ctr"])
    out[f"ctcvr_auc{tag}"] = metrics.roc_auc(order, p["ctcvr"])
    out[f"ctcvr_logloss{tag}"] = logloss(order, p["ctcvr"])
  out["cvr_auc"] = metrics.roc_auc(order[click], free["cvr"][click])
  out["cvr_logloss"] = logloss(order[click], free["cvr"][click])
  rel = trm.relevance
  held = np.flatnonzero(rel.held_out)
  if held.size:
    logits = trm.model.relevance_logits(
      jnp.asarray(rel.query.codes[held]),
      jnp.asarray(rel.query.valid[held]),
      jnp.asarray(rel.query.words[held]),
      jnp.asarray(trm.context.item_codes[rel.item[held]]),
    )
    pred = np.asarray(jnp.argmax(logits, -1))
    grades = np.asarray(jax.nn.softmax(logits, -1)) @ np.arange(4.0)
    out["rel_heldout_rows"] = float(held.size)
    out["rel_heldout_accuracy"] = float((pred == rel.grade[held]).mean())
    out["rel_heldout_exact_auc"] = metrics.roc_auc(rel.grade[held] == 3, grades)
  return out


def unshown_pairs(
  interactions: InteractionLog, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """n (session, item) pairs no engine showed: train sessions drawn with their
  impressions' frequency; half the items from the session's L3 category
  (its "same category, not shown" items), half uniform over the items with
  a SID; a drawn item the session did show is redrawn uniformly (and, in the
  rare case that is shown too, kept: at most a few rows of noise).

  Returns:
    ([n] int32 session rows, [n] int32 item rows).
  """
  rng = np.random.default_rng([seed, 17])
  rows = interactions.train_impressions()
  with_sid = np.flatnonzero(interactions.has_sid)
  if n == 0 or rows.size == 0 or with_sid.size == 0:
    return np.zeros(0, np.int32), np.zeros(0, np.int32)
  sess = interactions.imp_session[rows[rng.integers(0, rows.size, n)]].astype(np.int64)
  item = with_sid[rng.integers(0, with_sid.size, n)]
  l3 = interactions.item_l3[with_sid]
  order = np.argsort(l3, kind="stable")
  sorted_l3 = l3[order]
  cat = interactions.session_l3[sess]
  lo = np.searchsorted(sorted_l3, cat, "left")
  hi = np.searchsorted(sorted_l3, cat, "right")
  same = (rng.random(n) < 0.5) & (hi > lo) & (cat >= 0)
  pick = lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64)
  item = np.where(same, with_sid[order[np.minimum(pick, len(order) - 1)]], item)
  shown = InteractionLog.member(
    interactions.impressed_keys, interactions.key(sess, item)
  )
  redraw = with_sid[rng.integers(0, with_sid.size, n)]
  item = np.where(shown, redraw, item)
  return sess.astype(np.int32), item.astype(np.int32)


def train_reward_model(
  ctx: RMContext,
  interactions: InteractionLog,
  relevance: RelevanceRows,
  cfg: RewardModelConfig | None = None,
  log_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedRewardModel:
  """Trains the RM on the train-split impressions and relevance labels.

  One jitted step (graphdef/state pattern) over batches of `batch_size`
  impressions and `rel_batch_size` non-held-out relevance rows, sampled with
  a seeded numpy rng; the context arrays live on device and are gathered
  inside the step. The loop is train/step_loop's without a checkpointer (no
  resume): a record (the loss parts, 'loss', 'step') every num_steps // 5
  steps goes to `history` and log_fn(step, record); a NaN/Inf loss raises
  step_loop.NonFiniteMetricsError.

  Args:
    ctx, interactions, relevance: the RM's inputs (rm_features, logs).
    cfg: sizes and training (default RewardModelConfig()).
    log_fn: called with (step, record) at each record.

  Returns:
    The TrainedRewardModel with test metrics (see `evaluate`) and
    'train_seconds' / 'steps_per_sec' in `metrics`.
  """
  cfg = cfg or RewardModelConfig()
  rows = interactions.train_impressions()
  if rows.size == 0:
    raise ValueError("train_reward_model: the log has no train-split impressions")
  rel_rows = np.flatnonzero(~relevance.held_out)
  model = create_model(cfg, ctx)
  tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  dctx = {k: jnp.asarray(v) for k, v in ctx.arrays().items()}
  d = {
    "items": jnp.asarray(ctx.item_codes),
    "imp_session": jnp.asarray(interactions.imp_session),
    "imp_item": jnp.asarray(interactions.imp_item),
    "imp_pos": jnp.asarray(interactions.imp_pos),
    "imp_click": jnp.asarray(interactions.imp_click),
    "imp_order": jnp.asarray(interactions.imp_order),
    "rel_codes": jnp.asarray(relevance.query.codes),
    "rel_valid": jnp.asarray(relevance.query.valid),
    "rel_words": jnp.asarray(relevance.query.words),
    "rel_item": jnp.asarray(relevance.item),
    "rel_grade": jnp.asarray(relevance.grade),
  }
  if ctx.stats is not None:
    d["imp_stats"] = jnp.asarray(
      ctx.stats.features(interactions.imp_session, interactions.imp_item)
    )
  n_neg = cfg.unshown_negatives
  if n_neg:
    neg_s, neg_i = unshown_pairs(interactions, n_neg * cfg.num_steps, cfg.seed)
    d["neg_session"] = jnp.asarray(neg_s)
    d["neg_item"] = jnp.asarray(neg_i)
    if ctx.stats is not None:
      d["neg_stats"] = jnp.asarray(ctx.stats.features(neg_s, neg_i))
  rel_weight = cfg.rel_weight if rel_rows.size else 0.0
  if relevance.item.size == 0:  # no labels (e.g. real data): one dummy row, weight 0
    for k in ("rel_codes", "rel_valid", "rel_words", "rel_item", "rel_grade"):
      d[k] = jnp.zeros((1,) + d[k].shape[1:], d[k].dtype)

  def step(state, dctx, d, idx, ridx, nidx):
    model, optimizer = nnx.merge(graphdef, state)
    s = d["imp_session"][idx]
    item = d["imp_item"][idx]
    pos = d["imp_pos"][idx]
    click, order = d["imp_click"][idx], d["imp_order"][idx]
    if "imp_stats" in d:
      st = d["imp_stats"][idx]
    if nidx is not None:
      s = jnp.concatenate([s, d["neg_session"][nidx]])
      item = jnp.concatenate([item, d["neg_item"][nidx]])
      pos = jnp.concatenate([pos, jnp.zeros(nidx.shape, pos.dtype)])
      click = jnp.concatenate([click, jnp.zeros(nidx.shape, click.dtype)])
      order = jnp.concatenate([order, jnp.zeros(nidx.shape, order.dtype)])
      if "imp_stats" in d:
        st = jnp.concatenate([st, d["neg_stats"][nidx]])
    f = gather_rows(dctx, s)
    f["item"] = d["items"][item]
    f["position"] = pos
    if "imp_stats" in d:
      f["stats"] = st
    ri = d["rel_item"][ridx]
    rel = {
      "query_codes": d["rel_codes"][ridx],
      "query_valid": d["rel_valid"][ridx],
      "query_words": d["rel_words"][ridx],
      "item": d["items"][ri],
      "grade": d["rel_grade"][ridx],
      "weight": rel_weight,
    }

    def objective(m):
      return losses(m, f, click, order, rel)

    (loss, parts), grads = nnx.value_and_grad(objective, has_aux=True)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), dict(parts, loss=loss)

  jstep = jax.jit(step, donate_argnums=(0,))

  def batches(position: int) -> Iterator[dict[str, np.ndarray]]:
    """Step p's sampled rows: the p-th draw of one seeded rng."""
    rng = np.random.default_rng(cfg.seed)
    for p in itertools.count():
      idx = rows[rng.integers(0, rows.size, cfg.batch_size)]
      ridx = (
        rel_rows[rng.integers(0, rel_rows.size, cfg.rel_batch_size)]
        if rel_rows.size
        else np.zeros(1, np.int64)
      )
      if p >= position:
        out = {"idx": idx.astype(np.int32), "ridx": ridx.astype(np.int32)}
        if n_neg:
          out["nidx"] = np.arange(p * n_neg, (p + 1) * n_neg, dtype=np.int32) % (
            n_neg * cfg.num_steps
          )
        yield out

  def build(_ts, _first) -> step_loop.Steps:
    return step_loop.Steps(
      train=lambda st, b: jstep(st, dctx, d, b["idx"], b["ridx"], b.get("nidx"))
    )

  ts = state_lib.TrainState(
    graphdef,
    state,
    jax.tree.map(lambda x: x.sharding, state),
    sh.single_device_mesh(),
    sh.DP_RULES,
  )
  hints = (
    f"Hints: lower the learning rate (reward_model.learning_rate = "
    f"{cfg.learning_rate}); check the log's features for NaN/Inf values."
  )
  t0 = time.perf_counter()
  res = step_loop.run(
    ts,
    build,
    batches,
    step_loop.LoopConfig(
      num_steps=cfg.num_steps, log_every=max(cfg.num_steps // 5, 1), hints=hints
    ),
    log_fn=log_fn,
  )
  jax.block_until_ready(res.state.state)
  seconds = time.perf_counter() - t0
  model, _ = res.state.merge()
  trm = TrainedRewardModel(model, ctx, interactions, relevance, {}, res.history)
  metrics = evaluate(trm)
  metrics["train_seconds"] = seconds
  metrics["steps_per_sec"] = cfg.num_steps / seconds
  trm.metrics = metrics
  return trm
