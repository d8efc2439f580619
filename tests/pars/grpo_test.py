"""GRPO / TPMA-GRPO phase: rewards, learning on a toy problem, exact resume."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax import testing
from onesearch_jax.decoding import build_trie, sample, unique_sids
from onesearch_jax.model import ModelConfig
from onesearch_jax.pars import grpo
from onesearch_jax.train import checkpoints, optimizers, state, synthetic
from onesearch_jax.v2 import grpo_rewards, tpma

SIZES = (4, 3, 3)
SID_RANGES = synthetic.sid_ranges_for(48, 20, SIZES)
OFFSETS = tuple(a for a, _ in SID_RANGES)
CFG = ModelConfig.tiny(
  sid_ranges=SID_RANGES, restrict_sid_levels=True, qformer_layers=0
)
CODES = np.asarray(
  [
    [0, 0, 0],
    [0, 0, 2],
    [0, 1, 1],
    [1, 2, 0],
    [1, 2, 1],
    [2, 0, 0],
    [3, 1, 2],
    [3, 2, 2],
  ]
)
UNIQUE = unique_sids(CODES)


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  with testing.fast_compile():
    yield


def _tokens(rows) -> np.ndarray:
  return np.asarray(rows, np.int32) + np.asarray(OFFSETS, np.int32)


def _batch(b: int = 4, position: int = 0, target: int = 6) -> dict[str, np.ndarray]:
  """b prompts whose one ground truth (an order) is UNIQUE[target]; the
  judged SID UNIQUE[target - 1] has tier 2."""
  enc = synthetic.make_batch(CFG, b, 6, seed=position)["encoder_input_tokens"]
  gt = np.zeros((b, 2, 3), np.int32)
  gt[:, 0] = _tokens(UNIQUE[target])
  rel = np.zeros((b, 1, 3), np.int32)
  rel[:, 0] = _tokens(UNIQUE[target - 1])
  return {
    "encoder_input_tokens": enc,
    "gt_tokens": gt,
    "gt_mask": np.asarray([[True, False]] * b),
    "gt_order": np.asarray([[True, False]] * b),
    "rel_tokens": rel,
    "rel_tier": np.full((b, 1), 2, np.int32),
    "position": np.full(b, position, np.int32),
    "example_weight": np.ones(b, np.float32),
  }


def _setup(lr: float = 1e-2, seed: int = 0):
  mesh = sh.single_device_mesh()
  opt = optimizers.OptimizerConfig(
    learning_rate=lr, warmup_steps=0, total_steps=50, decay="constant"
  )
  return state.create_train_state(CFG, opt, mesh, sh.DP_RULES, seed=seed), opt


def _tables() -> grpo.RolloutTables:
  return grpo.RolloutTables(
    sid_ctr=np.linspace(0.1, 0.8, len(UNIQUE), dtype=np.float32)
  )


def _trie():
  return build_trie(CODES, SIZES, OFFSETS, dense_levels=1)


def test_item_rewards_match_the_numpy_composite_reward():
  b = _batch(2)
  b["gt_mask"][1, 1] = True  # row 1: a clicked second ground truth
  b["gt_tokens"][1, 1] = _tokens(UNIQUE[2])
  rows = [[6, 5, 2, 0], [2, 6, 5, 1]]  # sid_index of 4 rollouts per prompt
  sid = np.asarray(rows, np.int32)
  tok = _tokens(UNIQUE[sid])
  got = grpo.item_rewards(
    jnp.asarray(tok), jnp.asarray(sid), {k: jnp.asarray(v) for k, v in b.items()},
    _tables(),
  )  # fmt: skip
  is_order = sid == 6
  is_click = is_order | ((sid == 2) & (np.arange(2)[:, None] == 1))
  rel = np.where(sid == 5, 2, 0)
  want = grpo_rewards.composite_item_reward(
    is_order, is_click, _tables().sid_ctr[sid], rel
  )
  np.testing.assert_allclose(np.asarray(got["item"]), want, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(got["hit"]), is_click.astype(np.float32))


def _target_prob(ts, st, batch, trie, target: int) -> float:
  """Mean over prompts of q(UNIQUE[target]) under the constrained policy."""
  model, _ = nnx.merge(ts.graphdef, st)
  tok = jnp.asarray(
    np.broadcast_to(_tokens(UNIQUE[target]), (batch["gt_tokens"].shape[0], 1, 3))
  )
  with jax.set_mesh(ts.mesh), nnx.logical_axis_rules(ts.rules):
    lp = sample.constrained_log_probs(
      model, {"encoder_input_tokens": jnp.asarray(batch["encoder_input_tokens"])},
      jax.tree.map(jnp.asarray, trie), tok,
    )  # fmt: skip
  return float(np.exp(np.asarray(lp).sum(-1)).mean())


@pytest.mark.parametrize("variant", ["grpo", "tpma"])
def test_steps_raise_the_rewarded_sid_probability(variant):
  ts, _ = _setup()
  trie = _trie()
  cfg = grpo.GRPOConfig(variant=variant, num_samples=8, sft_weight=0.0, batch_size=4)
  batch = _batch()
  bsh = state.batch_shardings(batch, ts.mesh, ts.rules)
  fn = grpo.CompiledGRPOStep(ts, bsh, cfg)
  dev_trie = jax.tree.map(jnp.asarray, trie)
  tables = jax.tree.map(jnp.asarray, _tables())
  st = ts.state
  before = _target_prob(ts, st, batch, trie, 6)
  metrics = []
  for p in range(12):
    batch["position"][:] = p
    st, m = fn(st, dev_trie, tables, state.shard_batch(batch, bsh))
    metrics.append({k: float(v) for k, v in m.items()})
  after = _target_prob(ts, st, batch, trie, 6)
  assert after > before + 0.05, (before, after)
  assert all(m["valid_rate"] == 1.0 for m in metrics)
  assert all(m["logp_gap"] < 1e-4 for m in metrics)
  # The sampler's reward rises with the target's probability.
  first = np.mean([m["reward_mean"] for m in metrics[:3]])
  last = np.mean([m["reward_mean"] for m in metrics[-3:]])
  assert last > first, (first, last)
  if variant == "grpo":
    assert all(m["gate_mean"] == 1.0 for m in metrics)
  else:
    assert all(0.0 < m["gate_mean"] <= 1.0 for m in metrics)


def test_without_reward_spread_only_the_sft_term_moves_the_policy():
  """Every rollout rewarded alike (no ground truth, no judgement, flat CTR):
  advantages are 0, so with sft_weight 0 the gradient is exactly 0."""
  ts, _ = _setup()
  batch = _batch()
  batch["gt_mask"][:] = False
  batch["rel_tier"][:] = 0
  tables = grpo.RolloutTables(sid_ctr=np.full(len(UNIQUE), 0.3, np.float32))
  cfg = grpo.GRPOConfig(variant="grpo", sft_weight=0.0, batch_size=4)
  bsh = state.batch_shardings(batch, ts.mesh, ts.rules)
  fn = grpo.CompiledGRPOStep(ts, bsh, cfg)
  _, m = fn(ts.state, jax.tree.map(jnp.asarray, _trie()),
            jax.tree.map(jnp.asarray, tables), state.shard_batch(batch, bsh))  # fmt: skip
  assert float(m["grad_norm"]) == 0.0
  assert float(m["reward_mean"]) == pytest.approx(0.3)


def _phase_cfg(**kw) -> grpo.GRPOConfig:
  """4 steps of 4 prompts, checkpoints only when forced (or at the end)."""
  return grpo.GRPOConfig(
    variant="tpma", num_steps=4, log_every=1, batch_size=4,
    optimizer=optimizers.OptimizerConfig(
      learning_rate=1e-2, warmup_steps=0, total_steps=50, decay="constant"
    ),
    checkpoint=checkpoints.CheckpointConfig(save_every_steps=100, keep_last=2),
    **kw,
  )  # fmt: skip


def stream(pos):
  while True:
    yield _batch(position=pos)
    pos += 1


@pytest.mark.slow
def test_train_phase_resumes_exactly(tmp_path):
  cfg = _phase_cfg()
  trie, tables = _trie(), _tables()
  full = grpo.train_phase(_setup()[0], trie, tables, stream, cfg, tmp_path / "a")
  part = grpo.train_phase(
    _setup()[0], trie, tables, stream, cfg, tmp_path / "b", stop_after=2
  )
  assert part.steps_run == 2
  rest = grpo.train_phase(_setup()[0], trie, tables, stream, cfg, tmp_path / "b")
  assert rest.resumed_from == 2 and rest.steps_run == 2
  assert state.params_hash(rest.state) == state.params_hash(full.state)
  np.testing.assert_allclose(
    [h["reward_mean"] for h in part.history + rest.history],
    [h["reward_mean"] for h in full.history], rtol=1e-6,
  )  # fmt: skip
  other = dataclasses.replace(cfg, variant="grpo", num_steps=6)
  with pytest.raises(ValueError, match="variant 'tpma'"):
    grpo.train_phase(_setup()[0], trie, tables, stream, other, tmp_path / "b")


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="variant"):
    grpo.GRPOConfig(variant="ppo")
  with pytest.raises(ValueError, match="num_samples"):
    grpo.GRPOConfig(num_samples=1)
  with pytest.raises(ValueError, match="temperature"):
    grpo.GRPOConfig(temperature=0.0)


def test_prompts_from_the_hand_log(hand_log, world, sid_table):
  from onesearch_jax.pars import grpo_data, rm_features
  from onesearch_jax.pars.sid_tokens import SidCodec

  ranges = synthetic.sid_ranges_for(64, 20, sid_table.code_ranges)
  codec = SidCodec.from_ranges(ranges, sid_table.code_ranges)
  rel = rm_features.relevance_rows(
    world, hand_log, sid_table, rm_features.FeatureConfig()
  )
  cfg = grpo.GRPOConfig(max_targets=2, max_judged=3)
  p = grpo_data.build_prompts(hand_log, rel, codec, cfg)
  # Train sessions s1 (bought and clicked A) and s2 (clicked B); s3 is test.
  assert [hand_log.session_ids[s] for s in p.session] == ["s1", "s2"]
  a, b = (codec.tokens(testing.HAND_CODES[i]) for i in (0, 1))
  np.testing.assert_array_equal(p.gt_tokens[0, 0], a)
  np.testing.assert_array_equal(p.gt_tokens[1, 0], b)
  np.testing.assert_array_equal(p.gt_mask, [[True, False], [True, False]])
  np.testing.assert_array_equal(p.gt_order, [[True, False], [False, False]])
  assert np.all(p.gt_tokens[:, 1] == 0)
  # "red dress" judges A as 3 (both sessions' query) unless the row is in
  # the reward model's hold-out.
  held = bool(rel.held_out[0])
  want = [0, 0, 0] if held else [3, 0, 0]
  np.testing.assert_array_equal(p.rel_tier, [want, want])
  if not held:
    np.testing.assert_array_equal(p.rel_tokens[0, 0], a)
  assert p.stats["prompts"] == 2 and p.stats["sessions_train"] == 2


def test_batch_stream_is_deterministic_and_pads(hand_log, world, sid_table):
  from onesearch_jax.pars import grpo_data, rm_features
  from onesearch_jax.pars.sid_tokens import SidCodec

  ranges = synthetic.sid_ranges_for(64, 20, sid_table.code_ranges)
  codec = SidCodec.from_ranges(ranges, sid_table.code_ranges)
  rel = rm_features.relevance_rows(
    world, hand_log, sid_table, rm_features.FeatureConfig()
  )
  p = grpo_data.build_prompts(hand_log, rel, codec, grpo.GRPOConfig())

  def prompt_fn(ids):
    return {"encoder_input_tokens": np.asarray([[1 + int(s[1:])] * 4 for s in ids])}

  stream = grpo_data.batch_stream(p, hand_log, prompt_fn, batch_size=3, seed=5)
  first = [next(stream(k)) for k in range(3)]
  again = stream(1)
  for k in (1, 2):
    got = next(again)
    for key in first[k]:
      np.testing.assert_array_equal(got[key], first[k][key])
  for k, b in enumerate(first):
    np.testing.assert_array_equal(b["position"], [k] * 3)
    np.testing.assert_array_equal(b["example_weight"], [1, 1, 0])  # 2 prompts
    # Each real row's prompt is its own session's (s1 -> 2, s2 -> 3).
    sess = np.where(b["gt_order"][:, 0], 1, 2)
    np.testing.assert_array_equal(b["encoder_input_tokens"][:2, 0], sess[:2] + 1)


def test_rollout_tables_give_each_sid_its_items_ctr(hand_log):
  from onesearch_jax.pars import grpo_data, rewards
  from onesearch_jax.pars.sid_tokens import ItemLookup

  rt = rewards.RewardTable.build(hand_log)
  lookup = ItemLookup.build(
    hand_log.item_codes, hand_log.has_sid, rt.counts.clicks, hand_log.code_ranges
  )
  unique = unique_sids(testing.HAND_CODES)
  extra = np.asarray([[2, 0, 0, 0, 0]])  # a SID no item has
  t = grpo_data.rollout_tables(np.concatenate([unique, extra]), lookup, rt)
  for row, codes in enumerate(unique):
    item = int(np.flatnonzero((testing.HAND_CODES == codes).all(1))[0])
    assert t.sid_ctr[row] == pytest.approx(rt.ctr[item])
  assert t.sid_ctr[-1] == pytest.approx(rt.ctr_unknown)


def test_switch_off_leaves_the_stage_config_and_defaults_alone():
  from onesearch_jax import configs
  from onesearch_jax.pars import run, stage

  assert run.ParsConfig().grpo is None
  off = stage.config_to_dict(stage.ParsStageConfig())
  assert "grpo" not in off["pars"]
  assert configs.pars_config() == stage.ParsStageConfig()
  on = configs.pars_config(
    grpo={"variant": "grpo", "num_steps": 30, "learning_rate": 3e-4}
  )
  g = on.pars.grpo
  assert (g.variant, g.num_steps, g.log_every) == ("grpo", 30, 10)
  assert (g.optimizer.learning_rate, g.optimizer.total_steps) == (3e-4, 30)
  assert g.checkpoint.save_every_steps == 30
  assert stage.config_to_dict(on)["pars"]["grpo"]["variant"] == "grpo"
  with pytest.raises(ValueError, match="unknown GRPOConfig fields"):
    configs.pars_config(grpo={"varient": "tpma"})
  assert (g.kl_coef, g.updates_per_batch) == (0.0, 1)  # both off by default
  two = configs.pars_config(
    grpo={"variant": "tpma", "num_steps": 30, "kl_coef": 0.05, "updates_per_batch": 2}
  ).pars.grpo
  assert (two.kl_coef, two.updates_per_batch) == (0.05, 2)
  assert two.optimizer.total_steps == 60  # the optimizer counts updates
  assert two.checkpoint.save_every_steps == 30  # the loop counts batches
  # Off, the two switches are left out of the stage's hashed config.
  assert "kl_coef" not in stage.config_to_dict(on)["pars"]["grpo"]
  assert "updates_per_batch" not in stage.config_to_dict(on)["pars"]["grpo"]
  hashed = stage.config_to_dict(configs.pars_config(grpo={"kl_coef": 0.05}))
  assert hashed["pars"]["grpo"]["kl_coef"] == 0.05


# ------------------------------------- reference KL, several updates per batch


def _step(cfg, ts, batch, reference=None, st=None):
  """One compiled GRPO step from `st` (default ts.state) -> (state, metrics)."""
  bsh = state.batch_shardings(batch, ts.mesh, ts.rules)
  fn = grpo.CompiledGRPOStep(ts, bsh, cfg, reference)
  st = ts.state if st is None else st
  st = jax.tree.map(lambda x: x.copy(), st)  # the step donates its state
  return fn(st, jax.tree.map(jnp.asarray, _trie()),
            jax.tree.map(jnp.asarray, _tables()), state.shard_batch(batch, bsh))  # fmt: skip


def _model_logp(ts, st, batch, tokens, temperature=1.0) -> np.ndarray:
  model, _ = nnx.merge(ts.graphdef, st)
  with jax.set_mesh(ts.mesh), nnx.logical_axis_rules(ts.rules):
    lp = sample.constrained_log_probs(
      model, {"encoder_input_tokens": jnp.asarray(batch["encoder_input_tokens"])},
      jax.tree.map(jnp.asarray, _trie()), jnp.asarray(tokens), temperature=temperature,
    )  # fmt: skip
  return np.asarray(lp, np.float64)


def _rollouts(ts, st, batch, cfg):
  """The step's rollouts, drawn again with its key (fold_in(seed, position))."""
  model, _ = nnx.merge(ts.graphdef, st)
  key = jax.random.fold_in(jax.random.key(cfg.seed), int(batch["position"][0]))
  return sample.sample_sids(
    model, {"encoder_input_tokens": batch["encoder_input_tokens"]},
    _trie(), key, num_samples=cfg.num_samples, temperature=cfg.temperature,
    mesh=ts.mesh,
  )  # fmt: skip


@pytest.mark.slow  # three compiled steps / scorers of the toy model
def test_reference_kl_is_zero_at_the_reference_and_the_k3_mean_elsewhere():
  """Policy = reference (step 1 from the SFT model): the KL and its gradient
  are 0, so the step equals the kl_coef 0 step. From another policy the
  metric is the numpy k3 mean over the rollout tokens."""
  ts, _ = _setup()
  batch = _batch()
  ref = grpo.listwise.reference_from(ts)
  off = grpo.GRPOConfig(variant="tpma", batch_size=4)
  on = dataclasses.replace(off, kl_coef=0.5)
  st_off, m_off = _step(off, ts, batch)
  st_on, m_on = _step(on, ts, batch, ref)
  assert float(m_on["kl"]) == 0.0 and "kl" not in m_off
  assert float(m_on["loss"]) == float(m_off["loss"])
  for a, b in zip(jax.tree.leaves(st_on), jax.tree.leaves(st_off), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="reference is needed"):
    grpo.CompiledGRPOStep(ts, state.batch_shardings(batch, ts.mesh, ts.rules), on)
  # Another policy (after a step), the same frozen reference.
  batch["position"][:] = 1
  _, m = _step(on, ts, batch, ref, st=st_on)
  tokens = np.asarray(_rollouts(ts, st_on, batch, on).tokens)
  lp = _model_logp(ts, st_on, batch, tokens)
  lr = _model_logp(ts, ts.state, batch, tokens)
  want = np.mean(np.exp(lr - lp) - (lr - lp) - 1.0)
  assert want > 0
  np.testing.assert_allclose(float(m["kl"]), want, rtol=1e-3, atol=1e-7)


@pytest.mark.slow  # three compiled steps / scorers of the toy model
def test_two_updates_per_batch_second_ratio_by_hand():
  """Update 1 of K = 2 is the K = 1 step itself; update 2 scores the same
  rollouts at θ_1 against log π_old at θ_0: r = exp(log π_θ1 − log π_θ0) ≠ 1,
  and its loss is −mean(g·r·Â) + 0.1·CE, computed here with numpy."""
  ts, _ = _setup()
  batch = _batch()
  one = grpo.GRPOConfig(variant="tpma", batch_size=4)
  two = dataclasses.replace(one, updates_per_batch=2)
  st1, m1 = _step(one, ts, batch)
  _, m2 = _step(two, ts, batch)
  for k in ("loss", "pg_loss", "sft_loss", "reward_mean"):  # update 1 is unchanged
    np.testing.assert_allclose(float(m2[k]), float(m1[k]), rtol=1e-6, err_msg=k)
  assert "ratio_mean" not in m1 and "loss_last" not in m1
  tokens = np.asarray(_rollouts(ts, ts.state, batch, one).tokens)
  lp0 = _model_logp(ts, ts.state, batch, tokens)
  lp1 = _model_logp(ts, st1, batch, tokens)
  ratio = np.exp(lp1 - lp0)
  assert abs(ratio.mean() - 1.0) > 1e-4
  np.testing.assert_allclose(float(m2["ratio_mean_last"]), ratio.mean(), rtol=1e-4)
  adv, gates = (
    np.asarray(x, np.float64)
    for x in tpma.tpma_advantages(
      jnp.asarray(tokens),
      jnp.asarray(batch["gt_tokens"]),
      jnp.asarray(batch["gt_mask"]),
    )
  )
  want_pg = np.mean(-(gates * ratio * adv))
  np.testing.assert_allclose(float(m2["pg_loss_last"]), want_pg, rtol=1e-3, atol=1e-6)
  assert float(m2["grad_norm"]) >= float(m1["grad_norm"])
  with pytest.raises(ValueError, match="updates_per_batch"):
    grpo.GRPOConfig(updates_per_batch=0)
  with pytest.raises(ValueError, match="kl_coef"):
    grpo.GRPOConfig(kl_coef=-1.0)


@pytest.mark.slow
def test_train_phase_with_kl_and_two_updates_resumes_exactly(tmp_path):
  """kl_coef > 0 and 2 updates per batch: a killed run resumes to the
  uninterrupted parameters (the reference is the starting model again, not
  a checkpoint item); another reference is refused."""
  cfg = _phase_cfg(kl_coef=0.5, updates_per_batch=2)
  trie, tables = _trie(), _tables()
  full = grpo.train_phase(_setup()[0], trie, tables, stream, cfg, tmp_path / "a")
  assert full.state.step == 4 and [h["step"] for h in full.history] == [1, 2, 3, 4]
  _, opt = full.state.merge()
  assert int(opt.step[...]) == 8  # two optimizer updates per batch
  assert full.history[0]["kl"] == 0.0 < full.history[-1]["kl"]
  part = grpo.train_phase(
    _setup()[0], trie, tables, stream, cfg, tmp_path / "b", stop_after=2
  )
  rest = grpo.train_phase(_setup()[0], trie, tables, stream, cfg, tmp_path / "b")
  assert rest.resumed_from == 2 and rest.steps_run == 2
  assert state.params_hash(rest.state) == state.params_hash(full.state)
  assert [h["kl"] for h in part.history + rest.history] == [
    h["kl"] for h in full.history
  ]
  with pytest.raises(ValueError, match="reference_hash"):
    grpo.train_phase(_setup(seed=1)[0], trie, tables, stream, cfg, tmp_path / "b")
