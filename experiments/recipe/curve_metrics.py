"""The validation-day metrics of a curve point (experiments/recipe/curves.py);
flag-free, so tests and notebooks can import it."""

from __future__ import annotations

import numpy as np


def click_metrics(eval_set, rows, mask) -> tuple[float, float, dict]:
  """Click HR@10 and MRR@10 (item level) over the masked rows, and per
  query-frequency slice ``{slice: [HR@10, MRR@10, rows]}``."""
  targets = eval_set.targets("click")
  hits, rr, freq = [], [], []
  for r in np.nonzero(mask)[0]:
    want = set(int(t) for t in targets[r] if t >= 0)
    top = [int(i) for i in rows[r, :10]]
    ranks = [j for j, i in enumerate(top) if i in want]
    hits.append(1.0 if ranks else 0.0)
    rr.append(1.0 / (ranks[0] + 1) if ranks else 0.0)
    freq.append(str(eval_set.query_freq[r]))
  hits, rr, freq = np.array(hits), np.array(rr), np.array(freq)
  slices = {
    f: [
      float(hits[freq == f].mean()),
      float(rr[freq == f].mean()),
      int((freq == f).sum()),
    ]
    for f in sorted(set(freq.tolist()))
  }
  return float(hits.mean()), float(rr.mean()), slices
