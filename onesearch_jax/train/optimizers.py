"""optax optimizers and learning-rate schedules from a frozen OptimizerConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

OPTIMIZERS = ("adamw", "adafactor")
DECAYS = ("cosine", "linear", "constant", "rsqrt")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer, schedule and clipping; the defaults are the main job's SFT
  optimizer (AdamW, peak lr 3e-3, 10 warmup steps, cosine to 10%; each SFT
  phase sets total_steps)."""

  name: str = "adamw"  # 'adamw' or 'adafactor'
  learning_rate: float = 3e-3  # peak learning rate
  warmup_steps: int = 10  # linear warmup from 0 to the peak
  decay: str = "cosine"  # 'cosine', 'linear', 'constant' or 'rsqrt' after warmup
  total_steps: int = 1000  # warmup + decay length (cosine/linear)
  end_lr_fraction: float = 0.1  # final lr = peak * this (cosine/linear)
  weight_decay: float = 0.01  # decoupled, on >= 2-D parameters only
  b1: float = 0.9  # AdamW beta1
  b2: float = 0.999  # AdamW beta2 (Adafactor uses its own decay)
  eps: float = 1e-8  # AdamW epsilon
  clip_norm: float = 1.0  # global-norm clipping; 0 disables
  # The schedule is evaluated at (optimizer step + step_offset): a later SFT
  # phase continues one schedule over all phases instead of re-warming.
  step_offset: int = 0

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ValueError(f"OptimizerConfig.name {self.name!r} not in {OPTIMIZERS}")
    if self.decay not in DECAYS:
      raise ValueError(f"OptimizerConfig.decay {self.decay!r} not in {DECAYS}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.warmup_steps < 0 or self.total_steps <= 0:
      raise ValueError("warmup_steps must be >= 0 and total_steps > 0")
    if self.decay in ("cosine", "linear") and self.warmup_steps >= self.total_steps:
      raise ValueError(
        f"warmup_steps {self.warmup_steps} must be < total_steps {self.total_steps}"
      )
    if self.clip_norm < 0 or self.weight_decay < 0:
      raise ValueError("clip_norm and weight_decay must be >= 0")
    if self.step_offset < 0:
      raise ValueError(f"step_offset must be >= 0, got {self.step_offset}")


def optimizer_config(**overrides: Any) -> OptimizerConfig:
  """Factory for gin: OptimizerConfig with keyword overrides."""
  return OptimizerConfig(**overrides)


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Linear warmup to cfg.learning_rate, then the configured decay, at
  step + cfg.step_offset."""
  base = _base_schedule(cfg)
  if not cfg.step_offset:
    return base
  return lambda step: base(step + cfg.step_offset)


def _base_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  peak = cfg.learning_rate
  warm = cfg.warmup_steps
  end = peak * cfg.end_lr_fraction
  if cfg.decay == "cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0, peak, warm, cfg.total_steps, end_value=end
    )
  if cfg.decay == "rsqrt":
    # T5 style: peak until warmup ends, then peak * sqrt(warmup / step).
    def rsqrt(step):
      step = jax.numpy.asarray(step, jax.numpy.float32)
      w = float(max(warm, 1))
      return jax.numpy.where(
        step < w, peak * step / w, peak * jax.numpy.sqrt(w / jax.numpy.maximum(step, w))
      )

    return rsqrt
  warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
  if cfg.decay == "linear":
    after = optax.linear_schedule(peak, end, cfg.total_steps - warm)
  else:
    after = optax.constant_schedule(peak)
  return optax.join_schedules([warmup, after], [warm])


def _decay_mask(params):
  """Weight decay only on matrices (not RMSNorm scales)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """The optax chain: global-norm clipping, then AdamW or Adafactor."""
  schedule = make_schedule(cfg)
  if cfg.name == "adamw":
    opt = optax.adamw(
      schedule,
      b1=cfg.b1,
      b2=cfg.b2,
      eps=cfg.eps,
      weight_decay=cfg.weight_decay,
      mask=_decay_mask,
    )
  else:
    opt = optax.adafactor(
      learning_rate=schedule,
      weight_decay_rate=cfg.weight_decay or None,
      weight_decay_mask=_decay_mask,
    )
  if cfg.clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
  return opt
