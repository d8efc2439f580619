"""Peak FLOP/s for MFU: measured (a large matmul) or declared (TPU tables).

MFU = model FLOPs per second / peak FLOP/s. On a CPU there is no datasheet
number worth trusting (turbo, shared cores, the BLAS in use), so the peak is
measured in the same process as the training run: the best of several large
square matmuls in the dtype the model computes in. On TPUs the declared
per-chip bf16 peak is the convention (PaLM, MaxText).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Declared dense bf16 peak FLOP/s per chip (Google Cloud TPU documentation).
DECLARED_BF16_PEAK = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,  # v5e
  "TPU v5e": 197e12,
  "TPU v5": 459e12,  # v5p
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,  # v6e (Trillium)
  "TPU v6e": 918e12,
}


def declared_peak(device: jax.Device | None = None) -> float | None:
  """Declared bf16 peak of one chip of `device`'s kind, or None if unknown."""
  device = device if device is not None else jax.devices()[0]
  kind = getattr(device, "device_kind", "")
  return DECLARED_BF16_PEAK.get(kind)


class MatmulPeak:
  """A reusable [n, n] @ [n, n] probe (arrays and executable built once).

  `measure` returns the best wall-clock FLOP/s of `repeats` calls and keeps
  the best FLOP per CPU-second of the same calls in `cpu_flops` (process CPU
  time of all threads, so on an idle machine cpu_flops ~ wall / cores).
  """

  def __init__(
    self, n: int = 2048, dtype: str = "float32", device: jax.Device | None = None
  ):
    if n <= 0:
      raise ValueError(f"MatmulPeak: n={n} must be > 0")
    self.n = n
    device = device if device is not None else jax.devices()[0]
    key_a, key_b = jax.random.split(jax.random.key(0))
    self._a = jax.device_put(jax.random.normal(key_a, (n, n), dtype), device)
    self._b = jax.device_put(jax.random.normal(key_b, (n, n), dtype), device)
    self._matmul = jax.jit(jnp.matmul)
    self._matmul(self._a, self._b).block_until_ready()
    self.cpu_flops = 0.0

  def measure(self, repeats: int = 5) -> float:
    """Best wall-clock FLOP/s over `repeats` timed calls."""
    if repeats <= 0:
      raise ValueError(f"MatmulPeak.measure: repeats={repeats} must be > 0")
    flops = 2.0 * self.n**3
    best = best_cpu = float("inf")
    for _ in range(repeats):
      t, c = time.perf_counter(), time.process_time()
      self._matmul(self._a, self._b).block_until_ready()
      best = min(best, time.perf_counter() - t)
      best_cpu = min(best_cpu, time.process_time() - c)
    self.cpu_flops = flops / max(best_cpu, 1e-9)
    return flops / best


def measure_matmul_peak(
  n: int = 2048,
  repeats: int = 5,
  dtype: str = "float32",
  device: jax.Device | None = None,
) -> float:
  """Best observed FLOP/s of an [n, n] @ [n, n] matmul on one device.

  Args:
    n: matrix size (2048 is large enough to saturate a CPU's FMA units and
      small enough to stay mostly in cache).
    repeats: timed calls after one warm-up; the fastest counts (the least
      disturbed by other processes on a shared machine).
    dtype: the compute dtype ('float32' or 'bfloat16').
    device: defaults to jax.devices()[0].

  Returns:
    2 n^3 / best seconds.
  """
  return MatmulPeak(n, dtype, device).measure(repeats)
