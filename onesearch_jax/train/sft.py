"""The SFT schedule: phase 1 -> 2 -> 3 on the seqio mixtures of a world + SIDs.

``run_sft(world_dir, sid_dir, out_dir, cfg, sid_hash=..., log=print)``

1. registers the tasks (``data.model_batches.register_from_spec``; the
   vocabulary is saved under ``out_dir/vocab``),
2. derives the ModelConfig from the vocabulary (``derive_model_config``),
3. trains ``phase1`` (semantic alignment), ``phase2`` (co-occurrence, its
   parameters initialised from phase 1) and ``phase3`` (personalised, from
   phase 2) with ``train.loop.train``; each phase runs its own optimizer
   schedule (fresh AdamW state, warmup + decay over its own steps) and a
   teacher-forced eval on the first batches of ``eval_click`` (loss and
   accuracy over the 5 SID target tokens only),
4. writes ``out_dir/phase{1,2,3}/checkpoints`` (orbax),
   ``out_dir/phase{k}/history.jsonl`` (every logged step and eval),
   ``out_dir/phase{k}/result.json`` (the phase is finished),
   ``out_dir/history.json``, ``out_dir/training_curves.png``,
   ``out_dir/model_config.json`` and ``out_dir/sft_config.json``; with phase
   3's steps made from ``cfg.phase3_passes`` (``steps[2] == 0``, the
   default) also ``out_dir/phase_steps.json`` (the steps it ran, the passes
   and the rate-weighted examples they came from).

Self-distillation (``cfg.sdft``, OneSearch-V2, docs/V2.md): phase 3 reads
paired batches (``TrainBatches(teacher=True)``: each row's student prompt,
without keywords, and its teacher prompt, with them, from the same example)
and its step minimises ``v2.sdft``'s L_SDFT; the history gains base, kl,
rdrop, adv and teacher_ce. Phases 1 and 2 and every eval are unchanged.
With ``cfg.sdft.teacher = "ema"`` the teacher is an EMA copy of the student
(phase 2's parameters at phase-3 start), saved in phase 3's checkpoints;
``params_hash``, eval and serving use the student.

A served parameter average (``cfg.param_ema``, ``train/param_ema.py``): phase
3 keeps an EMA of its parameters in the same slot, and ``params_hash``, eval,
serving and PARS use the average.

Resume: a finished phase (``result.json``) is skipped; an unfinished one
continues from its latest checkpoint at the saved data position (the loop's
contract), so a killed run loses at most ``checkpoint.save_every_steps``
steps and ends with the same parameters as an uninterrupted one.

The config and the derived ModelConfig are ``train.sft_config``'s, the
history and curves ``train.sft_history``'s; reading a finished run for
evaluation (``load_trained``, ``eval_inputs``) is ``train.sft_load``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import jax
import seqio

from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import model_batches, task_cache
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.train import loop, state
from onesearch_jax.train import sid_init as sid_init_lib
from onesearch_jax.train import summaries as summaries_lib
from onesearch_jax.train.sft_config import (
  PHASES,
  SFTConfig,
  artefact_opq_subspaces,
  config_to_dict,
  derive_model_config,
)
from onesearch_jax.train.sft_history import append_history, plot_curves, read_history
from onesearch_jax.train.sft_load import PHASE_STEPS, RESULT


@dataclasses.dataclass
class PhaseSummary:
  """One phase of a run."""

  name: str
  finished: bool
  steps: int  # optimizer steps reached
  seconds: float  # wall time of this call (0 when skipped)
  resumed_from: int | None
  skipped: bool
  train: list[dict]
  evals: list[dict]


@dataclasses.dataclass
class SFTResult:
  """What ``run_sft`` did."""

  out_dir: pathlib.Path
  model_cfg: ModelConfig
  phases: dict[str, PhaseSummary]
  params_hash: str  # of the final phase-3 parameters ("" if unfinished)
  counts: dict[str, int]  # examples per task kind
  seconds: float

  @property
  def finished(self) -> bool:
    return all(s.finished for s in self.phases.values()) and len(self.phases) == 3


def _spec(world_dir, sid_dir, out_dir: pathlib.Path, cfg: SFTConfig, sid_hash):
  return model_batches.DataSpec(
    world_dir=str(pathlib.Path(world_dir).resolve()),
    sid_dir=str(pathlib.Path(sid_dir).resolve()),
    sid_hash=sid_hash,
    vocab_dir=str((out_dir / "vocab").resolve()),
    prefix=cfg.prefix,
    museq=dataclasses.asdict(cfg.museq),
    sentencepiece=dataclasses.asdict(cfg.sentencepiece),
    eval_inputs_length=cfg.lengths[2][0],
  )


def _check_config(out_dir: pathlib.Path, cfg: SFTConfig) -> None:
  path = out_dir / "sft_config.json"
  want = config_to_dict(cfg)
  if path.exists():
    have = json.loads(path.read_text())
    if have != want:
      raise ValueError(
        f"{out_dir} holds a training run with a different SFT config "
        f"({path}); use a fresh directory (the pipeline rebuilds it for you)"
      )
  else:
    path.write_text(json.dumps(want, indent=2, sort_keys=True))


def _progress(name: str, phase_dir: pathlib.Path, total: int, batch_size: int, log):
  first = [True]

  def log_fn(step: int, m: dict[str, float]) -> None:
    if "eval_loss" in m:
      append_history(phase_dir, {"kind": "eval", **m, "step": step})
      log(
        f"[train] {name} eval @ step {step}: SID loss {m['eval_loss']:.3f}, "
        f"SID token accuracy {m['eval_accuracy']:.3f} "
        f"({int(m['eval_tokens'])} tokens)"
      )
      return
    append_history(phase_dir, {"kind": "train", **m, "step": step})
    note = " (this interval includes compiling)" if first[0] else ""
    first[0] = False
    distill = ""
    if "kl" in m:  # a self-distillation step (v2/sdft.py)
      distill = (
        f" (base {m['base']:.3f} kl {m['kl']:.4f} rdrop {m['rdrop']:.4f} "
        f"adv {m['adv']:.3f} teacher CE {m['teacher_ce']:.3f})"
      )
    log(
      f"[train] {name} step {step}/{total}: loss {m['loss']:.3f}{distill} "
      f"acc {m['accuracy']:.3f} lr {m.get('learning_rate', 0):.2e} "
      f"| {m['steps_per_sec']:.2f} steps/s, "
      f"{m['steps_per_sec'] * batch_size:.0f} examples/s, "
      f"ETA {m['eta_sec']:.0f} s{note}"
    )

  return log_fn


def run_sft(
  world_dir: str | pathlib.Path,
  sid_dir: str | pathlib.Path,
  out_dir: str | pathlib.Path,
  cfg: SFTConfig,
  *,
  sid_hash: str = "",
  log: Callable[[str], None] = print,
  stop_after: tuple[int, int] | None = None,
) -> SFTResult:
  """Runs (or resumes) the SFT phases 1 -> 2 -> 3.

  Args:
    world_dir: the world directory (KuaiSearch schema).
    sid_dir: the KHQE SID artefact directory.
    out_dir: where the vocabulary, checkpoints and history go.
    cfg: the schedule.
    sid_hash: the SID artefact's content hash ("" = do not check); stored
      in every checkpoint and checked on resume.
    log: progress printer.
    stop_after: (phase index 0..2, steps) stops that phase after that many
      steps of this call with a forced checkpoint (simulated preemption, for
      tests); the run then returns unfinished.

  Returns:
    SFTResult.
  """
  t_run = time.perf_counter()
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  n_opq = artefact_opq_subspaces(sid_dir)
  if cfg.lengths[2][1] < 3 + n_opq + 1:
    raise ValueError(
      f"SFTConfig.lengths[2] targets length {cfg.lengths[2][1]} cannot hold the "
      f"{3 + n_opq}-token SIDs of {sid_dir} plus EOS"
    )
  _check_config(out_dir, cfg)
  spec = _spec(world_dir, sid_dir, out_dir, cfg, sid_hash)
  t = time.perf_counter()
  if cfg.task_cache_dir:
    task_cache.adopt_vocabulary(cfg.task_cache_dir, spec.vocab_dir)
  registered = model_batches.register_from_spec(spec)
  model_batches.write_spec(out_dir, spec)
  log(
    f"[train] tasks registered in {time.perf_counter() - t:.1f} s: "
    + ", ".join(f"{k} {v}" for k, v in registered.counts.items())
  )
  if registered.skips:
    log(f"[train] examples not made (reason: count): {registered.skips}")
  cfg = _phase3_steps(out_dir, cfg, registered, log)
  vocabulary = registered.vocabulary
  model_cfg = derive_model_config(
    cfg.model,
    vocabulary,
    cfg.museq,
    registered.long_seq_dim,
    restrict_sid_levels=cfg.restrict_sid_levels,
    n_opq=n_opq,
  )
  (out_dir / "model_config.json").write_text(
    json.dumps(dataclasses.asdict(model_cfg), indent=2, sort_keys=True)
  )
  n_params = state.count_params(model_cfg)
  log(
    f"[train] model: d_model {model_cfg.d_model}, {model_cfg.num_encoder_layers}+"
    f"{model_cfg.num_decoder_layers} layers, vocab {model_cfg.vocab_size}, "
    f"Q-Former {'on' if model_cfg.use_qformer else 'off'}, {n_params / 1e6:.2f} M params"
  )
  nproc = jax.process_count()
  if cfg.batch_size % nproc:
    raise ValueError(f"batch_size {cfg.batch_size} not divisible by {nproc} hosts")
  host_batch = cfg.batch_size // nproc
  shard_info = None
  length_buckets = cfg.length_buckets
  if nproc > 1:
    shard_info = seqio.ShardInfo(jax.process_index(), nproc)
    if length_buckets:
      # Hosts would cut one global batch to different widths; padding every
      # batch to the phase length gives the same per-row math, only slower.
      log(f"[train] {nproc} hosts: length_buckets {length_buckets} off")
      length_buckets = ()
  if cfg.task_cache_dir:
    _enable_cache(cfg, spec, registered, log)
  eval_set: list[dict] = []
  if cfg.eval_batches and cfg.train.eval_every:
    eval_set = model_batches.fixed_batches(
      registered.tasks["eval_click"],
      batch_size=cfg.eval_batch_size,
      lengths=cfg.lengths[2],
      long_seq=model_cfg.use_qformer,
      num_batches=cfg.eval_batches,
      vocabulary=vocabulary,
    )
  without_long = [
    {k: v for k, v in b.items() if k != "long_seq_features"} for b in eval_set
  ]

  summaries: dict[str, PhaseSummary] = {}
  final_hash = ""
  for k, name in enumerate(PHASES):
    phase_dir = out_dir / name
    phase_dir.mkdir(exist_ok=True)
    train_cfg = cfg.phase_train_config(k)
    result_path = phase_dir / RESULT
    if result_path.exists():
      done = json.loads(result_path.read_text())
      tr, ev = read_history(phase_dir)
      summaries[name] = PhaseSummary(name, True, done["steps"], 0.0, None, True, tr, ev)
      final_hash = done.get("params_hash", "")
      log(f"[train] {name} finished earlier ({done['steps']} steps), skipping")
      continue
    batches = phase_batches(
      cfg,
      k,
      registered,
      use_qformer=model_cfg.use_qformer,
      batch_size=host_batch,
      shard_info=shard_info,
      length_buckets=length_buckets,
      log=log,
    )
    mixture = batches.name
    long_seq = batches.long_seq
    sdft = cfg.sdft if batches.teacher else None  # self-distillation: phase 3 only
    param_ema = cfg.param_ema if k == 2 else None  # the served average: phase 3
    evals = eval_set if long_seq else without_long
    init_from = out_dir / PHASES[k - 1] / "checkpoints" if k else None
    log(
      f"[train] {name}: {train_cfg.num_steps} steps of {_describe(mixture)}, batch "
      f"{cfg.batch_size}, lengths {cfg.lengths[k]}"
      + (f", parameters from {PHASES[k - 1]}" if k else "")
      + (f", self-distillation {_describe_sdft(sdft)}" if sdft else "")
      + (
        f", serving the parameter EMA (decay {param_ema.decay} from step "
        f"{param_ema.start_step})"
        if param_ema
        else ""
      )
      + " (compiling...)"
    )
    t = time.perf_counter()
    # TensorBoard scalars per phase (train/* and eval/* tags; process 0 only).
    writer = summaries_lib.SummaryWriter(phase_dir / "tensorboard")
    try:
      res = loop.train(
        model_cfg,
        train_cfg,
        cfg.mesh,
        batches,
        phase_dir,
        eval_batches=(lambda e=evals: e) if evals else None,
        sid_hash=sid_hash,
        init_from=init_from,
        stop_after=stop_after[1] if stop_after and stop_after[0] == k else None,
        sdft=sdft,
        param_ema=param_ema,
        init_params=(
          sid_init_lib.codebook_init(sid_dir, model_cfg)
          if cfg.sid_init and k == 0
          else None
        ),
        log_fn=summaries_lib.fan_out(
          _progress(name, phase_dir, train_cfg.num_steps, cfg.batch_size, log),
          writer,
        ),
      )
    finally:
      writer.close()
    seconds = time.perf_counter() - t
    if res.resumed_from is not None:
      log(f"[train] {name} resumed from step {res.resumed_from}")
    log(f"[train] {name} data: {batches.stats.format(cfg.lengths[k])}")
    step = res.state.step
    finished = step >= train_cfg.num_steps
    tr, ev = read_history(phase_dir)
    summaries[name] = PhaseSummary(
      name, finished, step, seconds, res.resumed_from, False, tr, ev
    )
    if not finished:
      log(f"[train] {name} stopped at step {step}/{train_cfg.num_steps}")
      break
    # The served parameters: the average where the phase keeps one.
    final_hash = state.params_hash(res.state, twin=param_ema is not None)
    result_path.write_text(
      json.dumps(
        {
          "steps": step,
          "seconds": round(seconds, 2),
          "params_hash": final_hash,
          "length_stats": dataclasses.asdict(batches.stats),
          "last_train": tr[-1] if tr else {},
          "last_eval": ev[-1] if ev else {},
        },
        indent=2,
        sort_keys=True,
      )
    )
    log(_phase_line(name, tr, ev, seconds))
  history = {
    n: {"steps": cfg.steps[i], "train": s.train, "eval": s.evals}
    for i, (n, s) in enumerate(summaries.items())
  }
  (out_dir / "history.json").write_text(json.dumps(history, indent=1, sort_keys=True))
  plot_curves(history, out_dir / "training_curves.png")
  result = SFTResult(
    out_dir=out_dir,
    model_cfg=model_cfg,
    phases=summaries,
    params_hash=final_hash if len(summaries) == 3 else "",
    counts=dict(registered.counts),
    seconds=time.perf_counter() - t_run,
  )
  if not result.finished:
    result.params_hash = ""
  return result


def phase3_weighted_rows(cfg: SFTConfig, registered) -> float:
  """Sum over phase 3's tasks of rate multiplier x examples: the examples one
  pass over every multiplier-1 task draws (``SFTConfig.with_phase3_rows``).
  For an empty ``phase_tasks[2]`` the seqio mixture's rates (each task's
  examples, ``data.tasks``)."""
  members = phase_members(cfg, 2, registered)
  if isinstance(members, str):
    mixture = seqio.get_mixture_or_task(members)
    return float(sum(mixture.get_rate(t) for t in mixture.tasks))
  return float(sum(rate for _, rate in members))


def resolve_phase3_steps(cfg: SFTConfig, registered) -> SFTConfig:
  """cfg with phase 3's steps made from ``phase3_passes`` over the registered
  tasks (what ``run_sft`` trains); cfg itself when ``steps[2] > 0``."""
  if cfg.steps[2] > 0:
    return cfg
  return cfg.with_phase3_rows(phase3_weighted_rows(cfg, registered))


def _phase3_steps(out_dir: pathlib.Path, cfg: SFTConfig, registered, log) -> SFTConfig:
  """cfg with phase 3's steps made from its passes (logged and written to
  ``out_dir/phase_steps.json``; a resumed run must make the same)."""
  if cfg.steps[2] > 0:
    return cfg
  rows = phase3_weighted_rows(cfg, registered)
  out = cfg.with_phase3_rows(rows)
  record = {
    "steps": list(out.steps),
    "phase3_passes": cfg.phase3_passes,
    "phase3_weighted_rows": rows,
  }
  path = out_dir / PHASE_STEPS
  if path.exists():
    have = json.loads(path.read_text())
    if have.get("steps") != record["steps"]:
      raise ValueError(
        f"{path}: this run made phase 3 {have.get('steps')} steps, now "
        f"{record['steps']} (the tasks' example counts changed); use a fresh "
        "directory"
      )
  else:
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
  log(
    f"[train] phase3: {out.steps[2]} steps = {cfg.phase3_passes:g} x {rows:,.0f} "
    f"rate-weighted examples / batch {cfg.batch_size} (sft_config.phase3_passes)"
  )
  return out


def _enable_cache(cfg: SFTConfig, spec, registered, log) -> None:
  """Checks the task cache against this run and points seqio at it."""
  fp = task_cache.fingerprint(
    spec.world_dir,
    spec.sid_dir,
    cfg.museq,
    cfg.sentencepiece,
    cfg.prefix,
  )
  task_cache.check(cfg.task_cache_dir, fp, spec.vocab_dir)
  names = set()
  for k in range(len(PHASES)):
    members = phase_members(cfg, k, registered)
    if isinstance(members, str):
      names.update(t.name for t in seqio.get_mixture_or_task(members).tasks)
    else:
      names.update(n for n, _ in members)
  task_cache.enable(cfg.task_cache_dir, sorted(names))
  log(f"[train] reading {len(names)} tasks from the task cache {cfg.task_cache_dir}")


def phase_batches(
  cfg: SFTConfig,
  k: int,
  registered,
  *,
  use_qformer: bool,
  batch_size: int | None = None,
  shard_info: seqio.ShardInfo | None = None,
  length_buckets: tuple[int, ...] | None = None,
  log: Callable[[str], None] | None = None,
) -> model_batches.TrainBatches:
  """Phase k's train iterator, as ``run_sft`` reads it (benchmarks build it
  here too, so they time the trainer's own pipeline).

  Args:
    cfg: the SFT config (phase tasks, lengths, seed, shuffle buffer, length
      buckets, task cache, self-distillation).
    k: phase index 0, 1, 2.
    registered: ``data.tasks.register_tasks``'s result.
    use_qformer: the model reads the long-seq features (phase 3 only).
    batch_size: per-host batch (None: ``cfg.batch_size``).
    shard_info: this host's shard (None: one host).
    length_buckets: None: ``cfg.length_buckets``; ``()`` turns them off.
    log: where ``phase_members`` reports listed kinds without examples.

  Returns:
    ``TrainBatches`` over ``phase_members(cfg, k, registered)``, seeded
    ``1000 * phase seed + 10 * k``; paired teacher batches under
    self-distillation in phase 3.
  """
  return model_batches.TrainBatches(
    phase_members(cfg, k, registered, log),
    long_seq_dim=registered.long_seq_dim,
    batch_size=cfg.batch_size if batch_size is None else batch_size,
    lengths=cfg.lengths[k],
    long_seq=k == 2 and use_qformer,
    seed=1000 * cfg.train.seed + 10 * k,
    shard_info=shard_info,
    shuffle_buffer=cfg.shuffle_buffer or None,
    length_buckets=cfg.length_buckets if length_buckets is None else length_buckets,
    use_cached=bool(cfg.task_cache_dir),
    teacher=k == 2 and cfg.sdft is not None,
  )


def phase_members(
  cfg: SFTConfig, k: int, registered, log: Callable[[str], None] | None = None
) -> str | list[tuple[str, float]]:
  """What phase k samples: its seqio mixture name, or the (task, rate) list
  of ``cfg.phase_tasks[k]`` (rate = multiplier x the task's examples).

  A listed kind with no examples (e.g. ``s3_window`` under the
  ``sliding_window=False`` ablation) is left out and reported through `log`.

  Raises:
    ValueError: a listed kind is unknown, or no listed kind has examples.
  """
  entry = cfg.phase_tasks[k]
  if not entry:
    return registered.mixtures[PHASES[k]]
  out, empty = [], []
  for kind, mult in entry:
    if kind not in corpus_lib.TRAIN_TASK_KINDS:
      raise ValueError(
        f"SFTConfig.phase_tasks[{k}]: unknown training task kind {kind!r}; "
        f"known: {list(corpus_lib.TRAIN_TASK_KINDS)}"
      )
    if kind == "s2_phrase_to_sidi" and cfg.museq.item_phrases == "none":
      raise ValueError(
        f"SFTConfig.phase_tasks[{k}] names {kind!r}, which only "
        "MuSeqConfig.item_phrases='items' or 'clicks' registers (e.g. "
        "sft_config.museq={'item_phrases': 'clicks'})"
      )
    if kind not in registered.tasks:
      empty.append(kind)
      continue
    out.append((registered.tasks[kind], float(mult) * registered.counts[kind]))
  if empty and log is not None:
    log(f"[train] {PHASES[k]}: no examples for {empty}; sampling the other tasks")
  if not out:
    raise ValueError(f"SFTConfig.phase_tasks[{k}]: none of {entry} has examples")
  return out


def _describe(mixture) -> str:
  if isinstance(mixture, str):
    return mixture
  total = sum(r for _, r in mixture)
  return ", ".join(f"{n} {r / total:.0%}" for n, r in mixture)


def _describe_sdft(sdft) -> str:
  on = [f"KL {sdft.kl_weight} (tau {sdft.temperature})"]
  if sdft.teacher == "ema":
    on.append(f"EMA teacher (decay {sdft.ema_decay})")
  if sdft.rdrop_weight:
    on.append(f"R-Drop {sdft.rdrop_weight}")
  if sdft.fgm_epsilon:
    on.append(f"FGM eps {sdft.fgm_epsilon}")
  if sdft.focal:
    on.append(f"focal gamma {sdft.focal_gamma} alpha {sdft.focal_alpha}")
  return ", ".join(on)


def _phase_line(name, tr, ev, seconds) -> str:
  parts = [f"[train] {name} done in {seconds:.0f} s"]
  if tr:
    parts.append(f"train loss {tr[0]['loss']:.3f} -> {tr[-1]['loss']:.3f}")
  if ev:
    parts.append(
      f"eval SID accuracy {ev[0]['eval_accuracy']:.3f} -> {ev[-1]['eval_accuracy']:.3f}"
    )
  return "; ".join(parts)
