"""Compares ESCI recipes on the validation world (experiments/esci/README.md).

  python experiments/esci/compare_recipes.py --root=/tmp/esci_val \
      --recipes base pseudo4 --seeds 0 1 2

Each recipe (RECIPES: world options + gin bindings) runs
``run_esci.py --validation=50`` under ``ROOT/<recipe>`` once per training
seed (``train_config.seed``; the world and the SID stage are shared by the
seeds of a recipe, the train and eval stages are redone). The official test
queries are not in that world. Each run's results.json is copied to
``ROOT/<recipe>/results_seed<s>.json`` (a run whose copy exists is not
redone), and the recipe x seed table of HR@10 / NDCG@10 is printed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run_esci  # noqa: E402

VALIDATION = 50  # train queries held out (esci.validation_ids)
# The teacher-forced eval during training reads whole eval batches (64 rows
# by default): 2 x 25 of the 50 validation queries. A diagnostic only.
VALIDATION_BINDINGS = ("sft_config.eval_batch_size = 25",)
# name -> (esci.write_esci_world options, gin bindings)
RECIPES: dict[str, tuple[dict[str, int], tuple[str, ...]]] = {
  "base": ({"pseudo_per_item": 0}, ()),
  "pseudo4": ({"pseudo_per_item": 4}, ()),
}
SYSTEMS = ("onesearch", "bm25", "dense")
METRICS = ("hr@10", "ndcg@10")


def run_recipe(root: pathlib.Path, name: str, seed: int, csv: str | None) -> dict:
  """Runs (or reads back) one recipe x seed; returns its results.json."""
  out = root / name / f"results_seed{seed}.json"
  if out.exists():
    return json.loads(out.read_text())
  options, bindings = RECIPES[name]
  args = [f"--root={root / name}", f"--validation={VALIDATION}"]
  args += [f"--{k}={v}" for k, v in options.items()]
  args += [f"--gin_bindings={b}" for b in VALIDATION_BINDINGS + bindings]
  args += [f"--gin_bindings=train_config.seed = {seed}"]
  if csv:
    args.append(f"--csv={csv}")
  if run_esci.main(args):
    raise SystemExit(f"{name} seed {seed} failed")
  shutil.copyfile(root / name / "workdir" / "eval" / "results.json", out)
  return json.loads(out.read_text())


def table(results: dict[tuple[str, int], dict]) -> str:
  """Markdown: one row per (recipe, seed), HR@10 / NDCG@10 per system."""
  head = ["recipe", "seed", "queries"]
  head += [f"{s} {m.upper()}" for s in SYSTEMS for m in METRICS]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for (name, seed), res in results.items():
    row = [name, str(seed), str(res["sets"]["click"])]
    for s in SYSTEMS:
      got = res["systems"].get(s, {}).get("click", {}).get("all", {})
      row += [f"{got[m]:.4f}" if got.get(m) is not None else "-" for m in METRICS]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--root", required=True)
  p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  p.add_argument("--csv", default=None)
  args = p.parse_args(argv)
  root = pathlib.Path(args.root).resolve()
  results = {}
  for name in args.recipes:
    for seed in args.seeds:
      results[(name, seed)] = run_recipe(root, name, seed, args.csv)
      print(table(results), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
