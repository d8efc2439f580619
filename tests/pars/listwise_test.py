"""Listwise softmax-DPO: hand-computed losses, frozen reference, resumable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.model import ModelConfig
from onesearch_jax.pars import listwise, rewards
from onesearch_jax.train import checkpoints, optimizers, state, step_loop, synthetic

SID_RANGES = synthetic.sid_ranges_for(64, 24, (8, 8, 8, 8, 8))
CFG = ModelConfig.tiny(
  sid_ranges=SID_RANGES, restrict_sid_levels=True, qformer_layers=0
)


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _numpy_loss(pol, ref, rw, beta, alpha, weighted=True, reg_w=0.0, floor=0.1):
  """Hand derivation: L = -log σ(-log Σ_k e^{z_k}) = log(1 + Σ_k e^{z_k})."""
  delta = (pol[1:] - ref[1:]) - (pol[0] - ref[0])
  w = np.ones_like(delta)
  if weighted:
    w = np.maximum(max(rw[0], 1.0) - rw[1:], floor) ** (-alpha) + 1.0
  reg = reg_w * max(ref[0] - pol[0], 0.0)
  z = w * beta * (reg + delta)
  return np.log1p(np.exp(z).sum())


CASES = [
  # policy logps, reference logps, rewards (chosen, rejected...)
  ([-1.0, -2.0, -3.0], [-1.5, -1.8, -2.5], [1.2, 0.3, 0.0]),
  ([-4.0, -1.0, -2.0], [-3.0, -1.5, -2.2], [0.6, 0.5, 0.9]),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("weighted", [True, False])
def test_loss_matches_hand_formula(case, weighted):
  pol, ref, rw = (np.asarray(x) for x in case)
  cfg = listwise.ListwiseConfig(beta=0.5, alpha=1.5, use_reward_weight=weighted)
  loss, parts = listwise.softmax_dpo_loss(
    jnp.asarray(pol[None]), jnp.asarray(ref[None]), jnp.asarray(rw[None]),
    jnp.ones((1, 3), bool), cfg,
  )  # fmt: skip
  want = _numpy_loss(pol, ref, rw, 0.5, 1.5, weighted)
  np.testing.assert_allclose(float(loss[0]), want, rtol=1e-6)
  # the official expression, literally: -logsigmoid(-log(sum exp))
  w = rewards.official_gap_weight(rw[0], rw[1:]) if weighted else 1.0
  temp = np.exp(w * 0.5 * ((pol[1:] - ref[1:]) - (pol[0] - ref[0]))).sum()
  np.testing.assert_allclose(
    float(loss[0]), -np.log(1 / (1 + np.exp(np.log(temp)))), rtol=1e-6
  )
  assert float(parts["accuracy"][0]) == float(
    all(0.5 * (pol[0] - ref[0]) > 0.5 * (pol[1:] - ref[1:]))
  )


def test_chosen_regulariser_and_sft_term():
  pol, ref, rw = (np.asarray(x) for x in CASES[1])
  cfg = listwise.ListwiseConfig(beta=0.5, reg_weight=2.0, sft_weight=0.3)
  loss, parts = listwise.softmax_dpo_loss(
    jnp.asarray(pol[None]), jnp.asarray(ref[None]), jnp.asarray(rw[None]),
    jnp.ones((1, 3), bool), cfg,
  )  # fmt: skip
  want = _numpy_loss(pol, ref, rw, 0.5, 1.5, True, reg_w=2.0) + 0.3 * 4.0
  np.testing.assert_allclose(float(loss[0]), want, rtol=1e-6)
  np.testing.assert_allclose(float(parts["sft"][0]), 4.0)


def test_masked_slot_drops_out_and_empty_row_is_zero():
  pol, ref, rw = (np.asarray(x) for x in CASES[0])
  cfg = listwise.ListwiseConfig(beta=0.5)
  mask = jnp.asarray([[True, True, False], [True, False, False]])

  def f(p):
    loss, _ = listwise.softmax_dpo_loss(
      p, jnp.asarray(np.stack([ref, ref])), jnp.asarray(np.stack([rw, rw])), mask, cfg
    )
    return loss

  p = jnp.asarray(np.stack([pol, pol]))
  loss = f(p)
  np.testing.assert_allclose(
    float(loss[0]), _numpy_loss(pol[:2], ref[:2], rw[:2], 0.5, 1.5), rtol=1e-6
  )
  assert float(loss[1]) == 0.0
  g = jax.grad(lambda p: f(p).sum())(p)
  assert np.isfinite(np.asarray(g)).all()
  np.testing.assert_array_equal(np.asarray(g)[1], 0.0)


def test_reward_gap_weighting_emphasises_small_gaps():
  cfg = listwise.ListwiseConfig(alpha=1.5)
  w = np.asarray(listwise.gap_weights(jnp.asarray([[1.0, 0.0, 0.5, 0.95, 3.0]]), cfg))[
    0
  ]
  np.testing.assert_allclose(
    w, [2.0, 0.5**-1.5 + 1, 0.1**-1.5 + 1, 0.1**-1.5 + 1], rtol=1e-6
  )
  assert w[0] < w[1] < w[2]
  np.testing.assert_allclose(
    w, rewards.official_gap_weight(1.0, np.array([0.0, 0.5, 0.95, 3.0])), rtol=1e-6
  )


def _batch(b=8, k=2, seed=0):
  rng = np.random.default_rng(seed)
  prompts = synthetic.make_batch(CFG, b, 7, seed=seed)
  chosen = synthetic.random_sids(rng, b, SID_RANGES)
  rejected = np.stack([synthetic.random_sids(rng, b, SID_RANGES) for _ in range(k)], 1)
  rw = np.concatenate([np.full((b, 1), 1.0), rng.random((b, k)) * 0.3], 1)
  mask = np.ones((b, k), bool)
  mask[0, 1] = False
  return listwise.make_batch(
    {"encoder_input_tokens": prompts["encoder_input_tokens"]},
    chosen,
    rejected,
    rw,
    mask,
  )


def test_sequence_logprobs_match_per_slot_forward():
  from onesearch_jax.model import model as model_lib
  from onesearch_jax.model.transformer import create_model

  m = create_model(CFG, seed=1)
  batch = _batch(4, 2)
  got = np.asarray(listwise.sequence_logprobs(m, batch))
  for slot in range(3):
    single = {
      "encoder_input_tokens": batch["encoder_input_tokens"],
      "decoder_input_tokens": batch["decoder_input_tokens"][:, slot],
      "decoder_target_tokens": batch["decoder_target_tokens"][:, slot],
    }
    logits = jax.jit(lambda b: m(b))(single)
    allowed = model_lib.allowed_outputs(m, jnp.asarray(single["decoder_target_tokens"]))
    logits = jnp.where(allowed, logits, -1e30)
    lp = jax.nn.log_softmax(logits, -1)
    tok = np.take_along_axis(
      np.asarray(lp), single["decoder_target_tokens"][..., None], -1
    )[..., 0]
    want = (tok * batch["decoder_loss_weights"][:, slot]).sum(-1)
    np.testing.assert_allclose(got[:, slot], want, rtol=1e-5, atol=1e-5)


def _setup(mesh_shape=(1, 1, 1), rules="dp", n_dev=1, lr=3e-3, seed=0):
  mesh_cfg = sh.MeshConfig(shape=mesh_shape, rules=rules)
  mesh = sh.make_mesh(mesh_cfg, jax.devices()[:n_dev])
  opt = optimizers.OptimizerConfig(
    learning_rate=lr, warmup_steps=1, total_steps=50, decay="constant"
  )
  ts = state.create_train_state(CFG, opt, mesh, mesh_cfg.logical_rules, seed=seed)
  return ts, opt


def test_train_steps_lower_loss_and_keep_reference_frozen():
  ts, _ = _setup()
  ref = listwise.reference_from(ts)
  before = jax.tree.map(np.asarray, nnx.to_pure_dict(ref[1]))
  batch = _batch()
  bsh = listwise.listwise_batch_shardings(batch, ts.mesh, ts.rules)
  cfg = listwise.ListwiseConfig(beta=0.5)
  fn = listwise.CompiledListwiseStep(ts, ref[0], ref[2], bsh, cfg)
  st, losses = ts.state, []
  for _ in range(4):
    st, m = fn(st, ref[1], state.shard_batch(batch, bsh))
    losses.append(float(m["loss"]))
  # step 1: policy == reference -> every Δ = 0 -> loss = log(1 + Σ_k w_k·0 exps)
  w = rewards.official_gap_weight(batch["rewards"][:, :1], batch["rewards"][:, 1:])
  n_present = batch["decoder_loss_weights"][:, 1:, 0].sum(-1)
  np.testing.assert_allclose(losses[0], np.log1p(n_present).mean(), rtol=1e-5)
  assert w.shape == (8, 2)
  assert losses[-1] < losses[0]
  after = jax.tree.map(np.asarray, nnx.to_pure_dict(ref[1]))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
    np.testing.assert_array_equal(a, b)
  # the policy moved
  model, _ = nnx.merge(ts.graphdef, st)
  moved = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  assert any(not np.array_equal(np.asarray(a), b) for a, b in
             zip(moved, jax.tree.leaves(before), strict=True))  # fmt: skip


def test_reference_gets_no_gradient():
  ts, _ = _setup()
  graphdef, ref_state, _ = listwise.reference_from(ts)
  policy = nnx.merge(graphdef, jax.tree.map(lambda x: x + 0.01, ref_state))
  batch = _batch(4, 2, seed=3)
  cfg = listwise.ListwiseConfig(beta=0.5, reg_weight=1.0)

  pol_state = nnx.state(policy)

  def loss(pol_state, ref_state):
    pol = nnx.merge(graphdef, pol_state)
    return listwise.objective(pol, nnx.merge(graphdef, ref_state), batch, cfg)[0]

  g_pol, g_ref = jax.jit(jax.grad(loss, argnums=(0, 1)))(pol_state, ref_state)
  leaves = jax.tree.leaves(g_ref)
  assert leaves and all(float(jnp.abs(x).max()) == 0.0 for x in leaves)
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g_pol))


@pytest.mark.slow
def test_train_phase_resumes_exactly(tmp_path):
  cfg = listwise.ListwiseTrainConfig(
    num_steps=4, log_every=1, loss=listwise.ListwiseConfig(beta=0.5),
    optimizer=optimizers.OptimizerConfig(
      learning_rate=3e-3, warmup_steps=1, total_steps=50, decay="constant"
    ),
    checkpoint=checkpoints.CheckpointConfig(save_every_steps=100, keep_last=2),
  )  # fmt: skip
  batches = [_batch(seed=s) for s in range(4)]

  def stream(pos):
    yield from batches[pos:]

  ts, _ = _setup()
  ref = listwise.reference_from(ts)
  full = listwise.train_phase(ts, ref, stream, cfg, tmp_path / "a")
  ts, _ = _setup()
  ref = listwise.reference_from(ts)
  part = listwise.train_phase(ts, ref, stream, cfg, tmp_path / "b", stop_after=2)
  assert part.steps_run == 2
  ts, _ = _setup()
  ref = listwise.reference_from(ts)
  rest = listwise.train_phase(ts, ref, stream, cfg, tmp_path / "b")
  assert rest.resumed_from == 2 and rest.steps_run == 2
  np.testing.assert_allclose(
    [h["loss"] for h in part.history + rest.history],
    [h["loss"] for h in full.history], rtol=1e-5,
  )  # fmt: skip


def _reward_margins(ts, st, ref, batch, beta):
  """[B] min over present rejected slots of chosen - rejected reward (numpy),
  from the policy ``st`` before a step; +inf for a row with no rejected slot."""
  pol_model, _ = nnx.merge(ts.graphdef, st)
  ref_model = nnx.merge(ref[0], ref[1])
  with jax.set_mesh(ts.mesh), nnx.logical_axis_rules(ts.rules):
    pol = np.asarray(listwise.sequence_logprobs(pol_model, batch), np.float64)
    ref_lp = np.asarray(listwise.sequence_logprobs(ref_model, batch), np.float64)
  delta = pol - ref_lp
  margin = beta * (delta[:, :1] - delta[:, 1:])
  present = np.asarray(batch["decoder_loss_weights"])[:, 1:].sum(-1) > 0
  return np.where(present, margin, np.inf).min(-1)


@pytest.mark.slow
def test_sharded_step_matches_single_device():
  """The listwise step on a 2x4 fsdp mesh gives the single-device metrics.

  The reference is another initialisation (seed 6: margins of either sign, the
  smallest |margin| 0.03), so rewards are away from 0 from the first step. ``reward_accuracy`` thresholds chosen > rejected: an
  example whose margin is within rounding of 0 may flip between meshes, so
  each run's accuracy is checked against the accuracy of the clear-margin
  examples (numpy, from the single-device log-probs), the near-ties allowed
  either way; every continuous metric is compared with a tolerance.
  """
  batch = _batch(seed=5)
  cfg = listwise.ListwiseConfig(beta=0.5, sft_weight=0.1, reg_weight=0.5)
  ex_w = np.asarray(batch["example_weight"], np.float64)
  denom = max(ex_w.sum(), 1.0)
  out, margins = [], []
  for shape, rules, n in (((1, 1, 1), "dp", 1), ((2, 4, 1), "fsdp", 8)):
    ts, _ = _setup(shape, rules, n)
    ref = listwise.reference_from(_setup(shape, rules, n, seed=6)[0])
    bsh = listwise.listwise_batch_shardings(batch, ts.mesh, ts.rules)
    fn = listwise.CompiledListwiseStep(ts, ref[0], ref[2], bsh, cfg)
    st, metrics = ts.state, []
    for _ in range(2):
      if n == 1:
        margins.append(_reward_margins(ts, st, ref, batch, cfg.beta))
      st, m = fn(st, ref[1], state.shard_batch(batch, bsh))
      metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
    out.append(metrics)
  for got, want, margin in zip(out[1], out[0], margins, strict=True):
    for k in want:
      if k != "reward_accuracy":
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    clear = np.abs(margin) > 1e-2
    assert ex_w[clear].sum() >= 0.75 * ex_w.sum()  # the check is not vacuous
    assert 0 < ex_w[margin > 0].sum() < ex_w.sum()  # nor all-or-nothing
    low = ex_w[clear & (margin > 0)].sum() / denom
    high = low + ex_w[~clear].sum() / denom
    for run in (want, got):
      assert low - 1e-6 <= run["reward_accuracy"] <= high + 1e-6, (run, margin)


def test_train_phase_stops_on_nan_before_checkpointing(tmp_path):
  # NaN rewards at data position 1 make step 2's loss NaN; step 2 is a save
  # step, and the guard runs before the save: only step 1 is on disk.
  cfg = listwise.ListwiseTrainConfig(
    num_steps=4, log_every=10, loss=listwise.ListwiseConfig(beta=0.5),
    checkpoint=checkpoints.CheckpointConfig(save_every_steps=1, keep_last=3),
  )  # fmt: skip
  batches = [_batch(seed=s) for s in range(4)]
  batches[1]["rewards"] = np.full_like(batches[1]["rewards"], np.nan)

  def stream(pos):
    yield from batches[pos:]

  ts, _ = _setup()
  with pytest.raises(step_loop.NonFiniteMetricsError) as err:
    listwise.train_phase(
      ts, listwise.reference_from(ts), stream, cfg, tmp_path, meta={"phase": 1}
    )
  assert err.value.step == 2 and "loss" in err.value.metrics
  assert "stopped at step 2" in str(err.value) and "data position 1" in str(err.value)
  ckpt = checkpoints.Checkpointer(tmp_path)
  assert ckpt.all_steps() == [1]
  good, meta = ckpt.restore(ts)
  ckpt.close()
  assert meta == {"phase": 1, "data_position": 1} and good.step == 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(good.state))


def test_shipped_alignment_raises_the_chosen_logprob_on_shared_prefix_lists():
  # The DPO failure mode of the issue: chosen and rejected SIDs share the
  # first four levels (same category) and differ only in the last one. Plain
  # DPO only constrains the chosen-minus-rejected gap and may lower both;
  # the shipped PARS loss (configs.pars_config(): the DPO-Positive term) must
  # move the chosen log-probability UP from the reference.
  from onesearch_jax import configs

  loss_cfg = configs.pars_config().pars.phase1.loss
  assert loss_cfg.reg_weight > 0 or loss_cfg.sft_weight > 0
  rng = np.random.default_rng(7)
  b, k = 8, 3
  prompts = synthetic.make_batch(CFG, b, 7, seed=11)
  chosen = synthetic.random_sids(rng, b, SID_RANGES)
  rejected = np.repeat(chosen[:, None], k, axis=1)
  lo, hi = SID_RANGES[-1]
  for i in range(b):  # distinct last-level codes, none equal to the chosen one
    pool = [c for c in range(lo, hi) if c != chosen[i, -1]]
    rejected[i, :, -1] = rng.choice(pool, k, replace=False)
  rw = np.concatenate([np.ones((b, 1)), np.full((b, k), 0.2)], 1)
  batch = listwise.make_batch(
    {"encoder_input_tokens": prompts["encoder_input_tokens"]}, chosen, rejected, rw
  )
  ts, _ = _setup(lr=1e-2)
  ref = listwise.reference_from(ts)
  bsh = listwise.listwise_batch_shardings(batch, ts.mesh, ts.rules)
  fn = listwise.CompiledListwiseStep(ts, ref[0], ref[2], bsh, loss_cfg)
  st = ts.state
  sharded = state.shard_batch(batch, bsh)
  for _ in range(15):
    st, m = fn(st, ref[1], sharded)
  policy = nnx.merge(ts.graphdef, st)[0]
  ref_model = nnx.merge(ref[0], ref[1])
  pol_lp = np.asarray(listwise.sequence_logprobs(policy, batch))
  ref_lp = np.asarray(listwise.sequence_logprobs(ref_model, batch))
  assert pol_lp[:, 0].mean() > ref_lp[:, 0].mean() + 0.05, (pol_lp[:, 0], ref_lp[:, 0])
  # ... and the chosen one now beats every rejected one by more than before.
  gap = pol_lp[:, :1] - pol_lp[:, 1:]
  assert (gap > ref_lp[:, :1] - ref_lp[:, 1:]).all()


def test_distill_loss_matches_hand_formula_and_masks():
  pol = np.array([[-1.0, -2.0, -3.0, -9.0]])
  ref = np.array([[-1.5, -1.0, -2.5, -9.0]])
  keys = np.array([[1.0, 0.4, 0.1, 5.0]])  # slot 3 absent: its key is ignored
  mask = np.array([[True, True, True, False]])
  cfg = listwise.ListwiseConfig(kind="distill", temperature=0.5, reg_weight=2.0)
  loss, parts = listwise.listwise_distill_loss(
    jnp.asarray(pol), jnp.asarray(ref), jnp.asarray(keys), jnp.asarray(mask), cfg
  )
  q = np.exp(keys[0, :3] / 0.5) / np.exp(keys[0, :3] / 0.5).sum()
  log_p = pol[0, :3] - np.log(np.exp(pol[0, :3]).sum())
  lse = lambda x: np.log(np.exp(x).sum())  # noqa: E731
  reg = 2.0 * max(lse(ref[0, :3]) - lse(pol[0, :3]), 0.0)
  np.testing.assert_allclose(float(loss[0]), -(q * log_p).sum() + reg, rtol=1e-6)
  assert float(parts["accuracy"][0]) == 1.0  # both put slot 0 first
  # a row with one present slot has nothing to order: loss 0, finite gradient
  one = jnp.asarray([[True, False, False, False]])
  loss1, _ = listwise.listwise_distill_loss(
    jnp.asarray(pol), jnp.asarray(ref), jnp.asarray(keys), one, cfg
  )
  g = jax.grad(
    lambda p: listwise.listwise_distill_loss(
      p, jnp.asarray(ref), jnp.asarray(keys), one, cfg
    )[0].sum()  # fmt: skip
  )(jnp.asarray(pol))
  assert float(loss1[0]) == 0.0 and np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="kind"):
    listwise.ListwiseConfig(kind="ppo")


def test_distill_steps_move_the_policy_order_towards_the_teacher():
  # Teacher keys put the LAST slot first; a few steps must raise its share of
  # the list's probability above the reference's, and keep the list's mass.
  rng = np.random.default_rng(3)
  b, k = 8, 3
  prompts = synthetic.make_batch(CFG, b, 7, seed=5)
  sids = np.stack([synthetic.random_sids(rng, b, SID_RANGES) for _ in range(k + 1)], 1)
  keys = np.tile(np.array([0.0, 0.1, 0.2, 1.0]), (b, 1))
  batch = listwise.make_batch(
    {"encoder_input_tokens": prompts["encoder_input_tokens"]},
    sids[:, 0], sids[:, 1:], keys,
  )  # fmt: skip
  cfg = listwise.ListwiseConfig(kind="distill", temperature=0.2, reg_weight=1.0)
  ts, _ = _setup(lr=1e-2)
  ref = listwise.reference_from(ts)
  bsh = listwise.listwise_batch_shardings(batch, ts.mesh, ts.rules)
  fn = listwise.CompiledListwiseStep(ts, ref[0], ref[2], bsh, cfg)
  st, sharded = ts.state, state.shard_batch(batch, bsh)
  for _ in range(15):
    st, m = fn(st, ref[1], sharded)
  policy = nnx.merge(ts.graphdef, st)[0]
  pol_lp = np.asarray(listwise.sequence_logprobs(policy, batch))
  ref_lp = np.asarray(listwise.sequence_logprobs(nnx.merge(ref[0], ref[1]), batch))

  def share(lp):
    return np.exp(lp[:, 3] - np.log(np.exp(lp).sum(-1)))

  assert share(pol_lp).mean() > share(ref_lp).mean() + 0.2
  assert (
    np.log(np.exp(pol_lp).sum(-1)).mean() > np.log(np.exp(ref_lp).sum(-1)).mean() - 0.1
  )


def _catalogue(rng, n_items=40):
  """[N, 5] level codes of a random catalogue and their tokens."""
  starts = np.array([s for s, _ in SID_RANGES])
  codes = np.unique(rng.integers(0, 8, size=(n_items, 5)), axis=0).astype(np.int32)
  return codes, codes + starts


def _trie_logprob_by_hand(logits, sid_codes, catalogue):
  """log π of one SID under the trie mask, from full logits [T, V] (numpy)."""
  total, prefix = 0.0, catalogue
  for lvl, (start, end) in enumerate(SID_RANGES):
    children = np.unique(prefix[:, lvl])
    level = logits[lvl, start:end]
    lse = np.log(np.exp(level[children] - level.max()).sum()) + level.max()
    total += level[sid_codes[lvl]] - lse
    prefix = prefix[prefix[:, lvl] == sid_codes[lvl]]
  return total


def test_trie_logprobs_renormalise_each_level_over_the_prefix_children():
  from onesearch_jax import decoding
  from onesearch_jax.model.transformer import create_model

  rng = np.random.default_rng(7)
  codes, tokens = _catalogue(rng)
  trie = decoding.catalogue_trie(codes, SID_RANGES)
  m = create_model(CFG, seed=2)
  b, k = 3, 2
  pick = rng.integers(0, len(codes), size=(b, k + 1))
  prompts = synthetic.make_batch(CFG, b, 7, seed=4)
  mask = np.ones((b, k), bool)
  mask[1, 1] = False  # an absent slot scores 0
  batch = listwise.make_batch(
    {"encoder_input_tokens": prompts["encoder_input_tokens"]},
    tokens[pick[:, 0]], tokens[pick[:, 1:]], np.zeros((b, k + 1)), mask,
  )  # fmt: skip
  got = np.asarray(
    jax.jit(lambda bb: listwise.sequence_logprobs(m, bb, trie=trie))(batch)
  )
  plain = np.asarray(jax.jit(lambda bb: listwise.sequence_logprobs(m, bb))(batch))
  forward = jax.jit(lambda bb: m(bb))
  for x in range(b):
    for slot in range(k + 1):
      if slot and not mask[x, slot - 1]:
        assert got[x, slot] == 0.0
        continue
      single = {
        "encoder_input_tokens": batch["encoder_input_tokens"][x : x + 1],
        "decoder_input_tokens": batch["decoder_input_tokens"][x : x + 1, slot],
        "decoder_target_tokens": batch["decoder_target_tokens"][x : x + 1, slot],
      }
      logits = np.asarray(forward(single))[0].astype(np.float64)
      want = _trie_logprob_by_hand(logits, codes[pick[x, slot]], codes)
      np.testing.assert_allclose(got[x, slot], want, rtol=1e-4, atol=1e-4)
      # the trie mask renormalises over fewer tokens: never below the
      # level-restricted log-prob (which also scores EOS, <= 0)
      assert got[x, slot] >= plain[x, slot] - 1e-4
  cfg = listwise.ListwiseConfig(trie_logprobs=True)
  with pytest.raises(ValueError, match="trie"):
    listwise.objective(m, m, batch, cfg)


def test_trie_distill_with_the_references_keys_has_zero_gradient():
  # keys = the reference's own trie log-probs at temperature 1: the teacher is
  # the policy's list distribution at the start, so the KD gradient is zero.
  from onesearch_jax import decoding

  rng = np.random.default_rng(8)
  codes, tokens = _catalogue(rng)
  trie = decoding.catalogue_trie(codes, SID_RANGES)
  ts, _ = _setup()
  ref = listwise.reference_from(ts)
  model = nnx.merge(ref[0], ref[1])
  b, k = 4, 3
  pick = rng.integers(0, len(codes), size=(b, k + 1))
  prompts = synthetic.make_batch(CFG, b, 7, seed=6)
  batch = listwise.make_batch(
    {"encoder_input_tokens": prompts["encoder_input_tokens"]},
    tokens[pick[:, 0]], tokens[pick[:, 1:]], np.zeros((b, k + 1)),
  )  # fmt: skip
  cfg = listwise.ListwiseConfig(kind="distill", trie_logprobs=True)
  graphdef, params = nnx.split(model)

  @jax.jit
  def grad_norm(keys):
    def loss(p):
      mm = nnx.merge(graphdef, p)
      return listwise.objective(mm, model, dict(batch, rewards=keys), cfg, None, trie)[
        0
      ]

    return optax.global_norm(jax.grad(loss)(params))

  own = np.array(
    jax.jit(lambda bb: listwise.sequence_logprobs(model, bb, trie=trie))(batch)
  )
  assert float(grad_norm(own)) < 1e-5
  # a teacher that prefers slot 0 more than the policy does moves it: nonzero
  own[:, 0] += 2.0
  assert float(grad_norm(own)) > 1e-3


def test_match_loss_is_the_centred_squared_gap_and_ignores_a_constant():
  pol = np.array([[-1.0, -2.5, -4.0, -7.0], [-0.5, -3.0, -1.0, -2.0]])
  keys = np.array([[-1.2, -2.0, -5.0, -6.0], [0.0, -1.0, -2.0, np.inf * -1]])
  mask = np.array([[True, True, True, True], [True, True, True, False]])
  cfg = listwise.ListwiseConfig(kind="match", temperature=2.0)
  loss, parts = listwise.listwise_match_loss(
    jnp.asarray(pol), jnp.asarray(pol), jnp.asarray(keys), jnp.asarray(mask), cfg
  )
  for x in range(2):
    present = mask[x] & np.isfinite(keys[x])
    d = pol[x, present] - keys[x, present] / 2.0
    np.testing.assert_allclose(float(loss[x]), ((d - d.mean()) ** 2).mean(), rtol=1e-5)
  # policy = keys / T + any constant: zero loss and zero gradient
  target = keys[:1] / 2.0 - 3.7
  g = jax.grad(
    lambda p: listwise.listwise_match_loss(
      p, p, jnp.asarray(keys[:1]), jnp.ones((1, 4), bool), cfg
    )[0].sum()
  )(jnp.asarray(target))
  np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
  # row 0: the teacher ranks slot 0 first, the policy too
  assert float(parts["accuracy"][0]) == 1.0
