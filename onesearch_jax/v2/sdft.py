"""Reasoning-internalised self-distillation (SPEC §6.4) on the model.

One network, two inputs: the teacher batch carries the keyword thoughts
(``MuSeqConfig.keywords`` on), the student batch is the same examples
without them (the same targets, so the same decoder positions). Per step:

  L_SDFT = L_base + α_KL·L_KL + α_R·L_R + L_adv

* L_base: the student's token cross-entropy (the model's loss: label
  smoothing, z-loss, SID-level restriction), or the focal loss
  (``focal``); with R-Drop the mean over the two student passes;
* L_KL = KL(teacher ‖ student)·τ² on the SID target positions, the teacher
  detached (``distill_losses.distill_kl``);
* L_R: R-Drop between two student passes with independent dropout keys;
* L_adv: the base loss again with the FGM perturbation ε·g/‖g‖₂ added to
  the student's input embeddings (g = ∇_e L_base, one extra pass).

Every term but L_base is off by default (``SDFTConfig``); with all of them
off the objective is the model's own loss of the student batch.

Choices (where SPEC and the official code leave it open):
  * The teacher pass is deterministic (no dropout): it is a target. (The
    official joint trainer's teacher runs in train mode, dropout on, only
    because it is the training model.)
  * The teacher CE is reported but not added (as the official code).
  * "SID target positions": the weighted target tokens that are SID tokens
    (the EOS after the SID is left out of L_KL; it stays in L_base).
  * R-Drop's base loss is the mean of the two passes' losses (the R-Drop
    paper); the first pass's logits feed L_KL and FGM.
  * FGM normalises over the whole batch's embedding gradient and reuses the
    first pass's dropout key for the adversarial pass.
  * The first student pass uses the step's dropout key itself (the second
    R-Drop pass fold_in(key, 1)), so with every term off a step is
    ``train.steps.train_step``'s, dropout masks included.
  * The EMA-teacher variant (the official "ema" mode, ``teacher = "ema"``):
    ``sdft_loss`` takes a separate ``teacher_model`` and ``sdft_train_step``
    moves it towards the student after each update,
    θ_T ← d·θ_T + (1 − d)·θ_S (``ema_update``), on the updated student.
    The teacher starts as a copy of the student (in ``run_sft``: phase 2's
    parameters when phase 3 starts, ``train.state.with_ema_teacher``) and
    is part of the checkpointed train state. Only its nnx.Param are
    averaged; the teacher pass has no dropout either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from onesearch_jax.model import layers, param_blend, sid_levels
from onesearch_jax.model import model as model_lib
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.v2 import distill_losses

TEACHERS = ("joint", "ema")  # the official trainer's two modes


@dataclasses.dataclass(frozen=True)
class SDFTConfig:
  """Self-distillation switches; SPEC's values where a term is on."""

  kl_weight: float = 0.1  # α_KL (official kl_weight)
  temperature: float = 1.0  # τ
  rdrop_weight: float = 0.0  # α_R; 0 = off (SPEC: 0.5)
  fgm_epsilon: float = 0.0  # FGM ε; 0 = off (SPEC: 0.6)
  focal: bool = False  # focal loss instead of the cross-entropy
  focal_gamma: float = 3.0
  focal_alpha: float = 2.0
  teacher: str = "joint"  # "joint": the student's own weights; "ema": an EMA copy
  ema_decay: float = 0.999  # d of the EMA teacher (official default)

  def __post_init__(self):
    if self.teacher not in TEACHERS:
      raise ValueError(
        f"SDFTConfig.teacher must be one of {TEACHERS}, got {self.teacher!r}"
      )
    if min(self.kl_weight, self.rdrop_weight, self.fgm_epsilon) < 0:
      raise ValueError(f"SDFTConfig: weights and epsilon must be >= 0, got {self}")
    if self.temperature <= 0 or self.focal_gamma < 0:
      raise ValueError(f"SDFTConfig: temperature > 0 and focal_gamma >= 0: {self}")
    if not 0.0 <= self.ema_decay <= 1.0:
      raise ValueError(f"SDFTConfig: ema_decay must be in [0, 1], got {self.ema_decay}")


def ema_update(teacher: EncoderDecoder, student: EncoderDecoder, decay: float) -> None:
  """θ_T ← decay·θ_T + (1 − decay)·θ_S on every nnx.Param, in place."""
  nnx.update(teacher, param_blend.blended_params(teacher, student, decay))


def _base_loss(
  model: EncoderDecoder,
  logits: jax.Array,
  batch: Mapping[str, jax.Array],
  loss_cfg: model_lib.LossConfig,
  cfg: SDFTConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean token loss of one pass and the model's metric sums."""
  sums = model_lib.sums_of_logits(model, logits, batch, loss_cfg)
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  if not cfg.focal:
    return sums["loss_sum"] / denom, sums
  allowed, _ = model_lib.loss_allowed(model, batch)
  per_token = distill_losses.focal_cross_entropy(
    logits,
    jnp.asarray(batch["decoder_target_tokens"]),
    gamma=cfg.focal_gamma,
    alpha=cfg.focal_alpha,
    allowed=allowed,
  )
  weights = jnp.asarray(batch["decoder_loss_weights"], jnp.float32)
  return jnp.sum(per_token * weights) / denom, sums


def input_embedding_shape(
  model: EncoderDecoder, batch: Mapping[str, jax.Array]
) -> tuple[int, int, int]:
  """[B, L', D] of the encoder input embeddings (L' = N_M + L with the
  Q-Former on and long-seq features given)."""
  b, length = batch["encoder_input_tokens"].shape
  if model.qformer is not None and batch.get("long_seq_features") is not None:
    length += model.cfg.num_query_tokens
  return (b, length, model.cfg.d_model)


def sdft_loss(
  model: EncoderDecoder,
  student: Mapping[str, jax.Array],
  teacher: Mapping[str, jax.Array],
  loss_cfg: model_lib.LossConfig,
  cfg: SDFTConfig,
  key: jax.Array | None,
  teacher_model: EncoderDecoder | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_SDFT of one step (module docstring) and its parts.

  Args:
    model: the shared network.
    student: the student batch (model batch contract, no keywords).
    teacher: the teacher batch: the same examples with keywords (same
      decoder tokens; its encoder length may differ). Its loss weights
      weight L_KL and the teacher CE: 0 on a row leaves it out of both
      (a row without a teacher prompt, ``v2/sdft_batches.py``).
    loss_cfg: the model's loss options.
    cfg: the switches.
    key: dropout key (None: deterministic).
    teacher_model: the EMA teacher (None: ``model`` itself, joint mode).

  Returns:
    (loss scalar, metrics: "base", "kl", "rdrop", "adv", "teacher_ce"
    scalars and the student pass's metric sums).
  """
  t_net = model if teacher_model is None else teacher_model
  t_logits = jax.lax.stop_gradient(t_net(teacher, None))
  t_sums = model_lib.sums_of_logits(model, t_logits, teacher, loss_cfg)
  s_key = key  # the plain step's dropout masks: all terms off = train_step
  logits = model(student, s_key)
  base, sums = _base_loss(model, logits, student, loss_cfg, cfg)
  targets = jnp.asarray(student["decoder_target_tokens"])
  weights = jnp.asarray(student["decoder_loss_weights"], jnp.float32)
  # The teacher's weights: 0 on rows without a teacher prompt (sdft_batches).
  t_weights = jnp.asarray(teacher["decoder_loss_weights"], jnp.float32)
  sid_weights = t_weights * sid_levels.is_sid_token(targets, model.cfg.sid_ranges)
  allowed, _ = model_lib.loss_allowed(model, student)
  zero = jnp.zeros((), jnp.float32)
  kl = rdrop = adv = zero
  if cfg.kl_weight:
    kl = distill_losses.distill_kl(
      t_logits, logits, sid_weights, temperature=cfg.temperature, allowed=allowed
    )
  if cfg.rdrop_weight:
    logits_2 = model(student, layers.fold(key, 1))
    base_2, _ = _base_loss(model, logits_2, student, loss_cfg, cfg)
    base = 0.5 * (base + base_2)
    rdrop = distill_losses.rdrop_kl(logits, logits_2, weights, allowed=allowed)
  if cfg.fgm_epsilon:

    def loss_at(delta):
      out = model(student, s_key, delta)
      return _base_loss(model, out, student, loss_cfg, cfg)[0]

    delta = jnp.zeros(input_embedding_shape(model, student), jnp.float32)
    adv, _ = distill_losses.fgm_loss(loss_at, delta, cfg.fgm_epsilon)
  loss = base + cfg.kl_weight * kl + cfg.rdrop_weight * rdrop + adv
  t_denom = jnp.maximum(t_sums["weight_sum"], 1.0)
  metrics = dict(sums, base=base, kl=kl, rdrop=rdrop, adv=adv)
  metrics["teacher_ce"] = t_sums["loss_sum"] / t_denom
  return loss, metrics


def sdft_train_step(
  model: EncoderDecoder,
  optimizer: nnx.Optimizer,
  student: Mapping[str, jax.Array],
  teacher: Mapping[str, jax.Array],
  loss_cfg: model_lib.LossConfig,
  cfg: SDFTConfig,
  key: jax.Array | None,
  teacher_model: EncoderDecoder | None = None,
) -> dict[str, jax.Array]:
  """One optimizer update on L_SDFT (mutates model and optimizer in place,
  as ``train.steps.train_step``); with an EMA ``teacher_model``, then moves
  it towards the updated student (``cfg.ema_decay``).

  Returns:
    Scalar metrics: loss, base, kl, rdrop, adv, teacher_ce, accuracy,
    grad_norm, tokens, z_loss, sid_level_violations (the last two of the
    student's first pass, as ``train.steps.train_step``).
  """

  def objective(m):
    return sdft_loss(m, student, teacher, loss_cfg, cfg, key, teacher_model)

  (loss, parts), grads = nnx.value_and_grad(objective, has_aux=True)(model)
  optimizer.update(model, grads)
  if teacher_model is not None:
    ema_update(teacher_model, model, cfg.ema_decay)
  denom = jnp.maximum(parts["weight_sum"], 1.0)
  out = {k: parts[k] for k in ("base", "kl", "rdrop", "adv", "teacher_ce")}
  out.update(
    loss=loss,
    accuracy=parts["correct_sum"] / denom,
    grad_norm=optax.global_norm(grads),
    tokens=parts["weight_sum"],
    z_loss=parts["z_loss_sum"] / denom,
    sid_level_violations=parts["sid_level_violations"],
  )
  return out
