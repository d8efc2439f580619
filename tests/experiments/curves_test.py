"""experiments/recipe/curve_metrics.py: the metrics of a curves.py point."""

from __future__ import annotations

import pathlib
import types

import numpy as np
import pytest

from onesearch_jax import testing

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _metrics():
  return testing.load_script(
    "_onesearch_recipe_curve_metrics",
    ROOT / "experiments" / "recipe" / "curve_metrics.py",
  )


def test_click_metrics_overall_and_per_slice_by_hand():
  targets = np.array([[3, -1], [7, 8], [5, -1], [9, -1], [1, -1]])
  eval_set = types.SimpleNamespace(
    targets=lambda kind: targets,
    query_freq=np.array(["head", "head", "tail", "torso", "tail"]),
  )
  rows = np.full((5, 12), -1, np.int32)
  rows[0, :3] = [3, 4, 5]  # hit at rank 1
  rows[1, :3] = [1, 2, 8]  # hit at rank 3
  rows[2, :3] = [6, 7, 8]  # miss
  rows[3, 10] = 9  # rank 11: outside the top 10
  rows[4, :2] = [2, 1]  # hit at rank 2, but the row is masked out
  mask = np.array([True, True, True, True, False])
  hr, mrr, slices = _metrics().click_metrics(eval_set, rows, mask)
  assert hr == pytest.approx(2 / 4)
  assert mrr == pytest.approx((1 + 1 / 3) / 4)
  assert slices == {
    "head": [1.0, pytest.approx((1 + 1 / 3) / 2), 2],
    "tail": [0.0, 0.0, 1],
    "torso": [0.0, 0.0, 1],
  }
