"""The SFT schedule: stage 1 -> 2 -> 3 on the seqio mixtures of a world + SIDs.

``run_sft(world_dir, sid_dir, out_dir, cfg, sid_hash=..., log=print)``

1. registers the tasks (``data.model_batches.register_from_spec``; the
   vocabulary is saved under ``out_dir/vocab``),
2. derives the ModelConfig from the vocabulary (``derive_model_config``),
3. trains ``stage1`` (semantic alignment), ``stage2`` (co-occurrence, its
   parameters initialised from stage 1) and ``stage3`` (personalised, from
   stage 2) with ``train.loop.train``; each stage runs its own optimizer
   schedule (fresh AdamW state, warmup + decay over its own steps) and a
   teacher-forced eval on the first batches of ``eval_click`` (loss and
   accuracy over the 5 SID target tokens only),
4. writes ``out_dir/stage{1,2,3}/checkpoints`` (orbax),
   ``out_dir/stage{k}/history.jsonl`` (every logged step and eval),
   ``out_dir/stage{k}/result.json`` (the stage is finished),
   ``out_dir/history.json``, ``out_dir/training_curves.png``,
   ``out_dir/model_config.json`` and ``out_dir/sft_config.json``.

Resume: a finished stage (``result.json``) is skipped; an unfinished one
continues from its latest checkpoint at the saved data position (the loop's
contract), so a killed run loses at most ``checkpoint.save_every_steps``
steps and ends with the same parameters as an uninterrupted one.

For evaluation: ``load_trained(out_dir)`` gives the stage-3 model,
vocabulary and ModelConfig; ``eval_inputs(out_dir, kind, batch_size)`` the
encoder inputs with per-row session metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from onesearch_jax import config_io
from onesearch_jax import sharding as sh
from onesearch_jax.data import corpus as corpus_lib
from onesearch_jax.data import eval_batches, model_batches, museq
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.khqe import artefact
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train import checkpoints, loop, state
from onesearch_jax.train import sid_init as sid_init_lib
from onesearch_jax.train import summaries as summaries_lib
from onesearch_jax.world import jsonl

STAGES = ("stage1", "stage2", "stage3")
RESULT = "result.json"
HISTORY = "history.jsonl"


# The main job's SFT task lists (docs/TRAINING.md, "The recipe"): SID targets
# only; stage 2 adds query -> clicked-item SID pairs; title -> SID indexing is
# replayed in stages 2 and 3 (rate = multiplier x the task's example count).
# SFTConfig.stage_tasks defaults to it.
MAIN_STAGE_TASKS = (
  (("s1_title_to_sid", 1.0), ("s1_query_to_sid", 1.0)),
  (("s2_query_to_sidi", 1.0), ("s2_sidq_to_sidi", 1.0), ("s1_title_to_sid", 0.5)),
  (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.2)),
)


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """The three SFT stages; the defaults are the main job's schedule (the
  data-efficient recipe of docs/TRAINING.md), which ``configs.sft_config()``
  and gin/runs/main.gin reproduce.

  Attributes:
    model: the model sizes (default: the "main" preset); vocab_size,
      sid_ranges, emb_placeholder_id, num_query_tokens and seq_feature_dim
      are replaced by the values the vocabulary and SID artefact imply
      (``derive_model_config``).
    train: the per-stage loop settings (log/eval cadence, seed, loss,
      optimizer, checkpoints); num_steps (1 here, a placeholder) and
      optimizer.total_steps are set to each stage's steps.
    mesh: device mesh and sharding rules.
    steps: optimizer steps of stage 1, 2, 3.
    batch_size: global batch size (split over hosts, then the data axes).
    lengths: (inputs, targets) token lengths of stage 1, 2, 3; stage 3's
      are also the eval set's.
    eval_batches: batches of eval_click in the teacher-forced eval.
    eval_batch_size: rows per eval batch.
    museq: Mu-Seq settings and ablation switches.
    sentencepiece: the text vocabulary's settings.
    prefix: seqio task name prefix.
    restrict_sid_levels: per-level SID softmax (``derive_model_config``).
    shuffle_buffer: examples per task in the train shuffle buffer (0 = the
      seqio task's own, 10,000); filling it is the cost of a stage's first
      batch.
    stage_tasks: per stage, ((task kind, rate multiplier), ...): the stage
      samples each task with probability proportional to multiplier x its
      number of examples (examples-proportional, as seqio's mixtures); a
      kind of another stage may be listed (e.g. indexing replay of
      "s1_title_to_sid" in stage 3). An empty tuple for a stage = its seqio
      mixture ``{prefix}_stage{k}`` (every task of the stage at rate 1).
    schedule: "per_stage" (each stage warms up and decays over its own
      steps) or "continuous" (one warmup + decay over the sum of the steps,
      later stages continue it: no re-warming).
    sid_init: initialise the SID token embeddings (and logits columns) from
      the KHQE codebooks before stage 1 (``train.sid_init``).
    length_buckets: encoder-length bucket bounds of the train batches
      (``model_batches.TrainBatches``): a batch holds one bucket's examples
      and its encoder is cut to the bound. () = every batch padded to the
      stage's input length. Multi-host runs pad every batch (logged).
  """

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig.main)
  train: loop.TrainConfig = loop.TrainConfig(num_steps=1)
  mesh: sh.MeshConfig = sh.MeshConfig()
  steps: tuple[int, int, int] = (100, 100, 2100)
  batch_size: int = 32
  # Hold every prompt of the default world with one-token labels (stage 1/2
  # inputs <= 42, stage 3 / eval <= 108 tokens) and the 5-token SID + EOS
  # targets; text targets need more: ((64, 40), (64, 40), (192, 6)).
  lengths: tuple[tuple[int, int], ...] = ((48, 6), (48, 6), (112, 6))
  eval_batches: int = 4
  eval_batch_size: int = 64
  museq: museq.MuSeqConfig = museq.MuSeqConfig()
  sentencepiece: vocab_lib.SentencePieceConfig = vocab_lib.SentencePieceConfig()
  prefix: str = "onesearch"
  restrict_sid_levels: bool = True
  shuffle_buffer: int = 2000
  stage_tasks: tuple[tuple[tuple[str, float], ...], ...] = MAIN_STAGE_TASKS
  schedule: str = "continuous"
  sid_init: bool = False
  length_buckets: tuple[int, ...] = (48, 64, 80, 96)

  def __post_init__(self):
    if any(int(b) <= 0 for b in self.length_buckets):
      raise ValueError(
        f"SFTConfig.length_buckets must be > 0, got {self.length_buckets}"
      )
    if len(self.stage_tasks) != 3:
      raise ValueError(f"SFTConfig.stage_tasks needs 3 entries, got {self.stage_tasks}")
    for entry in self.stage_tasks:
      for kind, rate in entry:
        if not isinstance(kind, str) or not float(rate) > 0:
          raise ValueError(f"SFTConfig.stage_tasks: bad (kind, rate) {(kind, rate)}")
    if self.schedule not in ("per_stage", "continuous"):
      raise ValueError(
        f"SFTConfig.schedule must be 'per_stage' or 'continuous', got {self.schedule!r}"
      )
    if len(self.steps) != 3 or min(self.steps) <= 0:
      raise ValueError(f"SFTConfig.steps must be 3 positive ints, got {self.steps}")
    if len(self.lengths) != 3 or any(len(x) != 2 or min(x) <= 0 for x in self.lengths):
      raise ValueError(
        f"SFTConfig.lengths must be 3 (inputs, targets) pairs, got {self.lengths}"
      )
    if self.lengths[2][1] < 4:
      # run_sft checks the artefact's SID width (3 + opq_subspaces) + EOS.
      raise ValueError("stage-3 targets length must be >= 4 (a 3-token SID + EOS)")
    if self.batch_size <= 0 or self.eval_batch_size <= 0 or self.eval_batches < 0:
      raise ValueError("batch sizes must be > 0 and eval_batches >= 0")
    warm = self.train.optimizer.warmup_steps
    shortest = sum(self.steps) if self.schedule == "continuous" else min(self.steps)
    if self.train.optimizer.decay in ("cosine", "linear") and warm >= shortest:
      raise ValueError(
        f"optimizer.warmup_steps {warm} must be < {shortest} steps "
        f"(schedule {self.schedule})"
      )

  def stage_train_config(self, k: int) -> loop.TrainConfig:
    """The loop config of stage k (0-based)."""
    n = self.steps[k]
    if self.schedule == "continuous":
      opt = dataclasses.replace(
        self.train.optimizer,
        total_steps=sum(self.steps),
        step_offset=sum(self.steps[:k]),
      )
    else:
      opt = dataclasses.replace(self.train.optimizer, total_steps=n)
    return dataclasses.replace(self.train, num_steps=n, optimizer=opt)


# ------------------------------------------------------------ config io


# What an sft_config.json written before these fields existed ran with.
_ABSENT_IN_OLD_FILES = {
  "stage_tasks": ((), (), ()),
  "schedule": "per_stage",
  "sid_init": False,
  "length_buckets": (),
}


def config_to_dict(cfg: SFTConfig) -> dict[str, Any]:
  """JSON-able form (``config_from_dict`` inverts it)."""
  return config_io.to_dict(cfg)


def config_from_dict(raw: dict[str, Any]) -> SFTConfig:
  """Inverse of ``config_to_dict``."""
  return config_io.from_dict(SFTConfig, raw, absent=_ABSENT_IN_OLD_FILES)


OPQ_SUBSPACES = 2  # the paper's SIDs <a><b><c><d><d'>: two OPQ codes share d_


def artefact_opq_subspaces(sid_dir: str | os.PathLike) -> int:
  """OPQ codes per SID of a KHQE artefact (its quantizer's opq_subspaces)."""
  try:
    return int(artefact.read_config(sid_dir)["quantizer"]["opq_subspaces"])
  except (OSError, KeyError, ValueError) as e:
    path = pathlib.Path(sid_dir) / "config.json"
    raise ValueError(f"{path}: no quantizer.opq_subspaces ({e})") from e


def derive_model_config(
  base: ModelConfig,
  vocabulary: vocab_lib.OneSearchVocabulary,
  config: museq.MuSeqConfig,
  long_seq_dim: int,
  *,
  restrict_sid_levels: bool = True,
  n_opq: int = OPQ_SUBSPACES,
) -> ModelConfig:
  """The model for this vocabulary and these prompts.

  Args:
    base: sizes (d_model, layers, ...).
    vocabulary: gives vocab_size and the SID ranges: a, b, c, then one per
      OPQ code, each an equal slice of the ``d_`` range (the paper's 5-token
      SIDs: d = the first half, d' = the second, offset by opq_codes = 256).
    config: with ``use_long_seq`` the prompts carry ``n_emb_tokens`` [EMB]
      placeholders, replaced by as many Q-Former outputs (at least one
      Q-Former layer); without it the Q-Former is off.
    long_seq_dim: D of the long-seq feature (the SID artefact's centroids).
    restrict_sid_levels: softmax over the current level's range for SID
      targets (train loss and decoding).
    n_opq: OPQ codes per SID (the artefact's opq_subspaces; 0 = 3-token SIDs).

  Returns:
    The ModelConfig.
  """
  d = vocabulary.level_range("d")
  if (n_opq == 0) != (len(d) == 0) or (n_opq and len(d) % n_opq):
    raise ValueError(f"d token range of {len(d)} ids does not hold {n_opq} OPQ codes")
  per = len(d) // max(n_opq, 1)
  ranges = [
    (vocabulary.level_range(p).start, vocabulary.level_range(p).stop)
    for p in ("a", "b", "c")
  ]
  ranges += [(d.start + j * per, d.start + (j + 1) * per) for j in range(n_opq)]
  kw: dict[str, Any] = dict(
    vocab_size=vocabulary.vocab_size,
    sid_ranges=tuple(ranges),
    seq_feature_dim=int(long_seq_dim),
    restrict_sid_levels=restrict_sid_levels,
  )
  if config.use_long_seq:
    kw.update(
      emb_placeholder_id=vocabulary.token_id("[EMB]"),
      num_query_tokens=config.n_emb_tokens,
      qformer_layers=max(base.qformer_layers, 1),
    )
  else:
    kw.update(emb_placeholder_id=-1, qformer_layers=0)
  return dataclasses.replace(base, **kw)


# ------------------------------------------------------------ history


def _append_history(stage_dir: pathlib.Path, row: dict) -> None:
  with open(stage_dir / HISTORY, "a") as f:
    f.write(json.dumps(row, sort_keys=True) + "\n")


def read_history(stage_dir: pathlib.Path) -> tuple[list[dict], list[dict]]:
  """(train rows, eval rows) of a stage; a resumed run's re-done steps keep
  only their last entry."""
  path = pathlib.Path(stage_dir) / HISTORY
  if not path.exists():
    return [], []
  rows: dict[tuple[str, int], dict] = {}
  for _, r in jsonl.iter_jsonl(path, required=("kind", "step")):
    rows[(r["kind"], int(r["step"]))] = r
  ordered = sorted(rows.values(), key=lambda r: r["step"])
  return (
    [r for r in ordered if r["kind"] == "train"],
    [r for r in ordered if r["kind"] == "eval"],
  )


def params_hash(ts: state.TrainState) -> str:
  """sha256 over the model parameters (path-sorted, raw bytes)."""
  from flax import nnx
  from jax.experimental import multihost_utils

  model, _ = ts.merge()
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  h = hashlib.sha256()
  for path, var in sorted(flat, key=lambda kv: tuple(map(str, kv[0]))):
    arr = np.asarray(multihost_utils.process_allgather(var[...], tiled=True))
    h.update("/".join(map(str, path)).encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def plot_curves(history: dict[str, dict[str, list[dict]]], path: pathlib.Path) -> None:
  """Train loss and eval SID accuracy over the global step, per stage."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
  offset = 0
  for name in STAGES:
    h = history.get(name)
    if not h:
      continue
    tr, ev = h["train"], h["eval"]
    if tr:
      ax_l.plot([offset + r["step"] for r in tr], [r["loss"] for r in tr], label=name)
    if ev:
      ax_a.plot(
        [offset + r["step"] for r in ev],
        [r["eval_accuracy"] for r in ev],
        marker="o",
        label=name,
      )
    offset += h.get("steps", tr[-1]["step"] if tr else 0)
  ax_l.set(xlabel="global step", ylabel="train loss (per token)", title="train loss")
  ax_a.set(
    xlabel="global step",
    ylabel="SID token accuracy",
    title="eval_click, teacher forced",
  )
  for ax in (ax_l, ax_a):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


# ------------------------------------------------------------ the run


@dataclasses.dataclass
class StageSummary:
  """One stage of a run."""

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
  stages: dict[str, StageSummary]
  params_hash: str  # of the final stage-3 parameters ("" if unfinished)
  counts: dict[str, int]  # examples per task kind
  seconds: float

  @property
  def finished(self) -> bool:
    return all(s.finished for s in self.stages.values()) and len(self.stages) == 3


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


def _progress(name: str, stage_dir: pathlib.Path, total: int, batch_size: int, log):
  first = [True]

  def log_fn(step: int, m: dict[str, float]) -> None:
    if "eval_loss" in m:
      _append_history(stage_dir, {"kind": "eval", **m, "step": step})
      log(
        f"[train] {name} eval @ step {step}: SID loss {m['eval_loss']:.3f}, "
        f"SID token accuracy {m['eval_accuracy']:.3f} "
        f"({int(m['eval_tokens'])} tokens)"
      )
      return
    _append_history(stage_dir, {"kind": "train", **m, "step": step})
    note = " (this interval includes compiling)" if first[0] else ""
    first[0] = False
    log(
      f"[train] {name} step {step}/{total}: loss {m['loss']:.3f} "
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
  """Runs (or resumes) the SFT stages 1 -> 2 -> 3.

  Args:
    world_dir: the world directory (KuaiSearch schema).
    sid_dir: the KHQE SID artefact directory.
    out_dir: where the vocabulary, checkpoints and history go.
    cfg: the schedule.
    sid_hash: the SID artefact's content hash ("" = do not check); stored
      in every checkpoint and checked on resume.
    log: progress printer.
    stop_after: (stage index 0..2, steps) stops that stage after that many
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
  registered = model_batches.register_from_spec(spec)
  model_batches.write_spec(out_dir, spec)
  log(
    f"[train] tasks registered in {time.perf_counter() - t:.1f} s: "
    + ", ".join(f"{k} {v}" for k, v in registered.counts.items())
  )
  if registered.skips:
    log(f"[train] examples not made (reason: count): {registered.skips}")
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
  n_params = _count_params(model_cfg)
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
    import seqio

    shard_info = seqio.ShardInfo(jax.process_index(), nproc)
    if length_buckets:
      # Hosts would cut one global batch to different widths; padding every
      # batch to the stage length gives the same per-row math, only slower.
      log(f"[train] {nproc} hosts: length_buckets {length_buckets} off")
      length_buckets = ()
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

  summaries: dict[str, StageSummary] = {}
  final_hash = ""
  for k, name in enumerate(STAGES):
    stage_dir = out_dir / name
    stage_dir.mkdir(exist_ok=True)
    train_cfg = cfg.stage_train_config(k)
    result_path = stage_dir / RESULT
    if result_path.exists():
      done = json.loads(result_path.read_text())
      tr, ev = read_history(stage_dir)
      summaries[name] = StageSummary(name, True, done["steps"], 0.0, None, True, tr, ev)
      final_hash = done.get("params_hash", "")
      log(f"[train] {name} finished earlier ({done['steps']} steps), skipping")
      continue
    mixture = stage_members(cfg, k, registered, log)
    long_seq = k == 2 and model_cfg.use_qformer
    batches = model_batches.TrainBatches(
      mixture,
      long_seq_dim=registered.long_seq_dim,
      batch_size=host_batch,
      lengths=cfg.lengths[k],
      long_seq=long_seq,
      seed=1000 * train_cfg.seed + 10 * k,
      shard_info=shard_info,
      shuffle_buffer=cfg.shuffle_buffer or None,
      length_buckets=length_buckets,
    )
    evals = eval_set if long_seq else without_long
    init_from = out_dir / STAGES[k - 1] / "checkpoints" if k else None
    log(
      f"[train] {name}: {train_cfg.num_steps} steps of {_describe(mixture)}, batch "
      f"{cfg.batch_size}, lengths {cfg.lengths[k]}"
      + (f", parameters from {STAGES[k - 1]}" if k else "")
      + " (compiling...)"
    )
    t = time.perf_counter()
    # TensorBoard scalars per stage (train/* and eval/* tags; process 0 only).
    writer = summaries_lib.SummaryWriter(stage_dir / "tensorboard")
    try:
      res = loop.train(
        model_cfg,
        train_cfg,
        cfg.mesh,
        batches,
        stage_dir,
        eval_batches=(lambda e=evals: e) if evals else None,
        sid_hash=sid_hash,
        init_from=init_from,
        stop_after=stop_after[1] if stop_after and stop_after[0] == k else None,
        init_params=(
          sid_init_lib.codebook_init(sid_dir, model_cfg)
          if cfg.sid_init and k == 0
          else None
        ),
        log_fn=summaries_lib.fan_out(
          _progress(name, stage_dir, train_cfg.num_steps, cfg.batch_size, log),
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
    tr, ev = read_history(stage_dir)
    summaries[name] = StageSummary(
      name, finished, step, seconds, res.resumed_from, False, tr, ev
    )
    if not finished:
      log(f"[train] {name} stopped at step {step}/{train_cfg.num_steps}")
      break
    final_hash = params_hash(res.state)
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
    log(_stage_line(name, tr, ev, seconds))
  history = {
    n: {"steps": cfg.steps[i], "train": s.train, "eval": s.evals}
    for i, (n, s) in enumerate(summaries.items())
  }
  (out_dir / "history.json").write_text(json.dumps(history, indent=1, sort_keys=True))
  plot_curves(history, out_dir / "training_curves.png")
  result = SFTResult(
    out_dir=out_dir,
    model_cfg=model_cfg,
    stages=summaries,
    params_hash=final_hash if len(summaries) == 3 else "",
    counts=dict(registered.counts),
    seconds=time.perf_counter() - t_run,
  )
  if not result.finished:
    result.params_hash = ""
  return result


def stage_members(
  cfg: SFTConfig, k: int, registered, log: Callable[[str], None] | None = None
) -> str | list[tuple[str, float]]:
  """What stage k samples: its seqio mixture name, or the (task, rate) list
  of ``cfg.stage_tasks[k]`` (rate = multiplier x the task's examples).

  A listed kind with no examples (e.g. ``s3_window`` under the
  ``sliding_window=False`` ablation) is left out and reported through `log`.

  Raises:
    ValueError: a listed kind is unknown, or no listed kind has examples.
  """
  entry = cfg.stage_tasks[k]
  if not entry:
    return registered.mixtures[STAGES[k]]
  out, empty = [], []
  for kind, mult in entry:
    if kind not in corpus_lib.TRAIN_TASK_KINDS:
      raise ValueError(
        f"SFTConfig.stage_tasks[{k}]: unknown training task kind {kind!r}; "
        f"known: {list(corpus_lib.TRAIN_TASK_KINDS)}"
      )
    if kind not in registered.tasks:
      empty.append(kind)
      continue
    out.append((registered.tasks[kind], float(mult) * registered.counts[kind]))
  if empty and log is not None:
    log(f"[train] {STAGES[k]}: no examples for {empty}; sampling the other tasks")
  if not out:
    raise ValueError(f"SFTConfig.stage_tasks[{k}]: none of {entry} has examples")
  return out


def _describe(mixture) -> str:
  if isinstance(mixture, str):
    return mixture
  total = sum(r for _, r in mixture)
  return ", ".join(f"{n} {r / total:.0%}" for n, r in mixture)


def _stage_line(name, tr, ev, seconds) -> str:
  parts = [f"[train] {name} done in {seconds:.0f} s"]
  if tr:
    parts.append(f"train loss {tr[0]['loss']:.3f} -> {tr[-1]['loss']:.3f}")
  if ev:
    parts.append(
      f"eval SID accuracy {ev[0]['eval_accuracy']:.3f} -> {ev[-1]['eval_accuracy']:.3f}"
    )
  return "; ".join(parts)


def _count_params(cfg: ModelConfig) -> int:
  from flax import nnx

  with jax.set_mesh(sh.single_device_mesh()), nnx.logical_axis_rules(sh.DP_RULES):
    abstract = nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(params=0)))
  return sum(
    int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))
  )


# ------------------------------------------------------------ for evaluation


def read_config(out_dir: str | pathlib.Path) -> SFTConfig:
  """The SFTConfig a run in out_dir used."""
  path = pathlib.Path(out_dir) / "sft_config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: missing (not a training output directory?)")
  return config_from_dict(json.loads(path.read_text()))


def read_model_config(out_dir: str | os.PathLike) -> ModelConfig:
  """The ModelConfig a training run derived (``out_dir/model_config.json``)."""
  path = pathlib.Path(out_dir) / "model_config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: missing (not a training output directory?)")
  raw = json.loads(path.read_text())
  return config_io.from_dict(ModelConfig, raw)


def load_trained(
  out_dir: str | pathlib.Path, stage: str = "stage3"
) -> tuple[EncoderDecoder, vocab_lib.OneSearchVocabulary, ModelConfig]:
  """The trained model of a finished stage, on one device.

  Args:
    out_dir: a ``run_sft`` output directory.
    stage: which stage's final parameters (default: the last).

  Returns:
    (model with the stage's final parameters, the vocabulary, the ModelConfig).

  Raises:
    FileNotFoundError: the stage did not finish.
  """
  out_dir = pathlib.Path(out_dir)
  if stage not in STAGES:
    raise ValueError(f"stage {stage!r} not in {STAGES}")
  if not (out_dir / stage / RESULT).exists():
    raise FileNotFoundError(f"{out_dir / stage}: the stage has not finished")
  cfg = read_config(out_dir)
  model_cfg = read_model_config(out_dir)
  spec = model_batches.read_spec(out_dir)
  vocabulary = vocab_lib.OneSearchVocabulary.load(spec.vocab_dir)
  mesh = sh.single_device_mesh()
  k = STAGES.index(stage)
  opt = cfg.stage_train_config(k).optimizer
  ts = state.create_train_state(model_cfg, opt, mesh, sh.DP_RULES, seed=0)
  ckpt = checkpoints.Checkpointer(out_dir / stage / "checkpoints")
  try:
    # Exactly the stage's final step: a damaged final checkpoint is an
    # error here, never a silent fallback to an earlier step.
    ts, _ = ckpt.restore(ts, step=cfg.steps[k])
  finally:
    ckpt.close()
  model, _ = ts.merge()
  return model, vocabulary, model_cfg


def eval_inputs(
  source: str | pathlib.Path | Any,
  kind: str = "eval_click",
  batch_size: int = 64,
  **kw,
) -> Iterator[tuple[dict, list[dict]]]:
  """Encoder inputs + per-row metadata of an eval task (file order).

  Args:
    source: a ``run_sft`` output directory (its tasks are re-registered with
      the saved vocabulary; the encoder length is the run's stage-3 one) or a
      ``tasks.RegisteredTasks``.
    kind: "eval_click" or "eval_order".
    batch_size: rows per batch.
    **kw: ``data.eval_batches.eval_inputs`` options (inputs_length,
      long_seq, shard_info, pad_last).

  Returns:
    Iterator of (batch, metas); see ``data.eval_batches.eval_inputs``.
  """
  if isinstance(source, str | pathlib.Path):
    spec = model_batches.read_spec(source)
    registered = model_batches.register_from_spec(spec)
    kw.setdefault("inputs_length", spec.eval_inputs_length)
    kw.setdefault("long_seq", read_config(source).museq.use_long_seq)
  else:
    registered = source
  return eval_batches.eval_inputs(registered, kind, batch_size, **kw)
