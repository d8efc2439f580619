"""Config factories: the gin-free Python path to every stage's config.

gin binds these functions at the edge (run.py registers them as
configurables named ``world_config``, ``sids_config``, ``model_config``,
``mesh_config``, ``optimizer_config``, ``train_config``, ``sft_config``, ``pars_config``,
``eval_config`` and ``pipeline_config``); tests and notebooks call them directly. Their defaults
ARE the main job (``python run.py`` with no gin file). No gin import here.

The numbers live in the dataclasses (their defaults are the main job's); an
argument left at None here means "the dataclass default". What a factory
fills itself (tests/configs_defaults_test.py holds each factory equal to its
dataclass): ``world_config`` and ``model_config`` pick a preset ("default",
"main": the main job's; PipelineConfig.world and SFTConfig.model default to
them), ``train_config`` sets num_steps = 1 (a placeholder: each SFT phase sets
its own, as SFTConfig.train does) and ``pars_config`` derives each phase's
log_every, optimizer.total_steps and checkpoint.save_every_steps from its
steps (equal to ListwiseTrainConfig's defaults at the default steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from onesearch_jax import sharding
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.khqe.build import BuildConfig
from onesearch_jax.model.configs import model_config as make_model_config
from onesearch_jax.pars.grpo import GRPOConfig
from onesearch_jax.pars.stage import ParsStageConfig
from onesearch_jax.stages.config import PipelineConfig
from onesearch_jax.train.loop import TrainConfig
from onesearch_jax.train.optimizers import OptimizerConfig
from onesearch_jax.train.param_ema import ParamEMAConfig
from onesearch_jax.train.sft_config import SFTConfig
from onesearch_jax.v2.sdft import SDFTConfig
from onesearch_jax.world.config import WorldConfig

WORLD_PRESETS = ("tiny", "default", "large")


def world_config(
  preset: str = "default",
  seed: int | None = None,
  overrides: dict[str, Any] | None = None,
  eval_day: str | None = None,
) -> WorldConfig:
  """A WorldConfig preset with field overrides.

  Args:
    preset: tiny (CI, seconds), default (the main job) or large (>= 1M items).
    seed: the world's seed; the same seed writes identical files (None:
      the preset's).
    overrides: WorldConfig field -> value.
    eval_day: "test" (the last day is the eval split) or "validation" (the
      last day is dropped and the day before is the eval split: recipe
      selection never sees the test day); None: the preset's.
  """
  if preset not in WORLD_PRESETS:
    raise ValueError(f"world preset {preset!r} not in {WORLD_PRESETS}")
  cfg = getattr(WorldConfig, preset)()
  cfg = _replace(cfg, _given(seed=seed, eval_day=eval_day), "WorldConfig")
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

  return make_model_config(preset, overrides)


mesh_config = sharding.mesh_config


def optimizer_config(**overrides: Any):
  """The main job's optimizer (``train.optimizers.OptimizerConfig()``: AdamW,
  peak lr 3e-3, 10 warmup steps, cosine to 10%) with OptimizerConfig field
  overrides; total_steps is set to each SFT phase's steps."""

  return _replace(OptimizerConfig(), overrides, "OptimizerConfig")


def _given(**values: Any) -> dict[str, Any]:
  """The arguments a caller gave (not None): the overrides of a default."""
  return {k: v for k, v in values.items() if v is not None}


def train_config(
  log_every: int | None = None,
  eval_every: int | None = None,
  seed: int | None = None,
  z_loss: float | None = None,
  label_smoothing: float | None = None,
  save_every_steps: int | None = None,
  keep_last: int | None = None,
  async_save: bool | None = None,
  peak_flops: float | None = None,
  optimizer: Any = None,
):
  """Per-phase loop settings (``train.loop.TrainConfig``; num_steps comes
  from ``sft_config.steps``). None = the dataclass default (the main job's).

  Args:
    log_every: a progress line every N steps.
    eval_every: teacher-forced eval every N steps (0 = never).
    seed: parameter init and dropout seed (the data seed depends on seed and the phase).
    z_loss: log(Z)^2 coefficient.
    label_smoothing: target smoothing.
    save_every_steps: checkpoint cadence (a killed run redoes at most this
      many steps).
    keep_last: checkpoints kept per phase.
    async_save: write checkpoints in the background.
    peak_flops: device peak FLOP/s for the MFU column (0 = none).
    optimizer: an OptimizerConfig (default ``optimizer_config()``).
  """

  base = TrainConfig(num_steps=1)  # a placeholder: each phase sets its steps
  loss = _given(label_smoothing=label_smoothing, z_loss=z_loss)
  ckpt = _given(
    save_every_steps=save_every_steps, keep_last=keep_last, async_save=async_save
  )
  return _replace(
    base,
    _given(
      log_every=log_every,
      eval_every=eval_every,
      seed=seed,
      peak_flops=peak_flops,
      optimizer=optimizer,
      loss=_replace(base.loss, loss, "LossConfig"),
      checkpoint=_replace(base.checkpoint, ckpt, "CheckpointConfig"),
    ),
    "TrainConfig",
  )


def sft_config(
  model: Any = None,
  train: Any = None,
  mesh: Any = None,
  steps: tuple[int, int, int] | None = None,
  batch_size: int | None = None,
  lengths: tuple[tuple[int, int], ...] | None = None,
  eval_batches: int | None = None,
  eval_batch_size: int | None = None,
  museq: dict[str, Any] | None = None,
  sentencepiece: dict[str, Any] | None = None,
  prefix: str | None = None,
  restrict_sid_levels: bool | None = None,
  shuffle_buffer: int | None = None,
  phase_tasks: Any = None,
  schedule: str | None = None,
  sid_init: bool | None = None,
  length_buckets: tuple[int, ...] | None = None,
  task_cache_dir: str | None = None,
  sdft: dict[str, Any] | None = None,
  param_ema: dict[str, Any] | bool | None = None,
  phase3_passes: float | None = None,
):
  """The SFT schedule (``train.sft_config.SFTConfig``); None = the dataclass
  default (the main job's).

  Args:
    model: a ModelConfig (default ``model_config()``).
    train: a TrainConfig template (default ``train_config()``).
    mesh: a MeshConfig (default ``mesh_config()``: data parallel).
    steps: optimizer steps of phase 1, 2, 3; phase 3's 0 (the default) =
      ``phase3_passes`` passes over its data, a positive value overrides them.
    batch_size: global batch size.
    lengths: (inputs, targets) tokens per phase; the defaults hold every
      prompt of the default world with one-token labels (phase 1/2 inputs
      <= 42, phase 3 / eval <= 108 tokens) and the 5-token SID + EOS targets
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
    phase_tasks: per phase ((task kind, rate multiplier), ...); () = the
      phase's seqio mixture (``train.sft_config.SFTConfig.phase_tasks``; default
      ``train.sft_config.MAIN_PHASE_TASKS``).
    schedule: "per_phase" or "continuous" learning-rate schedule.
    sid_init: SID embeddings from the KHQE codebooks (``train.sid_init``).
    length_buckets: encoder-length bucket bounds of the train batches
      (``train.sft_config.SFTConfig.length_buckets``); () = pad to ``lengths``.
    task_cache_dir: a seqio task cache of the Beam job to train from
      (``train.sft_config.SFTConfig.task_cache_dir``); "" = off.
    sdft: OneSearch-V2 self-distillation in phase 3: SDFTConfig field
      overrides ({} = its defaults, KL weight 0.1; e.g. {'rdrop_weight': 0.5,
      'fgm_epsilon': 0.6, 'focal': True}); None = off. Needs
      ``museq={'keywords': 'builtin', 'keywords_in': 'teacher'}`` (docs/V2.md).
    param_ema: serve phase 3's parameter EMA (``train/param_ema.py``):
      ParamEMAConfig field overrides ({} = its defaults, decay 0.995 from
      phase-3 step 1,000, the main job's); False = off (phase 3 serves its
      last parameters).
    phase3_passes: passes over phase 3's tasks (multiplier-1 tasks once
      each at 1.0) when ``steps[2]`` is 0
      (``train.sft_config.SFTConfig.phase3_passes``).
  """

  base = SFTConfig()
  given = _given(
    model=model,
    train=train,
    mesh=mesh,
    steps=None if steps is None else tuple(int(s) for s in steps),
    batch_size=batch_size,
    lengths=None
    if lengths is None
    else tuple(tuple(int(v) for v in x) for x in lengths),
    eval_batches=eval_batches,
    eval_batch_size=eval_batch_size,
    museq=_replace(base.museq, museq, "MuSeqConfig"),
    sentencepiece=_replace(base.sentencepiece, sentencepiece, "SentencePieceConfig"),
    prefix=prefix,
    restrict_sid_levels=restrict_sid_levels,
    shuffle_buffer=shuffle_buffer,
    phase_tasks=None
    if phase_tasks is None
    else tuple(tuple((str(k), float(r)) for k, r in e) for e in phase_tasks),
    schedule=schedule,
    sid_init=sid_init,
    length_buckets=None
    if length_buckets is None
    else tuple(int(b) for b in length_buckets),
    task_cache_dir=task_cache_dir,
    sdft=None if sdft is None else _replace(SDFTConfig(), sdft, "SDFTConfig"),
    phase3_passes=None if phase3_passes is None else float(phase3_passes),
  )
  if param_ema is not None:  # given: False = off (None), else on
    given["param_ema"] = _param_ema(param_ema)
  return _replace(base, given, "SFTConfig")


def _param_ema(value: dict[str, Any] | bool) -> ParamEMAConfig | None:
  """A given sft_config param_ema: False = off (None), True or a dict of
  ParamEMAConfig overrides = on."""
  if value is False:
    return None
  if value is True:
    return ParamEMAConfig()
  if not isinstance(value, dict):
    raise ValueError(
      f"sft_config.param_ema must be a dict of ParamEMAConfig fields, True or "
      f"False, got {value!r}"
    )
  return _replace(ParamEMAConfig(), value, "ParamEMAConfig")


def eval_config(
  beam_size: int | None = None,
  batch_size: int | None = None,
  ks: tuple[int, ...] | None = None,
  k_max: int | None = None,
  baselines: tuple[str, ...] | None = None,
  exact_rows: int | None = None,
):
  """The eval stage (``eval.config.EvalConfig``); None = the dataclass
  default (the main job's)."""

  given = _given(
    beam_size=beam_size,
    batch_size=batch_size,
    ks=None if ks is None else tuple(ks),
    k_max=k_max,
    baselines=None if baselines is None else tuple(baselines),
    exact_rows=exact_rows,
  )
  return _replace(EvalConfig(), given, "EvalConfig")


def pars_config(
  rm_steps: int | None = None,
  phase1_sessions: int | None = None,
  generate_beam: int | None = None,
  generate_batch: int | None = None,
  num_negatives: int | None = None,
  steps: tuple[int, int] | None = None,
  batch_size: int | None = None,
  learning_rate: float | None = None,
  warmup_steps: int | None = None,
  beta: float | None = None,
  sft_weight: float | None = None,
  reg_weight: float | None = None,
  reward_weight: bool | None = None,
  loss_kind: str | None = None,
  temperature: float | None = None,
  trie_logprobs: bool | None = None,
  decay: str | None = None,
  phase1_rejected: str | None = None,
  phase2_rejected: str | None = None,
  phase1_pool: str | None = None,
  rm_stats: bool | None = None,
  release_stats: bool | None = None,
  gen_weight: float | None = None,
  r_score_lambdas: tuple[float, float, float, float] | None = None,
  r_score_form: str | None = None,
  run_phase1: bool | None = None,
  run_phase2: bool | None = None,
  rerank: bool | None = None,
  rerank_label_relevance: bool | None = None,
  seed: int | None = None,
  grpo: dict[str, Any] | None = None,
):
  """The pars stage (``pars.stage.ParsStageConfig``); None = the dataclass
  default (the main job's, sized to a minute or two on 2 CPU cores).

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
    reg_weight: weight of the chosen-likelihood regulariser inside the loss
      (DPO-Positive: relu(log π_ref(chosen) − log π(chosen))).
    reward_weight: weight each rejected item by the reward gap (the
      official code's enable_s_dpo_rw_weight; ListwiseConfig.use_reward_weight).
    loss_kind: the phases' loss, "dpo" (S-DPO) or "distill" (listwise
      distillation of the reward model's order; use with phase1_rejected =
      "distill"; ListwiseConfig.kind).
    temperature: the distillation teacher's softmax temperature.
    trie_logprobs: the phases score SIDs under the decoding's trie mask
      (ListwiseConfig.trie_logprobs).
    decay: the phases' lr schedule after warmup ('constant', 'cosine', ...).
    phase1_rejected: phase 1's rejected items, "rm_demoted",
      "above_chosen" or "distill" (phases.PhaseDataConfig).
    phase2_rejected: phase 2's rejected items, "levels" or "exposed"
      (phases.PhaseDataConfig).
    phase1_pool: the train sessions phase 1 samples, "train" or "unclicked"
      (phases.PhaseDataConfig).
    rm_stats: the reward model's train-split statistics features
      (rm_features.FeatureConfig.use_stats).
    release_stats: the ranking rows' statistics objects as reward-model
      features (rm_features.FeatureConfig.release_stats).
    gen_weight: weight of the generator's log-probability next to R_score
      where generated candidates are ordered (re-rank rows, phase-1 lists;
      reward_model.RScoreConfig.gen_weight).
    r_score_lambdas: (λ1 CTR, λ2 CVR, λ3 CTCVR, λ4 relevance) of R_score.
    r_score_form: "linear" (R_score) or "log" (log R_score; with gen_weight 1
      the key is log(R_score · π)) (reward_model.RScoreConfig.form).
    run_phase1, run_phase2: which phases run.
    rerank: add the RM re-rank row ("onesearch+pars2+rm") to the eval.
    rerank_label_relevance: S_rel from relevance labels in that row (leaks
      the eval's graded-NDCG labels).
    seed: RM, example sampling and phase seeds (phase k: seed + k).
    grpo: turns the OneSearch-V2 GRPO phase on (None = off): a dict of
      ``pars.grpo.GRPOConfig`` fields, e.g. {'variant': 'tpma', 'num_steps':
      50, 'kl_coef': 0.05, 'updates_per_batch': 2}, plus 'learning_rate';
      num_steps also sets log_every (<= 10), the optimizer's total_steps and
      the checkpoint cadence, as for a phase.
  """

  base = ParsStageConfig()
  pars = base.pars
  if steps is None:
    steps = (pars.phase1.num_steps, pars.phase2.num_steps)
  if len(steps) != 2:
    raise ValueError(f"pars_config.steps must be (phase1, phase2): {steps}")

  def phase(cfg, n: int, k: int):
    n = int(n)
    # A phase shorter than the warmup warms up over all but its last step
    # (a cosine / linear decay needs warmup < total steps).
    warm = cfg.optimizer.warmup_steps if warmup_steps is None else warmup_steps
    opt = _given(learning_rate=learning_rate, decay=decay)
    opt["warmup_steps"] = min(int(warm), max(n - 1, 0))
    return _replace(
      cfg,
      _given(
        num_steps=n,
        log_every=max(1, min(10, n)),
        seed=None if seed is None else seed + k,
        loss=_replace(
          cfg.loss,
          _given(
            beta=beta,
            sft_weight=sft_weight,
            reg_weight=reg_weight,
            use_reward_weight=reward_weight,
            kind=loss_kind,
            temperature=temperature,
            trie_logprobs=trie_logprobs,
          ),
          "ListwiseConfig",
        ),
        optimizer=_replace(
          cfg.optimizer, {**opt, "total_steps": max(n, 1)}, "OptimizerConfig"
        ),
        checkpoint=dataclasses.replace(cfg.checkpoint, save_every_steps=max(n, 1)),
      ),
      "ListwiseTrainConfig",
    )

  data = _given(
    num_negatives=num_negatives,
    phase1_sessions=phase1_sessions,
    generate_batch=generate_batch,
    phase1_rejected=phase1_rejected,
    phase2_rejected=phase2_rejected,
    phase1_pool=phase1_pool,
    seed=seed,
  )
  rm = _given(num_steps=rm_steps, seed=seed)
  r_score = _given(gen_weight=gen_weight, form=r_score_form)
  if r_score_lambdas is not None:
    if len(r_score_lambdas) != 4:
      raise ValueError(
        f"pars_config.r_score_lambdas must be (ctr, cvr, ctcvr, rel): {r_score_lambdas}"
      )
    r_score.update(zip(("lambda_ctr", "lambda_cvr", "lambda_ctcvr", "lambda_rel"),
                       map(float, r_score_lambdas), strict=True))  # fmt: skip
  features = _given(use_stats=rm_stats, release_stats=release_stats)
  return _replace(
    base,
    _given(
      pars=_replace(
        pars,
        _given(
          reward_model=_replace(pars.reward_model, rm, "RewardModelConfig"),
          features=_replace(pars.features, features, "FeatureConfig"),
          r_score=_replace(pars.r_score, r_score, "RScoreConfig"),
          data=_replace(pars.data, data, "PhaseDataConfig"),
          phase1=phase(pars.phase1, steps[0], 1),
          phase2=phase(pars.phase2, steps[1], 2),
          batch_size=batch_size,
          run_phase1=run_phase1,
          run_phase2=run_phase2,
          grpo=None if grpo is None else grpo_config(**grpo),
        ),
        "ParsConfig",
      ),
      generate_beam=generate_beam,
      rerank=rerank,
      rerank_label_relevance=rerank_label_relevance,
    ),
    "ParsStageConfig",
  )


def grpo_config(learning_rate: float | None = None, **fields: Any) -> GRPOConfig:
  """``pars.grpo.GRPOConfig`` from ``pars_config(grpo={...})``'s dict.

  Args:
    learning_rate: the phase's constant learning rate (after warmup).
    **fields: GRPOConfig fields; num_steps also sets log_every (<= 10), the
      optimizer's total_steps (× updates_per_batch: the optimizer counts
      updates) and the checkpoint cadence.
  """
  base = GRPOConfig()
  n = fields.get("num_steps")
  k = int(fields.get("updates_per_batch", base.updates_per_batch))
  opt = _given(learning_rate=learning_rate)
  if k > 1:  # the optimizer counts updates: K per batch of rollouts
    opt["total_steps"] = max(int(n or base.num_steps), 1) * k
  if n is not None:
    n = int(n)
    fields.setdefault("log_every", max(1, min(10, n)))
    opt["total_steps"] = max(n, 1) * k
    opt["warmup_steps"] = min(base.optimizer.warmup_steps, max(n - 1, 0))
    fields.setdefault(
      "checkpoint", dataclasses.replace(base.checkpoint, save_every_steps=max(n, 1))
    )
  if opt:
    fields.setdefault("optimizer", _replace(base.optimizer, opt, "OptimizerConfig"))
  return _replace(base, fields, "GRPOConfig")


def pipeline_config(
  world: WorldConfig | None = None,
  sids: Any = None,
  world_dir: str | None = None,
  stages: tuple[str, ...] | None = None,
  train: Any = None,
  eval: Any = None,
  pars: Any = None,
) -> PipelineConfig:
  """The main job's config (``pipeline.PipelineConfig``; None = its default,
  except eval and pars, which this fills with ``eval_config()`` and
  ``pars_config()``: the objects the stages would use for None).

  Args:
    world: the world to simulate (default ``world_config()``, the
      dataclass's).
    sids: the KHQE BuildConfig (None = default).
    world_dir: real data in the KuaiSearch schema instead of simulating.
    stages: stages in stages.config.STAGE_ORDER order with their STAGE_NEEDS
      (e.g. without "pars": the eval has the SFT row only).
    train: the SFTConfig of the train stage (None = ``sft_config()``).
    eval: the EvalConfig of the eval stage (None = ``eval_config()``).
    pars: the pars stage's ParsStageConfig (None = ``pars_config()``).
  """
  given = _given(
    world=world,
    world_dir=world_dir,
    stages=None if stages is None else tuple(stages),
    sids=sids,
    train=train,
    eval=eval if eval is not None else eval_config(),
    pars=pars if pars is not None else pars_config(),
  )
  return PipelineConfig(**given)
