"""SFT phases 1 -> 2 -> 3: hand-off, resume, artefacts, load_trained, eval_inputs."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import sharding as sh
from onesearch_jax.data import model_batches, museq
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.model import model as model_lib
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.train import checkpoints, sft, sft_config, sft_load, state

# Every test here shares one tiny 3-phase SFT run (sft_run): ~1-5 min of
# compiling on 2 busy cores, so the module is in the slow set.
pytestmark = pytest.mark.slow


def _params(model) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _restorer(out_dir):
  """phase, step -> (parameters, meta) of that saved step (one device).

  One TrainState serves every phase: the phases' optimizers differ only in
  their schedule, not in the state's structure.
  """
  cfg = sft_load.read_config(out_dir)
  raw = json.loads((out_dir / "model_config.json").read_text())
  model_cfg = ModelConfig(**{**raw, "sid_ranges": tuple(map(tuple, raw["sid_ranges"]))})
  opt = cfg.phase_train_config(0).optimizer
  ts = state.create_train_state(
    model_cfg, opt, sh.single_device_mesh(), sh.DP_RULES, seed=0
  )

  def restore(phase, step):
    ckpt = checkpoints.Checkpointer(out_dir / phase / "checkpoints")
    got, meta = ckpt.restore(ts, step=step)
    ckpt.close()
    return _params(got.merge()[0]), meta

  return restore


def test_three_phases_chain_and_write_their_artefacts(sft_run):
  res, lines = sft_run
  out = res.out_dir
  assert res.finished and len(res.params_hash) == 64
  for name, n in zip(sft_config.PHASES, (3, 3, 4), strict=True):
    s = res.phases[name]
    assert s.finished and s.steps == n and not s.skipped
    assert [r["step"] for r in s.train] == list(range(1, n + 1))
    assert [r["step"] for r in s.evals] == list(range(2, n + 1, 2))
    assert all(r["sid_level_violations"] == 0 for r in s.train)
    assert (out / name / sft_load.RESULT).exists()
    ckpt = checkpoints.Checkpointer(out / name / "checkpoints")
    assert ckpt.latest_step() == n
    ckpt.close()
  hist = json.loads((out / "history.json").read_text())
  assert set(hist) == set(sft_config.PHASES)
  assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
  assert any(
    "phase3 step 4/4: loss" in x and "steps/s" in x and "ETA" in x for x in lines
  )
  # Phase 2 starts from phase 1's final parameters: its first step runs at
  # lr 0 (warmup from 0), so its step-1 checkpoint equals phase 1's last.
  assert res.phases["phase2"].train[0]["learning_rate"] == 0.0
  restore = _restorer(out)
  p1, _ = restore("phase1", 3)
  p2, meta = restore("phase2", 1)
  assert meta["data_position"] == 1
  for a, b in zip(p1, p2, strict=True):
    np.testing.assert_array_equal(a, b)
  p3, _ = restore("phase3", 1)
  p2_end, _ = restore("phase2", 3)
  for a, b in zip(p2_end, p3, strict=True):
    np.testing.assert_array_equal(a, b)


def test_model_config_matches_the_vocabulary(sft_run, sft_sids):
  res, _ = sft_run
  _, vocab, cfg = sft_load.load_trained(res.out_dir)
  assert cfg.vocab_size == vocab.vocab_size
  assert cfg.emb_placeholder_id == vocab.token_id("[EMB]")
  assert cfg.num_query_tokens == 3 and cfg.use_qformer
  table = SIDTable.from_artefact(sft_sids[0])
  assert cfg.seq_feature_dim == table.dim
  # Every item's 5 SID tokens fall in their own level's range.
  for item in table.item_ids:
    ids = vocab.encode(table.item_sid(item))
    assert len(ids) == 5
    for level, i in enumerate(ids):
      lo, hi = cfg.sid_ranges[level]
      assert lo <= i < hi, (item, level, i, cfg.sid_ranges)


def test_load_trained_reproduces_the_last_eval(sft_run):
  res, _ = sft_run
  model, vocab, cfg = sft_load.load_trained(res.out_dir)
  spec = model_batches.read_spec(res.out_dir)
  reg = model_batches.register_from_spec(spec)
  run_cfg = sft_load.read_config(res.out_dir)
  batches = model_batches.fixed_batches(
    reg.tasks["eval_click"],
    batch_size=run_cfg.eval_batch_size,
    lengths=run_cfg.lengths[2],
    long_seq=True,
    num_batches=run_cfg.eval_batches,
    vocabulary=vocab,
  )
  sums = model_lib.metric_sums(model, batches[0], run_cfg.train.loss)
  acc = float(sums["correct_sum"] / sums["weight_sum"])
  loss = float(sums["loss_sum"] / sums["weight_sum"])
  last = res.phases["phase3"].evals[-1]
  assert float(sums["weight_sum"]) == last["eval_tokens"] == 8 * 5  # SID tokens only
  np.testing.assert_allclose(acc, last["eval_accuracy"], atol=1e-6)
  np.testing.assert_allclose(loss, last["eval_loss"], rtol=1e-4)
  # The hash of the loaded parameters is the run's.
  ts = state.create_train_state(
    cfg,
    run_cfg.phase_train_config(2).optimizer,
    sh.single_device_mesh(),
    sh.DP_RULES,
  )
  _, opt = ts.merge()
  ts = state.with_state(ts, nnx.state((model, opt)))
  assert state.params_hash(ts) == res.params_hash


def test_killed_run_resumes_to_the_same_parameters(sft_run, tmp_path, tiny_sft_config):
  """Phase 3 stopped after 2 steps, then re-run: same data, same params."""
  full, _ = sft_run
  out = tmp_path / "resumed"
  shutil.copytree(full.out_dir, out)
  shutil.rmtree(out / "phase3")
  spec = model_batches.read_spec(full.out_dir)
  lines: list[str] = []
  part = sft.run_sft(
    spec.world_dir,
    spec.sid_dir,
    out,
    tiny_sft_config(),
    sid_hash=spec.sid_hash,
    log=lines.append,
    stop_after=(2, 2),
  )
  assert not part.finished and part.params_hash == ""
  assert part.phases["phase1"].skipped and part.phases["phase2"].skipped
  assert part.phases["phase3"].steps == 2
  assert not (out / "phase3" / sft_load.RESULT).exists()
  rest = sft.run_sft(
    spec.world_dir, spec.sid_dir, out, tiny_sft_config(), sid_hash=spec.sid_hash,
    log=lines.append,
  )  # fmt: skip
  assert rest.finished and rest.phases["phase3"].resumed_from == 2
  assert rest.params_hash == full.params_hash  # bitwise-identical parameters
  # The resumed half saw the uninterrupted run's batches 3 and 4: same losses.
  want = [r["loss"] for r in full.phases["phase3"].train]
  got = [r["loss"] for r in rest.phases["phase3"].train]
  assert got == want
  with pytest.raises(ValueError, match="different SFT config"):
    sft.run_sft(
      spec.world_dir, spec.sid_dir, out, tiny_sft_config(steps=(3, 3, 5)),
      sid_hash=spec.sid_hash, log=lines.append,
    )  # fmt: skip
  with pytest.raises(ValueError, match="SID artefact"):
    shutil.rmtree(out / "phase3" / "checkpoints" / "4")  # resume from step 3
    (out / "phase3" / sft_load.RESULT).unlink()
    sft.run_sft(
      spec.world_dir, spec.sid_dir, out, tiny_sft_config(), sid_hash="",
      log=lines.append,
    )  # fmt: skip


def test_eval_inputs_from_the_output_dir(sft_run, sft_world):
  res, _ = sft_run
  rows = {}
  for line in open(sft_world / "recall.jsonl", encoding="utf-8"):
    r = json.loads(line)
    rows[r["session_id"]] = r
  n = 0
  _, vocab, _ = sft_load.load_trained(res.out_dir)
  for batch, metas in sft_load.eval_inputs(res.out_dir, "eval_click", batch_size=16):
    assert batch["encoder_input_tokens"].shape[1] == 96
    assert batch["long_seq_features"].shape[1:] == (9, 8)
    assert len(metas) == batch["encoder_input_tokens"].shape[0]
    for i, m in enumerate(metas):
      r = rows[m["session_id"]]
      assert r["split"] == "test" and r["user_id"] == m["user_id"]
      assert m["target_item_ids"] == r["clicked_item_ids"]
      text = vocab.decode(batch["encoder_input_tokens"][i].tolist())
      assert f"[Q]{m['query']}[QID]" in text and m["query"] == r["query"]
    n += len(metas)
  assert n == res.counts["eval_click"] > 0


def test_phase_members_rates_and_missing_kinds():
  """Rates are multiplier x example count; a kind an ablation switched off is
  left out with a note; unknown kinds and empty phases are errors."""
  import dataclasses
  import types

  reg = types.SimpleNamespace(
    tasks={"s3_personal": "p_s3_personal", "s1_title_to_sid": "p_s1_title_to_sid"},
    counts={"s3_personal": 100, "s1_title_to_sid": 40},
    mixtures={"phase3": "p_phase3"},
  )
  cfg = sft_config.SFTConfig(
    schedule="continuous",
    phase_tasks=(
      (),
      (("s1_title_to_sid", 1.0),),
      (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.5)),
    ),
  )
  notes = []
  got = sft.phase_members(cfg, 2, reg, notes.append)
  assert got == [("p_s3_personal", 100.0), ("p_s1_title_to_sid", 20.0)]
  assert notes and "s3_window" in notes[0]
  assert (
    sft.phase_members(cfg, 0, types.SimpleNamespace(mixtures={"phase1": "m1"})) == "m1"
  )
  bad = dataclasses.replace(cfg, phase_tasks=((), (("s9_nope", 1.0),), ()))
  with pytest.raises(ValueError, match="unknown training task kind"):
    sft.phase_members(bad, 1, reg)
  empty = dataclasses.replace(cfg, phase_tasks=((), (("s3_window", 1.0),), ()))
  with pytest.raises(ValueError, match="none of"):
    sft.phase_members(empty, 1, reg)
  # The phrase task without its switch is an error, not a silent skip.
  phrases = dataclasses.replace(
    cfg, phase_tasks=((), (("s3_personal", 1.0), ("s2_phrase_to_sidi", 0.5)), ())
  )
  with pytest.raises(ValueError, match="item_phrases"):
    sft.phase_members(phrases, 1, reg)
  on = dataclasses.replace(phrases, museq=museq.MuSeqConfig(item_phrases="clicks"))
  reg.tasks["s2_phrase_to_sidi"] = "p_s2_phrase_to_sidi"
  reg.counts["s2_phrase_to_sidi"] = 60
  assert sft.phase_members(on, 1, reg) == [
    ("p_s3_personal", 100.0),
    ("p_s2_phrase_to_sidi", 30.0),
  ]


def test_length_bucketed_phase3_trains_and_resumes(sft_run, tmp_path, tiny_sft_config):
  """Phase 3 with length buckets: finite losses, and a run stopped after 2
  steps resumes to the uninterrupted bucketed run's parameters (the batch
  widths vary from step to step; each width compiles its own step)."""
  full, _ = sft_run
  spec = model_batches.read_spec(full.out_dir)
  cfg = tiny_sft_config(length_buckets=(32, 48, 64))
  runs = {}
  for name, stop in (("whole", None), ("halves", (2, 2))):
    out = tmp_path / name
    shutil.copytree(full.out_dir, out)
    shutil.rmtree(out / "phase3")
    (out / "sft_config.json").unlink(missing_ok=True)
    kw = {"stop_after": stop} if stop else {}
    runs[name] = sft.run_sft(
      spec.world_dir, spec.sid_dir, out, cfg, sid_hash=spec.sid_hash,
      log=lambda _: None, **kw,
    )  # fmt: skip
  whole = runs["whole"]
  assert whole.finished and whole.phases["phase3"].steps == 4
  assert all(np.isfinite(r["loss"]) for r in whole.phases["phase3"].train)
  rest = sft.run_sft(
    spec.world_dir, spec.sid_dir, tmp_path / "halves", cfg, sid_hash=spec.sid_hash,
    log=lambda _: None,
  )  # fmt: skip
  assert rest.finished and rest.phases["phase3"].resumed_from == 2
  assert rest.params_hash == whole.params_hash


def test_phase_batches_is_the_trainers_iterator(monkeypatch):
  """phase_batches: the phase's members, the phase seed, lengths, buckets;
  the long-seq feature and teacher pairs only in phase 3; per-host batch,
  shard and bucket overrides."""
  import dataclasses
  import types

  import seqio

  monkeypatch.setattr(
    model_batches.pipeline, "has_long_seq", lambda name: name.startswith("p_s3")
  )
  reg = types.SimpleNamespace(
    tasks={"s3_personal": "p_s3_personal", "s1_title_to_sid": "p_s1_title_to_sid"},
    counts={"s3_personal": 100, "s1_title_to_sid": 40},
    mixtures={},
    long_seq_dim=16,
  )
  cfg = sft_config.SFTConfig(
    schedule="continuous",
    batch_size=8,
    lengths=((20, 6), (24, 6), (40, 6)),
    length_buckets=(16, 32),
    phase_tasks=(
      (("s1_title_to_sid", 1.0),),
      (("s1_title_to_sid", 1.0),),
      (("s3_personal", 1.0), ("s1_title_to_sid", 0.5)),
    ),
  )
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=3))
  b0 = sft.phase_batches(cfg, 0, reg, use_qformer=True)
  assert b0.members == [("p_s1_title_to_sid", 40.0)]
  assert (b0.batch_size, b0.lengths, b0.seed) == (8, (20, 6), 3000)
  assert (b0.long_seq, b0.teacher, b0.use_cached) == (False, False, False)
  assert b0.length_buckets == (16,)  # bounds >= the phase's input length go
  b2 = sft.phase_batches(
    cfg,
    2,
    reg,
    use_qformer=True,
    batch_size=4,
    shard_info=None,
    length_buckets=(),
  )
  assert b2.members == [("p_s3_personal", 100.0), ("p_s1_title_to_sid", 20.0)]
  assert (b2.batch_size, b2.lengths, b2.seed) == (4, (40, 6), 3020)
  assert (b2.long_seq, b2.long_seq_dim, b2.length_buckets) == (True, 16, ())
  assert not sft.phase_batches(cfg, 2, reg, use_qformer=False).long_seq
  two_hosts = sft.phase_batches(
    cfg, 1, reg, use_qformer=True, shard_info=seqio.ShardInfo(1, 2), length_buckets=()
  )
  assert two_hosts.shard_info == seqio.ShardInfo(1, 2)
  cached = dataclasses.replace(cfg, task_cache_dir="/tmp/cache")
  assert sft.phase_batches(cached, 1, reg, use_qformer=True).use_cached
  from onesearch_jax.v2.sdft import SDFTConfig

  distil = dataclasses.replace(
    cfg,
    sdft=SDFTConfig(),
    museq=dataclasses.replace(cfg.museq, keywords="builtin", keywords_in="teacher"),
  )
  assert [
    sft.phase_batches(distil, k, reg, use_qformer=True).teacher for k in range(3)
  ] == [
    False,
    False,
    True,
  ]


def test_phase3_steps_from_passes_run_write_and_reload(
  sft_run, tmp_path, tiny_sft_config
):
  """steps[2] = 0: phase 3 runs ceil(passes x rate-weighted rows / batch)
  steps, writes them to phase_steps.json, read_config / load_trained see
  them, and a re-run of the finished directory is accepted as it is."""
  full, _ = sft_run
  spec = model_batches.read_spec(full.out_dir)
  out = tmp_path / "passes"
  shutil.copytree(full.out_dir, out)
  shutil.rmtree(out / "phase3")
  (out / "sft_config.json").unlink()
  base = tiny_sft_config()
  weights = dict(base.phase_tasks[2])
  rows = sum(m * full.counts[k] for k, m in weights.items() if k in full.counts)
  passes = 4.5 * base.batch_size / rows  # 4.5 batches -> 5 steps
  cfg = tiny_sft_config(steps=(3, 3, 0), phase3_passes=passes)
  lines: list[str] = []
  res = sft.run_sft(
    spec.world_dir, spec.sid_dir, out, cfg, sid_hash=spec.sid_hash, log=lines.append
  )
  assert res.finished and res.phases["phase3"].steps == 5
  assert any("phase3: 5 steps" in x for x in lines), lines
  record = json.loads((out / sft_load.PHASE_STEPS).read_text())
  assert record["steps"] == [3, 3, 5]
  assert record["phase3_weighted_rows"] == pytest.approx(rows)
  assert json.loads((out / "sft_config.json").read_text())["steps"] == [3, 3, 0]
  assert sft_load.read_config(out).steps == (3, 3, 5)
  assert json.loads((out / "history.json").read_text())["phase3"]["steps"] == 5
  sft_load.load_trained(out)  # restores phase 3's step 5
  again = sft.run_sft(
    spec.world_dir, spec.sid_dir, out, cfg, sid_hash=spec.sid_hash, log=lambda _: None
  )
  assert again.params_hash == res.params_hash
  assert all(s.skipped for s in again.phases.values())
