"""Self-distillation losses of OneSearch-V2 (SPEC §6.4), pure functions.

* ``distill_kl``: forward KL(teacher ‖ student)·τ² per target token, the
  teacher's logits detached (``jax.lax.stop_gradient``), averaged over the
  valid target tokens (the official joint trainer's reduction).
* ``rdrop_kl``: ½[KL(P1‖P2) + KL(P2‖P1)] of two student passes with
  independent dropout, averaged the same way; gradients reach both passes.
* ``fgm_perturbation`` / ``fgm_loss``: the FGM adversarial step
  r_adv = ε·g/‖g‖₂ on the input embeddings, and the loss at e + r_adv.
* ``focal_cross_entropy``: α·(1 − p_t)^γ·(−log p_t) per token.

Every function takes the SID-level restriction ``allowed`` (bool [..., V])
the model's training loss uses (``model.losses``): logits outside it are
masked before the softmax, so teacher, student and focal loss see the same
per-level distribution as the cross-entropy.

Where SPEC is silent (choices):
  * The token average of the KL and R-Drop terms is Σ w·kl / Σ w over the
    weights ``weights`` (the official trainer's "sum over valid tokens /
    number of valid tokens"); with all weights 0 the term is 0, not NaN.
  * FGM normalises by the L2 norm of the whole gradient tensor it is given
    (the usual FGM on an embedding table); a zero gradient gives a zero
    perturbation instead of NaN. The perturbation is a constant of the
    adversarial loss (stop_gradient), as in FGM.
  * Focal loss has no label smoothing (it is defined on the one-hot target);
    α multiplies every token (SPEC's α = 2 doubles the loss scale).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from onesearch_jax.model.layers import NEG_INF


def _masked_log_softmax(logits: jax.Array, allowed: jax.Array | None) -> jax.Array:
  logits = logits.astype(jnp.float32)
  if allowed is not None:
    logits = jnp.where(allowed, logits, NEG_INF)
  return jax.nn.log_softmax(logits, axis=-1)


def token_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) over the last axis.

  Args:
    log_p, log_q: [..., V] log-probabilities (entries with p_v = 0 add 0).

  Returns:
    [...] float32.
  """
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def _token_mean(per_token: jax.Array, weights: jax.Array) -> jax.Array:
  weights = weights.astype(jnp.float32)
  total = jnp.sum(weights)
  return jnp.sum(per_token * weights) / jnp.maximum(total, 1e-12) * (total > 0)


def distill_kl(
  teacher_logits: jax.Array,
  student_logits: jax.Array,
  weights: jax.Array,
  *,
  temperature: float = 1.0,
  allowed: jax.Array | None = None,
) -> jax.Array:
  """L_KL = (1/|V|)·Σ_{t∈V} KL(softmax(z_t^T/τ) ‖ softmax(z_t^S/τ))·τ².

  The teacher and the student are the same network on two inputs (with and
  without the keywords) and share the target positions, so no alignment
  is needed. No gradient reaches the teacher's logits.

  Args:
    teacher_logits: [B, T, V] logits of the teacher input.
    student_logits: [B, T, V] logits of the student input.
    weights: [B, T] 1 on the target tokens V that count (the SID
      positions), 0 elsewhere; fractional weights weight the average.
    temperature: τ > 0.
    allowed: optional bool [B, T, V] SID-level restriction.

  Returns:
    Scalar float32.
  """
  if temperature <= 0:
    raise ValueError(f"distill_kl: temperature must be > 0, got {temperature}")
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_t = _masked_log_softmax(teacher_logits / temperature, allowed)
  log_s = _masked_log_softmax(student_logits / temperature, allowed)
  return _token_mean(token_kl(log_t, log_s), weights) * temperature**2


def rdrop_kl(
  logits_1: jax.Array,
  logits_2: jax.Array,
  weights: jax.Array,
  *,
  allowed: jax.Array | None = None,
) -> jax.Array:
  """L_R = ½[KL(P1‖P2) + KL(P2‖P1)], averaged over the weighted tokens.

  Args:
    logits_1, logits_2: [B, T, V] two student passes (independent dropout).
    weights: [B, T] target-token weights.
    allowed: optional bool [B, T, V] SID-level restriction.

  Returns:
    Scalar float32, symmetric in the two passes; both receive gradients.
  """
  log_1 = _masked_log_softmax(logits_1, allowed)
  log_2 = _masked_log_softmax(logits_2, allowed)
  sym = 0.5 * (token_kl(log_1, log_2) + token_kl(log_2, log_1))
  return _token_mean(sym, weights)


def fgm_perturbation(grad: jax.Array, epsilon: float) -> jax.Array:
  """r_adv = ε·g / ‖g‖₂, the norm over every element of ``grad``.

  Args:
    grad: [...] gradient of the base loss w.r.t. the input embeddings.
    epsilon: the perturbation's L2 norm (SPEC: 0.6).

  Returns:
    [...] float32, same shape; zeros when ``grad`` is all zero.
  """
  g = grad.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(g)))
  safe = jnp.where(norm > 0, norm, 1.0)
  return jnp.where(norm > 0, epsilon * g / safe, 0.0)


def fgm_loss(
  loss_fn: Callable[[jax.Array], jax.Array],
  embeddings: jax.Array,
  epsilon: float,
) -> tuple[jax.Array, jax.Array]:
  """The FGM adversarial loss L(e + r_adv), r_adv from ∇_e L(e).

  Args:
    loss_fn: embeddings [...] -> scalar base loss (the rest of the model
      closed over).
    embeddings: [...] input embeddings e.
    epsilon: perturbation norm.

  Returns:
    (adversarial loss scalar, r_adv [...]); r_adv is held constant
    (stop_gradient), so the adversarial loss's gradient is ∇L at e + r_adv.
  """
  grad = jax.grad(loss_fn)(embeddings)
  r_adv = jax.lax.stop_gradient(fgm_perturbation(grad, epsilon))
  return loss_fn(embeddings + r_adv.astype(embeddings.dtype)), r_adv


def focal_cross_entropy(
  logits: jax.Array,
  targets: jax.Array,
  *,
  gamma: float = 3.0,
  alpha: float = 2.0,
  allowed: jax.Array | None = None,
) -> jax.Array:
  """Focal loss FL = α·(1 − p_t)^γ·(−log p_t) per token.

  γ = 0 and α = 1 give the cross-entropy. Defaults: SPEC's γ = 3, α = 2.

  Args:
    logits: [..., V] float.
    targets: [...] int target ids.
    gamma: focusing exponent ≥ 0.
    alpha: scale.
    allowed: optional bool [..., V] SID-level restriction.

  Returns:
    [...] float32 per-token loss.
  """
  if gamma < 0:
    raise ValueError(f"focal_cross_entropy: gamma must be >= 0, got {gamma}")
  log_p = _masked_log_softmax(logits, allowed)
  log_pt = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
  if gamma == 0:  # no 0**0 at p_t = 1 (its gradient would be NaN)
    return alpha * -log_pt
  return alpha * jnp.power(1.0 - jnp.exp(log_pt), gamma) * (-log_pt)
