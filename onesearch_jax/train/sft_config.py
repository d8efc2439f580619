"""The SFT schedule's config: ``SFTConfig``, its JSON form, and the ModelConfig
a vocabulary + SID artefact imply.

* ``SFTConfig``: the three phases (steps, lengths, task rates, optimizer
  schedule); the defaults are the main job's (``MAIN_PHASE_TASKS``).
* ``config_to_dict`` / ``config_from_dict``: the ``sft_config.json`` form (an
  on-disk format, hashed by the pipeline's stage markers; see ``config_io``).
* ``derive_model_config``: vocab_size, SID ranges (one per OPQ code of the
  artefact, ``artefact_opq_subspaces``), Q-Former on/off from the data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any

from onesearch_jax import config_io
from onesearch_jax import sharding as sh
from onesearch_jax.data import museq
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.khqe import artefact
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.train import loop
from onesearch_jax.train.param_ema import ParamEMAConfig
from onesearch_jax.v2.sdft import SDFTConfig

PHASES = ("phase1", "phase2", "phase3")

# The main job's SFT task lists (docs/TRAINING.md, "The recipe"): SID targets
# only; phase 2 adds query -> clicked-item SID pairs; title -> SID indexing is
# replayed in phases 2 and 3 (rate = multiplier x the task's example count).
# SFTConfig.phase_tasks defaults to it.
MAIN_PHASE_TASKS = (
  (("s1_title_to_sid", 1.0), ("s1_query_to_sid", 1.0)),
  (("s2_query_to_sidi", 1.0), ("s2_sidq_to_sidi", 1.0), ("s1_title_to_sid", 0.5)),
  (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.2)),
)


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """The three SFT phases (the paper's "SFT stage k" is our phase k: "stage"
  names the pipeline stages); the defaults are the main job's schedule (the
  data-efficient recipe of docs/TRAINING.md), which ``configs.sft_config()``
  and gin/runs/main.gin reproduce.

  Attributes:
    model: the model sizes (default: the "main" preset); vocab_size,
      sid_ranges, emb_placeholder_id, num_query_tokens and seq_feature_dim
      are replaced by the values the vocabulary and SID artefact imply
      (``derive_model_config``).
    train: the per-phase loop settings (log/eval cadence, seed, loss,
      optimizer, checkpoints); num_steps (1 here, a placeholder) and
      optimizer.total_steps are set to each phase's steps.
    mesh: device mesh and sharding rules.
    steps: optimizer steps of phase 1, 2, 3. Phase 3's 0 (the default) =
      ``phase3_passes`` passes over its data, made into steps when the tasks
      are registered (``with_phase3_rows``); a positive value is used as it
      is and the passes are ignored (as a trainer's max_steps overrides its
      epochs).
    batch_size: global batch size (split over hosts, then the data axes).
    lengths: (inputs, targets) token lengths of phase 1, 2, 3; phase 3's
      are also the eval set's.
    eval_batches: batches of eval_click in the teacher-forced eval.
    eval_batch_size: rows per eval batch.
    museq: Mu-Seq settings and ablation switches.
    sentencepiece: the text vocabulary's settings.
    prefix: seqio task name prefix.
    restrict_sid_levels: per-level SID softmax (``derive_model_config``).
    shuffle_buffer: examples per task in the train shuffle buffer (0 = the
      seqio task's own, 10,000); filling it is the cost of a phase's first
      batch.
    phase_tasks: per phase, ((task kind, rate multiplier), ...): the phase
      samples each task with probability proportional to multiplier x its
      number of examples (examples-proportional, as seqio's mixtures); a
      kind of another phase may be listed (e.g. indexing replay of
      "s1_title_to_sid" in phase 3). An empty tuple for a phase = its seqio
      mixture ``{prefix}_phase{k}`` (every task of the phase at rate 1).
    schedule: "per_phase" (each phase warms up and decays over its own
      steps) or "continuous" (one warmup + decay over the sum of the steps,
      later phases continue it: no re-warming).
    sid_init: initialise the SID token embeddings (and logits columns) from
      the KHQE codebooks before phase 1 (``train.sid_init``).
    length_buckets: encoder-length bucket bounds of the train batches
      (``model_batches.TrainBatches``): a batch holds one bucket's examples
      and its encoder is cut to the bound. () = every batch padded to the
      phase's input length. Multi-host runs pad every batch (logged).
    task_cache_dir: "" (default) = the phases preprocess their tasks on the
      fly; else a seqio task cache written by the Beam job
      (``data/cache_tasks.py``; local or ``gs://``): the run adopts its
      vocabulary, checks it was made from this world, SID artefact and
      Mu-Seq / sentencepiece settings, and reads every phase task from it
      (``use_cached=True``; data/task_cache.py). Off, it is left out of the
      JSON form, so the train stage's inputs hash is unchanged.
    sdft: None (default) = phase 3 trains on its own prompts; an SDFTConfig
      = phase 3 trains with OneSearch-V2's self-distillation (SPEC §6.4,
      ``v2/sdft.py``): every batch is a pair, the teacher prompts with the
      keyword thoughts and the student prompts without them (the same
      examples and targets), and the step minimises L_SDFT. Needs
      ``museq.keywords`` on and ``museq.keywords_in = "teacher"`` (eval and
      serving prompts then carry no keywords). Off, it is left out of the
      JSON form, and so is its ``teacher`` while "joint" (the default).
    param_ema: a ``train.param_ema.ParamEMAConfig`` (default: decay 0.995
      from phase-3 step 1,000) = phase 3 keeps an exponential moving average
      of its parameters, and eval, serving and PARS use the average
      (``train/param_ema.py``); None = phase 3 serves its last parameters
      (left out of the JSON form, as in files from before the switch).
    phase3_passes: with ``steps[2] == 0``: phase 3 draws this many times
      the rate-weighted examples of its tasks, i.e. ``ceil(phase3_passes x
      sum_i(multiplier_i x examples_i) / batch_size)`` steps, which is
      ``phase3_passes`` passes over every task at multiplier 1 (the seqio
      mixture of an empty ``phase_tasks[2]``: its rates). The main job's
      1.0 is one pass over ``s3_personal`` and ``s3_window`` (0.2 over the
      titles): a world with more training sessions gets more steps, so the
      newest training day is always reached (a fixed 2,100 steps covered
      1.01 passes on the validation days the recipe was chosen on, but
      0.86-0.91 on the test days; docs/TRAINING.md). Left out of the JSON
      form when ``steps[2] > 0`` (unused).
  """

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig.main)
  train: loop.TrainConfig = loop.TrainConfig(num_steps=1)
  mesh: sh.MeshConfig = sh.MeshConfig()
  steps: tuple[int, int, int] = (100, 100, 0)
  batch_size: int = 32
  # Hold every prompt of the default world with one-token labels (phase 1/2
  # inputs <= 42, phase 3 / eval <= 108 tokens) and the 5-token SID + EOS
  # targets; text targets need more: ((64, 40), (64, 40), (192, 6)).
  lengths: tuple[tuple[int, int], ...] = ((48, 6), (48, 6), (112, 6))
  eval_batches: int = 4
  eval_batch_size: int = 64
  museq: museq.MuSeqConfig = museq.MuSeqConfig()
  sentencepiece: vocab_lib.SentencePieceConfig = vocab_lib.SentencePieceConfig()
  prefix: str = "onesearch"
  restrict_sid_levels: bool = True
  shuffle_buffer: int = 2000
  phase_tasks: tuple[tuple[tuple[str, float], ...], ...] = MAIN_PHASE_TASKS
  schedule: str = "continuous"
  sid_init: bool = False
  length_buckets: tuple[int, ...] = (48, 64, 80, 96)
  task_cache_dir: str = ""
  sdft: SDFTConfig | None = None
  param_ema: ParamEMAConfig | None = ParamEMAConfig()
  phase3_passes: float = 1.0

  def __post_init__(self):
    if (
      self.param_ema is not None
      and self.sdft is not None
      and self.sdft.teacher == "ema"
    ):
      raise ValueError(
        "SFTConfig: param_ema and an EMA self-distillation teacher "
        "(sdft.teacher = 'ema') share the train state's third slot; use one"
      )
    if self.sdft is not None and not self.museq.teacher_keywords:
      raise ValueError(
        "SFTConfig.sdft needs teacher keywords: museq.keywords 'builtin' or "
        f"'cache:<path>' (got {self.museq.keywords!r}) and museq.keywords_in "
        f"'teacher' (got {self.museq.keywords_in!r})"
      )
    if self.sdft is None and self.museq.teacher_keywords:
      raise ValueError(
        "museq.keywords_in = 'teacher' puts the keywords in the teacher prompt of "
        "self-distillation only; set SFTConfig.sdft too (or keywords_in 'prompt')"
      )
    if any(int(b) <= 0 for b in self.length_buckets):
      raise ValueError(
        f"SFTConfig.length_buckets must be > 0, got {self.length_buckets}"
      )
    if len(self.phase_tasks) != 3:
      raise ValueError(f"SFTConfig.phase_tasks needs 3 entries, got {self.phase_tasks}")
    for entry in self.phase_tasks:
      for kind, rate in entry:
        if not isinstance(kind, str) or not float(rate) > 0:
          raise ValueError(f"SFTConfig.phase_tasks: bad (kind, rate) {(kind, rate)}")
    if self.schedule not in ("per_phase", "continuous"):
      raise ValueError(
        f"SFTConfig.schedule must be 'per_phase' or 'continuous', got {self.schedule!r}"
      )
    if len(self.steps) != 3 or min(self.steps[:2]) <= 0 or self.steps[2] < 0:
      raise ValueError(
        "SFTConfig.steps must be 3 ints, phases 1 and 2 > 0, phase 3 >= 0 "
        f"(0 = phase3_passes), got {self.steps}"
      )
    if self.steps[2] == 0 and not self.phase3_passes > 0:
      raise ValueError(
        f"SFTConfig.phase3_passes must be > 0 when steps[2] is 0, got "
        f"{self.phase3_passes}"
      )
    if len(self.lengths) != 3 or any(len(x) != 2 or min(x) <= 0 for x in self.lengths):
      raise ValueError(
        f"SFTConfig.lengths must be 3 (inputs, targets) pairs, got {self.lengths}"
      )
    if self.lengths[2][1] < 4:
      # run_sft checks the artefact's SID width (3 + opq_subspaces) + EOS.
      raise ValueError("phase-3 targets length must be >= 4 (a 3-token SID + EOS)")
    if self.batch_size <= 0 or self.eval_batch_size <= 0 or self.eval_batches < 0:
      raise ValueError("batch sizes must be > 0 and eval_batches >= 0")
    warm = self.train.optimizer.warmup_steps
    known = [n for n in self.steps if n > 0]  # phase 3 may be resolved later
    shortest = sum(self.steps) if self.schedule == "continuous" else min(known)
    if self.train.optimizer.decay in ("cosine", "linear") and warm >= shortest:
      raise ValueError(
        f"optimizer.warmup_steps {warm} must be < {shortest} steps "
        f"(schedule {self.schedule})"
      )

  def with_phase3_rows(self, weighted_rows: float) -> SFTConfig:
    """This config with phase 3's steps made from ``phase3_passes``.

    Args:
      weighted_rows: sum over phase 3's tasks of rate multiplier x examples
        (``train.sft.phase3_weighted_rows``).

    Returns:
      self when ``steps[2] > 0``; else a copy with ``steps[2] =
      ceil(phase3_passes x weighted_rows / batch_size)`` (at least 1).
    """
    if self.steps[2] > 0:
      return self
    if not weighted_rows > 0:
      raise ValueError(f"phase 3 has no examples to make steps of ({weighted_rows})")
    n = max(1, math.ceil(self.phase3_passes * weighted_rows / self.batch_size - 1e-9))
    return dataclasses.replace(self, steps=(self.steps[0], self.steps[1], n))

  def phase_train_config(self, k: int) -> loop.TrainConfig:
    """The loop config of phase k (0-based).

    Raises:
      ValueError: phase 3's steps are still to be made from the passes
        (``with_phase3_rows``), and phase k needs them.
    """
    if self.steps[2] == 0 and (k == 2 or self.schedule == "continuous"):
      raise ValueError(
        f"phase {k + 1}'s schedule needs phase 3's steps, which come from "
        f"phase3_passes {self.phase3_passes} and the registered tasks: call "
        "train.sft.resolve_phase3_steps(cfg, registered) (or "
        "SFTConfig.with_phase3_rows) first"
      )
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
  "phase_tasks": ((), (), ()),
  "schedule": "per_phase",
  "sid_init": False,
  "length_buckets": (),
  "param_ema": None,
  "phase3_passes": SFTConfig.phase3_passes,  # only absent when unused
}


def config_to_dict(cfg: SFTConfig) -> dict[str, Any]:
  """JSON-able form (``config_from_dict`` inverts it). ``task_cache_dir``,
  ``sdft`` (and its ``teacher`` while "joint"), ``param_ema`` and the V2 switches of
  ``museq`` (``museq.V2_SWITCHES_OFF``) are left out when off (the defaults:
  "", None, ...), and ``phase3_passes`` when ``steps[2] > 0`` (unused), so a
  run without them writes (and hashes) what it did before they existed."""
  out = config_io.to_dict(cfg)
  if not out["task_cache_dir"]:
    del out["task_cache_dir"]
  if out["sdft"] is None:
    del out["sdft"]
  elif out["sdft"]["teacher"] == "joint":
    del out["sdft"]["teacher"]  # the form (and hash) from before the EMA switch
  if out["param_ema"] is None:
    del out["param_ema"]
  if cfg.steps[2] > 0:
    del out["phase3_passes"]  # unused: the form (and hash) from before it
  out["museq"] = config_io.to_dict(museq.config_dict(cfg.museq))
  return out


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
