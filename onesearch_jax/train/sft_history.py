"""A SFT run's per-phase history: ``phase{k}/history.jsonl`` and the curves.

``append_history(phase_dir, row)`` appends one logged step or eval (a row
``{"kind": "train" | "eval", "step": int, ...metrics}``);
``read_history(phase_dir)`` reads them back (train rows, eval rows);
``plot_curves(history, path)`` draws train loss and eval SID accuracy over
the global step (``run_sft``'s ``training_curves.png``).
"""

from __future__ import annotations

import json
import pathlib

from onesearch_jax.train.sft_config import PHASES
from onesearch_jax.world import jsonl

HISTORY = "history.jsonl"


def append_history(phase_dir: pathlib.Path, row: dict) -> None:
  """Appends one row (a logged train step or an eval) to the phase's history."""
  with open(phase_dir / HISTORY, "a") as f:
    f.write(json.dumps(row, sort_keys=True) + "\n")


def read_history(phase_dir: pathlib.Path) -> tuple[list[dict], list[dict]]:
  """(train rows, eval rows) of a phase; a resumed run's re-done steps keep
  only their last entry."""
  path = pathlib.Path(phase_dir) / HISTORY
  if not path.exists():
    return [], []
  rows: dict[tuple[str, int], dict] = {}
  for _, r in jsonl.iter_jsonl(path, required=("kind", "step")):
    rows[(r["kind"], int(r["step"]))] = r
  ordered = sorted(rows.values(), key=lambda r: r["step"])
  return (
    [r for r in ordered if r["kind"] == "train"],
    [r for r in ordered if r["kind"] == "eval"],
  )


def plot_curves(history: dict[str, dict[str, list[dict]]], path: pathlib.Path) -> None:
  """Train loss and eval SID accuracy over the global step, per phase."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
  offset = 0
  for name in PHASES:
    h = history.get(name)
    if not h:
      continue
    tr, ev = h["train"], h["eval"]
    if tr:
      ax_l.plot([offset + r["step"] for r in tr], [r["loss"] for r in tr], label=name)
    if ev:
      ax_a.plot(
        [offset + r["step"] for r in ev],
        [r["eval_accuracy"] for r in ev],
        marker="o",
        label=name,
      )
    offset += h.get("steps", tr[-1]["step"] if tr else 0)
  ax_l.set(xlabel="global step", ylabel="train loss (per token)", title="train loss")
  ax_a.set(
    xlabel="global step",
    ylabel="SID token accuracy",
    title="eval_click, teacher forced",
  )
  for ax in (ax_l, ax_a):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no eval records: no legend (nor warning)
      ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
