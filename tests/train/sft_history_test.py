"""sft_history.read_history: last entry per (kind, step), file:line errors."""

from __future__ import annotations

import json
import warnings

import pytest

from onesearch_jax.train import sft_history
from onesearch_jax.world import jsonl


def test_read_history_keeps_last_entry_per_step(tmp_path):
  rows = [
    {"kind": "train", "step": 2, "loss": 3.0},
    {"kind": "eval", "step": 2, "acc": 0.1},
    {"kind": "train", "step": 1, "loss": 4.0},
    {"kind": "train", "step": 2, "loss": 2.5},  # a resumed run re-did step 2
  ]
  for row in rows:
    sft_history.append_history(tmp_path, row)
  train, evals = sft_history.read_history(tmp_path)
  assert train == [rows[2], rows[3]]
  assert evals == [rows[1]]
  assert sft_history.read_history(tmp_path / "absent") == ([], [])


def test_read_history_names_file_line_and_field(tmp_path):
  path = tmp_path / sft_history.HISTORY
  path.write_text(
    json.dumps({"kind": "train", "step": 1}) + "\n" + '{"kind": "eval"}\n'
  )
  with pytest.raises(jsonl.JsonlError, match=rf"^{path}:2: field 'step' is missing$"):
    sft_history.read_history(tmp_path)
  path.write_text('{"kind": "train", "step": 1}\n{"kind": "tr')  # a torn last line
  with pytest.raises(jsonl.JsonlError, match=rf"^{path}:2: invalid JSON: "):
    sft_history.read_history(tmp_path)


def test_curves_without_eval_records_plot_without_a_legend_warning(tmp_path):
  history = {
    "phase1": {
      "train": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}],
      "eval": [],
    },
  }
  path = tmp_path / "curves.png"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # matplotlib's "No artists with labels" would raise
    sft_history.plot_curves(history, path)
  assert path.stat().st_size > 0
