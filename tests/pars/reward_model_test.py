"""Reward model: AUC helper, training above chance on the tiny world, R_score."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from onesearch_jax import configs
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.pars import logs, reward_model, reward_training, rm_features
from onesearch_jax.world import reader


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def test_r_score_formula():
  cfg = reward_model.RScoreConfig(lambda_ctr=1.0, lambda_cvr=2.0, lambda_ctcvr=3.0,
                                  lambda_rel=0.5)  # fmt: skip
  assert reward_model.r_score(0.1, 0.2, 0.05, 0.6, cfg) == pytest.approx(
    0.1 + 0.4 + 0.15 + 10 * 0.5 * 0.6
  )


def test_r_score_log_form_is_the_log_of_the_linear_one():
  lin = reward_model.RScoreConfig(lambda_ctr=1.0, lambda_cvr=0.0, lambda_ctcvr=2.0)
  log = reward_model.RScoreConfig(lambda_ctr=1.0, lambda_cvr=0.0, lambda_ctcvr=2.0,
                                  form="log")  # fmt: skip
  ctr, ctcvr = np.array([0.2, 0.05, 0.0]), np.array([0.01, 0.0, 0.0])
  got = reward_model.r_score(ctr, 0.3, ctcvr, 0.0, log)
  np.testing.assert_allclose(got[:2], np.log([0.22, 0.05]), rtol=1e-12)
  assert got[2] == pytest.approx(np.log(1e-9))  # floored, finite
  np.testing.assert_allclose(
    np.exp(got[:2]), reward_model.r_score(ctr, 0.3, ctcvr, 0.0, lin)[:2]
  )
  with pytest.raises(ValueError, match="form"):
    reward_model.RScoreConfig(form="exp")


def test_pars_config_r_score_bindings():
  r = configs.pars_config(
    r_score_lambdas=(1, 0, 0, 0), r_score_form="log", gen_weight=1.0
  )
  assert r.pars.r_score == reward_model.RScoreConfig(1.0, 0.0, 0.0, 0.0, 1.0, "log")
  with pytest.raises(ValueError, match="r_score_lambdas"):
    configs.pars_config(r_score_lambdas=(1, 0))


@pytest.fixture(scope="module")
def trained(tiny_world_dir):
  world = reader.load_world(tiny_world_dir)
  items = [r["item_id"] for r in world.items]
  queries = sorted({r["query"] for r in world.recall})
  table = SIDTable.synthetic(items, queries, levels=(16, 8, 8), opq_codes=16, seed=0)
  interactions = logs.InteractionLog.build(world, table)
  ctx = rm_features.build_context(world, interactions, table)
  rel = rm_features.relevance_rows(world, interactions, table, ctx.config)
  cfg = reward_model.RewardModelConfig(num_steps=300, seed=0)
  return reward_training.train_reward_model(ctx, interactions, rel, cfg), cfg


@pytest.mark.slow  # the trained RM: ~12-20 s to build
def test_rm_auc_above_chance_on_tiny_world(trained):
  trm, _ = trained
  m = trm.metrics
  assert m["test_clicks"] > 100 and m["test_orders"] > 10
  # With the display position (the logging policy's bias) and without it.
  assert m["ctr_auc_pos"] > 0.6, m
  assert m["ctr_auc"] > 0.52, m
  assert m["ctcvr_auc_pos"] > 0.55, m
  # a constant predictor at the train CTR has logloss H(p); the RM beats it
  rows = trm.interactions.test_impressions()
  p = trm.interactions.imp_click[trm.interactions.train_impressions()].mean()
  assert m["ctr_logloss_pos"] < reward_training.logloss(
    trm.interactions.imp_click[rows], np.full(rows.size, p)
  )


@pytest.mark.slow  # the trained RM: ~12-20 s to build
def test_score_shapes_invalid_items_and_label_relevance(trained):
  trm, _ = trained
  rel = trm.relevance
  x = int(np.flatnonzero(rel.query_index >= 0)[0])
  session = int(np.flatnonzero(trm.interactions.session_query == rel.query_index[x])[0])
  items = np.array([[rel.item[x], -1, 0]])
  out = trm.score(np.array([[session]]), items)
  assert out["r_score"].shape == (1, 3) and out["r_score"][0, 1] == -np.inf
  labels = rel.grade[
    (rel.query_index == rel.query_index[x]) & (rel.item == rel.item[x])
  ]
  assert out["s_rel"][0, 0] == pytest.approx(labels.mean() / 3)
  for k in ("ctr", "cvr", "ctcvr"):
    assert ((out[k] > 0) & (out[k] < 1)).all()


@pytest.mark.slow  # the trained RM: ~12-20 s to build
def test_save_restore_round_trip(trained, tmp_path):
  trm, cfg = trained
  reward_model.save(trm, tmp_path / "rm")
  back = reward_model.restore(
    tmp_path / "rm", cfg, trm.context, trm.interactions, trm.relevance
  )
  s, i = np.arange(5), np.arange(5)
  for k, v in trm.predict(s, i).items():
    np.testing.assert_allclose(back.predict(s, i)[k], v, rtol=1e-6)
  assert back.metrics["ctr_auc"] == pytest.approx(trm.metrics["ctr_auc"])
