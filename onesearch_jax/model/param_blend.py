"""One step of a parameter moving average, shared by its two users.

``train/param_ema.py`` serves an EMA of phase 3's parameters and
``v2/sdft.py``'s EMA teacher follows the student; both move one model's
``nnx.Param`` leaves towards another's:

  θ_avg ← d·θ_avg + (1 − d)·θ.
"""

from __future__ import annotations

import jax
from flax import nnx


def blended_params(avg: nnx.Module, model: nnx.Module, decay: float) -> nnx.State:
  """d·θ_avg + (1 − d)·θ for every nnx.Param, in θ's dtype (not applied).

  Args:
    avg: the average; same structure (and leaf shapes) as `model`.
    model: the model it moves towards.
    decay: d, a Python float or a scalar array.

  Returns:
    The blended nnx.Param state of `avg`'s structure.
  """
  return jax.tree.map(
    lambda a, p: (decay * a + (1.0 - decay) * p).astype(p.dtype),
    nnx.state(avg, nnx.Param),
    nnx.state(model, nnx.Param),
  )
