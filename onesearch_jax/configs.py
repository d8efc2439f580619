"""Config factories: the gin-free Python path to every stage's config.

gin binds these functions at the edge (run.py registers them as
configurables named ``world_config``, ``sids_config``, ``model_config``,
``mesh_config``, ``optimizer_config``, ``train_config``, ``sft_config``, ``pars_config``,
``eval_config`` and ``pipeline_config``); tests and notebooks call them directly. Their defaults
ARE the main job (``python run.py`` with no gin file). No gin import here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from onesearch_jax import sharding
from onesearch_jax.pipeline import PipelineConfig
from onesearch_jax.world.config import WorldConfig

WORLD_PRESETS = ("tiny", "default", "large")


def world_config(
  preset: str = "default",
  seed: int = 0,
  overrides: dict[str, Any] | None = None,
  eval_day: str = "test",
) -> WorldConfig:
  """A WorldConfig preset with field overrides.

  Args:
    preset: tiny (CI, seconds), default (the main job) or large (>= 1M items).
    seed: the world's seed; the same seed writes identical files.
    overrides: WorldConfig field -> value.
    eval_day: "test" (the last day is the eval split) or "validation" (the
      last day is dropped and the day before is the eval split: recipe
      selection never sees the test day).
  """
  if preset not in WORLD_PRESETS:
    raise ValueError(f"world preset {preset!r} not in {WORLD_PRESETS}")
  cfg = dataclasses.replace(getattr(WorldConfig, preset)(seed=seed), eval_day=eval_day)
  if overrides:
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - names)
    if bad:
      raise ValueError(f"unknown WorldConfig fields {bad}; known: {sorted(names)}")
    cfg = dataclasses.replace(cfg, **overrides)
  return cfg


def sids_config(overrides: dict[str, Any] | None = None):
  """The KHQE BuildConfig with field overrides.

  Args:
    overrides: BuildConfig field -> value; a dict value for a field that
      holds a dataclass overrides that dataclass's fields (gin can bind
      ``{'train': {'steps': 50}}`` but cannot construct an EncoderTrainConfig).
  """
  from onesearch_jax.khqe.build import BuildConfig

  cfg = BuildConfig()
  if overrides:  # a dataclass field given as a dict: its own fields
    overrides = dict(overrides)
    for name, value in overrides.items():
      current = getattr(cfg, name, None)
      if isinstance(value, dict) and dataclasses.is_dataclass(current):
        overrides[name] = _replace(current, value, type(current).__name__)
  return _replace(cfg, overrides, "BuildConfig")


def _replace(cfg, overrides: dict[str, Any] | None, what: str):
  if not overrides:
    return cfg
  names = {f.name for f in dataclasses.fields(cfg)}
  bad = sorted(set(overrides) - names)
  if bad:
    raise ValueError(f"unknown {what} fields {bad}; known: {sorted(names)}")
  return dataclasses.replace(cfg, **overrides)


def model_config(preset: str = "main", overrides: dict[str, Any] | None = None):
  """The model sizes (``model.configs.model_config``; default: the main job's).

  Args:
    preset: tiny, main, small or base (``model.configs.MODEL_PRESETS``).
    overrides: ModelConfig field -> value. vocab_size, sid_ranges,
      seq_feature_dim and the Q-Former placeholder are set from the data.
  """
  from onesearch_jax.model.configs import model_config as make

  return make(preset, overrides)


mesh_config = sharding.mesh_config


def optimizer_config(**overrides: Any):
  """The main job's optimizer (AdamW, peak lr 3e-3, 10 warmup steps, cosine
  to 10%) with OptimizerConfig field overrides; total_steps is set to each
  SFT stage's steps."""
  from onesearch_jax.train.optimizers import OptimizerConfig

  base = OptimizerConfig(learning_rate=3e-3, warmup_steps=10, total_steps=1000)
  return _replace(base, overrides, "OptimizerConfig")


def train_config(
  log_every: int = 10,
  eval_every: int = 200,
  seed: int = 0,
  z_loss: float = 1e-4,
  label_smoothing: float = 0.0,
  save_every_steps: int = 200,
  keep_last: int = 2,
  async_save: bool = True,
  peak_flops: float = 0.0,
  optimizer: Any = None,
):
  """Per-stage loop settings (``train.loop.TrainConfig``; num_steps comes
  from ``sft_config.steps``).

  Args:
    log_every: a progress line every N steps.
    eval_every: teacher-forced eval every N steps (0 = never).
    seed: parameter init and dropout seed (the data seed is seed + stage).
    z_loss: log(Z)^2 coefficient.
    label_smoothing: target smoothing.
    save_every_steps: checkpoint cadence (a killed run redoes at most this
      many steps).
    keep_last: checkpoints kept per stage.
    async_save: write checkpoints in the background.
    peak_flops: device peak FLOP/s for the MFU column (0 = none).
    optimizer: an OptimizerConfig (default ``optimizer_config()``).
  """
  from onesearch_jax.model.model import LossConfig
  from onesearch_jax.train.checkpoints import CheckpointConfig
  from onesearch_jax.train.loop import TrainConfig

  return TrainConfig(
    num_steps=1,
    log_every=log_every,
    eval_every=eval_every,
    seed=seed,
    loss=LossConfig(label_smoothing=label_smoothing, z_loss=z_loss),
    optimizer=optimizer if optimizer is not None else optimizer_config(),
    checkpoint=CheckpointConfig(
      save_every_steps=save_every_steps, keep_last=keep_last, async_save=async_save
    ),
    peak_flops=peak_flops,
  )


# The main job's SFT task lists (docs/TRAINING.md, "The recipe"): SID targets
# only; stage 2 adds query -> clicked-item SID pairs; title -> SID indexing is
# replayed in stages 2 and 3 (rate = multiplier x the task's example count).
MAIN_STAGE_TASKS = (
  (("s1_title_to_sid", 1.0), ("s1_query_to_sid", 1.0)),
  (("s2_query_to_sidi", 1.0), ("s2_sidq_to_sidi", 1.0), ("s1_title_to_sid", 0.5)),
  (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.2)),
)


def sft_config(
  model: Any = None,
  train: Any = None,
  mesh: Any = None,
  steps: tuple[int, int, int] = (100, 100, 2100),
  batch_size: int = 32,
  lengths: tuple[tuple[int, int], ...] = ((48, 6), (48, 6), (112, 6)),
  eval_batches: int = 4,
  eval_batch_size: int = 64,
  museq: dict[str, Any] | None = None,
  sentencepiece: dict[str, Any] | None = None,
  prefix: str = "onesearch",
  restrict_sid_levels: bool = True,
  shuffle_buffer: int = 2000,
  stage_tasks: Any = MAIN_STAGE_TASKS,
  schedule: str = "continuous",
  sid_init: bool = False,
  length_buckets: tuple[int, ...] = (),
):
  """The SFT schedule (``train.sft.SFTConfig``); defaults: the main job.

  Args:
    model: a ModelConfig (default ``model_config()``).
    train: a TrainConfig template (default ``train_config()``).
    mesh: a MeshConfig (default ``mesh_config()``: data parallel).
    steps: optimizer steps of stage 1, 2, 3.
    batch_size: global batch size.
    lengths: (inputs, targets) tokens per stage; the defaults hold every
      prompt of the default world with one-token labels (stage 1/2 inputs
      <= 42, stage 3 / eval <= 108 tokens) and the 5-token SID + EOS targets
      (text targets need more: ((64, 40), (64, 40), (192, 6)) with
      ``museq={'prompt_style': 'words'}``, the paper's task list).
    eval_batches: eval_click batches in the teacher-forced eval.
    eval_batch_size: rows per eval batch.
    museq: MuSeqConfig field overrides (the Table 6 ablation switches).
    sentencepiece: SentencePieceConfig field overrides.
    prefix: seqio task name prefix.
    restrict_sid_levels: per-level SID softmax.
    shuffle_buffer: examples per task in the train shuffle buffer (0 = the
      task's own 10,000; larger shuffles better, costs a slower first batch).
    stage_tasks: per stage ((task kind, rate multiplier), ...); () = the
      stage's seqio mixture (``train.sft.SFTConfig.stage_tasks``).
    schedule: "per_stage" or "continuous" learning-rate schedule.
    sid_init: SID embeddings from the KHQE codebooks (``train.sid_init``).
    length_buckets: encoder-length bucket bounds of the train batches
      (``train.sft.SFTConfig.length_buckets``); () = pad to ``lengths``.
  """
  from onesearch_jax.data.museq import MuSeqConfig
  from onesearch_jax.data.vocab import SentencePieceConfig
  from onesearch_jax.train.sft import SFTConfig

  return SFTConfig(
    model=model if model is not None else model_config(),
    train=train if train is not None else train_config(),
    mesh=mesh if mesh is not None else mesh_config(),
    steps=tuple(int(s) for s in steps),
    batch_size=batch_size,
    lengths=tuple(tuple(int(v) for v in x) for x in lengths),
    eval_batches=eval_batches,
    eval_batch_size=eval_batch_size,
    museq=_replace(MuSeqConfig(), museq, "MuSeqConfig"),
    sentencepiece=_replace(SentencePieceConfig(), sentencepiece, "SentencePieceConfig"),
    prefix=prefix,
    restrict_sid_levels=restrict_sid_levels,
    shuffle_buffer=shuffle_buffer,
    stage_tasks=tuple(tuple((str(k), float(r)) for k, r in e) for e in stage_tasks),
    schedule=schedule,
    sid_init=sid_init,
    length_buckets=tuple(int(b) for b in length_buckets),
  )


def eval_config(
  beam_size: int = 350,
  batch_size: int = 32,
  ks: tuple[int, ...] = (10, 50, 350),
  k_max: int = 350,
  baselines: tuple[str, ...] = ("bm25", "dense", "mca", "sidq_pop", "query_memory"),
  exact_rows: int = 8,
):
  """The eval stage (``eval.config.EvalConfig``); defaults: the main job."""
  from onesearch_jax.eval.config import EvalConfig

  return EvalConfig(
    beam_size=beam_size,
    batch_size=batch_size,
    ks=tuple(ks),
    k_max=k_max,
    baselines=tuple(baselines),
    exact_rows=exact_rows,
  )


def pars_config(
  rm_steps: int = 600,
  phase1_sessions: int = 64,
  generate_beam: int = 16,
  generate_batch: int = 32,
  num_negatives: int = 3,
  steps: tuple[int, int] = (20, 20),
  batch_size: int = 16,
  learning_rate: float = 3e-4,
  warmup_steps: int = 5,
  beta: float = 1.0,
  sft_weight: float = 0.0,
  run_phase1: bool = True,
  run_phase2: bool = True,
  rerank: bool = True,
  rerank_label_relevance: bool = False,
  seed: int = 0,
):
  """The pars stage (``pars.stage.StageConfig``); defaults: the main job,
  sized to a minute or two on 2 CPU cores.

  Args:
    rm_steps: reward-model training steps (512 impressions each).
    phase1_sessions: train sessions whose generated lists phase 1 re-ranks.
    generate_beam: W of phase 1's trie beam search.
    generate_batch: sessions per phase-1 beam-search call (one compiled shape).
    num_negatives: K rejected items per listwise example.
    steps: optimizer steps of phase 1 and phase 2.
    batch_size: listwise examples per step.
    learning_rate: peak lr of both phases (constant after warmup).
    warmup_steps: linear warmup steps.
    beta: the S-DPO temperature.
    sft_weight: weight of the optional SFT term on the chosen item.
    run_phase1, run_phase2: which phases run.
    rerank: add the RM re-rank row ("onesearch+pars2+rm") to the eval.
    rerank_label_relevance: S_rel from relevance labels in that row (leaks
      the eval's graded-NDCG labels).
    seed: RM, example sampling and phase seeds.
  """
  from onesearch_jax.pars import listwise, phases, reward_model, run, stage
  from onesearch_jax.train.checkpoints import CheckpointConfig
  from onesearch_jax.train.optimizers import OptimizerConfig

  def phase(n: int, k: int) -> listwise.ListwiseTrainConfig:
    return listwise.ListwiseTrainConfig(
      num_steps=int(n),
      log_every=max(1, min(10, int(n))),
      seed=seed + k,
      loss=listwise.ListwiseConfig(beta=beta, sft_weight=sft_weight),
      optimizer=OptimizerConfig(
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        total_steps=max(int(n), 1),
        decay="constant",
      ),
      checkpoint=CheckpointConfig(save_every_steps=max(int(n), 1), keep_last=1),
    )

  if len(steps) != 2:
    raise ValueError(f"pars_config.steps must be (phase1, phase2): {steps}")
  return stage.StageConfig(
    pars=run.ParsConfig(
      reward_model=reward_model.RewardModelConfig(num_steps=rm_steps, seed=seed),
      data=phases.PhaseDataConfig(
        num_negatives=num_negatives,
        phase1_sessions=phase1_sessions,
        generate_batch=generate_batch,
        seed=seed,
      ),
      phase1=phase(steps[0], 1),
      phase2=phase(steps[1], 2),
      batch_size=batch_size,
      run_phase1=run_phase1,
      run_phase2=run_phase2,
    ),
    generate_beam=generate_beam,
    rerank=rerank,
    rerank_label_relevance=rerank_label_relevance,
  )


def pipeline_config(
  world: WorldConfig | None = None,
  sids: Any = None,
  world_dir: str = "",
  stages: tuple[str, ...] = ("world", "sids", "train", "eval"),
  train: Any = None,
  eval: Any = None,
  pars: Any = None,
) -> PipelineConfig:
  """The main job's config.

  Args:
    world: the world to simulate (default ``world_config()``).
    sids: the KHQE BuildConfig (None = default).
    world_dir: real data in the KuaiSearch schema instead of simulating.
    stages: stages in pipeline.STAGE_ORDER order with their STAGE_NEEDS
      (e.g. without "pars": the eval has the SFT row only).
    train: the SFTConfig of the train stage (None = ``sft_config()``).
    eval: the EvalConfig of the eval stage (None = ``eval_config()``).
    pars: the pars stage's StageConfig (None = ``pars_config()``).
  """
  return PipelineConfig(
    world=world if world is not None else world_config(),
    world_dir=world_dir,
    stages=tuple(stages),
    sids=sids,
    train=train,
    eval=eval if eval is not None else eval_config(),
    pars=pars if pars is not None else pars_config(),
  )
