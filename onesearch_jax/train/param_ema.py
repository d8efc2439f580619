"""Serving an exponential moving average of the parameters (Polyak averaging).

With ``SFTConfig.param_ema`` set, phase 3 keeps an EMA copy of the model
beside the trained one (the train state's third object, the slot a
self-distillation EMA teacher uses: ``train.state.with_ema_teacher``):

  θ_avg ← θ                              for the first ``start_step`` updates,
  θ_avg ← d·θ_avg + (1 − d)·θ           after them (d = ``decay``),

updated inside the jitted step after each optimizer update. Every checkpoint
of the phase carries both, and its meta says ``"serve": "ema"``: a restore
into a state without the third object (eval, serving, PARS, the curves) gets
the average as the model (``train.checkpoints``), a resume gets both back.
The teacher-forced evals in the training log still score the trained model.

Why, and the defaults: the paper does not average weights. On the
validation day the main job's last phase-3 steps are noisy (checkpoints
100 steps apart differ by up to 0.005 click HR@10), and averaging the last
checkpoints raised click MRR@10 for every training seed (docs/TRAINING.md).
``start_step`` skips the early phase-3 parameters (the phase starts from
phase 2's model, which retrieves almost nothing); ``decay`` 0.995 is a
half-life of ~140 steps: the validation-day curve still rises over the last
1,000 steps, and in the offline test (checkpoints 100 steps apart, two
seeds) half-lives of 100-200 steps gained most, 350 less and 700 fell below
the last checkpoint.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax.model import param_blend

SERVE_META_KEY = "serve"  # checkpoint meta: {"serve": "ema"} = serve the average
SERVE_EMA = "ema"


@dataclasses.dataclass(frozen=True)
class ParamEMAConfig:
  """Attributes:
  decay: the EMA decay per optimizer update after ``start_step``.
  start_step: updates (of the phase) before the average starts; until then
    it is a copy of the parameters.
  """

  decay: float = 0.995
  start_step: int = 1000

  def __post_init__(self):
    if not 0.0 <= self.decay < 1.0:
      raise ValueError(f"ParamEMAConfig: decay must be in [0, 1), got {self.decay}")
    if self.start_step < 0:
      raise ValueError(
        f"ParamEMAConfig: start_step must be >= 0, got {self.start_step}"
      )


def update(avg: nnx.Module, model: nnx.Module, count: jax.Array, cfg: ParamEMAConfig):
  """Moves avg's nnx.Params towards model's, in place.

  Args:
    avg: the average (same structure as model).
    model: the model after this step's optimizer update.
    count: the optimizer step count after the update (int scalar).
    cfg: decay and start.
  """
  copy = count <= cfg.start_step  # an exact copy (bit for bit) until the start
  blended = param_blend.blended_params(avg, model, cfg.decay)
  new = jax.tree.map(
    lambda b, p: jnp.where(copy, p, b), blended, nnx.state(model, nnx.Param)
  )
  nnx.update(avg, new)
