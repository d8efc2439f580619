"""SID level bookkeeping: levels from targets, masks, zero probability outside."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from onesearch_jax.model import sid_levels

# a, b, c, then d and d' sharing one range (the OPQ pair).
RANGES = ((10, 14), (14, 18), (18, 22), (22, 30), (22, 30))


def test_levels_count_sid_tokens_even_with_shared_ranges():
  targets = jnp.asarray(
    [
      [11, 15, 19, 25, 29, 1, 0],  # full SID then EOS, pad
      [5, 12, 16, 20, 22, 22, 1],  # a text token first
      [11, 15, 19, 25, 29, 12, 16],  # two SIDs back to back
    ]
  )
  got = np.asarray(sid_levels.target_sid_levels(targets, RANGES))
  np.testing.assert_array_equal(
    got,
    [
      [0, 1, 2, 3, 4, -1, -1],
      [-1, 0, 1, 2, 3, 4, -1],
      [0, 1, 2, 3, 4, 0, 1],
    ],
  )


def test_allowed_mask_and_restrict_logits():
  levels = jnp.asarray([0, 3, 4, -1])
  mask = np.asarray(sid_levels.allowed_mask(levels, RANGES, 32))
  ids = np.arange(32)
  np.testing.assert_array_equal(mask[0], (ids >= 10) & (ids < 14))
  np.testing.assert_array_equal(mask[1], (ids >= 22) & (ids < 30))
  np.testing.assert_array_equal(mask[2], mask[1])
  assert mask[3].all()
  logits = jax.random.normal(jax.random.key(0), (4, 32)) * 10
  probs = np.asarray(jax.nn.softmax(sid_levels.restrict_logits(logits, levels, RANGES)))
  assert np.all(probs[~mask] == 0.0)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_decode_step_level():
  got = [int(sid_levels.decode_step_level(jnp.asarray(t), RANGES)) for t in range(7)]
  assert got == [0, 1, 2, 3, 4, -1, -1]
