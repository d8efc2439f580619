"""Which of the cascade ranker's features carry its lead? A validation-day probe.

Re-fits the MCA baseline's ranker (BM25 + dense recall, logistic regression
over ``mca.FEATURES``) with groups of features set to 0
(``MCAConfig.drop_features``) on a world whose eval split is the validation
day, and prints click HR@10 / MRR@10, overall and per query-frequency slice,
beside ``query_memory``. Nothing is trained but the ranker (seconds). The
result and its reading are in docs/EXPERIMENTS.md ("What the cascade's lead
is made of").

  python experiments/recipe/mca_features.py --workdir=/tmp/rc/base \
      --out=/tmp/rc/mca_features.md

``--workdir`` holds ``world/`` (built with ``world_config.eval_day =
'validation'``, e.g. curves.py's ``ROOT/base``) and ``sids/``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from onesearch_jax.eval import evaluate, examples  # noqa: E402
from onesearch_jax.eval.baselines import mca  # noqa: E402

# Arm name -> the features it sets to 0 (() = the cascade as the eval runs it).
ARMS: dict[str, tuple[str, ...]] = {
  "mca": (),
  "mca - user": ("user_l2", "user_l3"),
  "mca - query_l3": ("query_l3",),
  "mca - user - query_l3": ("user_l2", "user_l3", "query_l3"),
  "mca - ctr": ("ctr",),
  "mca - item counts": ("log_clicks", "log_imps"),
  "mca - item stats": ("log_clicks", "log_imps", "ctr"),
  "mca - text": ("bm25", "dense", "in_bm25", "in_dense"),
}
SLICES = ("all", "query_freq=head", "query_freq=torso", "query_freq=tail")


def run(workdir: pathlib.Path, arms=ARMS, log=print) -> dict[str, dict[str, tuple]]:
  """Arm -> slice -> (sessions, HR@10, MRR@10) on the workdir's click set.

  Also holds the row ``query_memory`` (the rule baseline, same set). ``log``:
  called with one line per arm (None: silent)."""
  log = log or (lambda _: None)
  tables = examples.read_eval_tables(workdir / "world")
  eval_set = examples.build_eval_set(tables)
  sids = workdir / "sids"
  rankings = evaluate.run_baselines(
    tables, sids, eval_set=eval_set, systems=("query_memory",), log=None
  )
  for name, drop in arms.items():
    config = mca.MCAConfig(recall_k=evaluate.DEFAULT_K_MAX, drop_features=drop)
    out = evaluate.run_baselines(
      tables, sids, eval_set=eval_set, systems=("mca",), mca_config=config, log=None
    )
    rankings[name] = out["mca"]
    log(f"[mca_features] {name}: ranked {len(eval_set.queries)} sessions")
  results = evaluate.evaluate_rankings(eval_set, rankings, ks=(10,))
  table = {}
  for name in ["query_memory", *arms]:
    click = results["systems"][name]["click"]
    table[name] = {
      s: (int(click[s]["n"]), click[s]["hr@10"], click[s]["mrr@10"])
      for s in SLICES
      if s in click
    }
  return table


def markdown(table: dict[str, dict[str, tuple]]) -> str:
  """One row per arm: HR@10 / MRR@10 overall and per slice (sessions in the
  header)."""
  first = next(iter(table.values()))
  head = ["system"] + [f"{s} ({first[s][0]}) HR@10 / MRR@10" for s in first]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, row in table.items():
    cells = [f"{row[s][1]:.4f} / {row[s][2]:.4f}" for s in first]
    lines.append("| " + " | ".join([name, *cells]) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="holds world/ and sids/")
  p.add_argument("--out", default="", help="also write the table here")
  args = p.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  for sub in ("world", "sids"):
    if not (workdir / sub).is_dir():
      print(f"mca_features: {workdir / sub}: no such directory", file=sys.stderr)
      return 2
  text = markdown(run(workdir))
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n", encoding="utf-8")
  return 0


if __name__ == "__main__":
  sys.exit(main())
