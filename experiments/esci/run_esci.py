"""The ESCI real-data run: write the ESCI world, run the pipeline on it, print
the results table (experiments/esci/README.md).

  python experiments/esci/run_esci.py --root=/tmp/esci
  python experiments/esci/run_esci.py --root=/tmp/esci_tiny \
      --gin_file=experiments/esci/esci_tiny.gin            # the test's tiny mode

Writes ``ROOT/esci_world`` (``world.esci.write_esci_world``; skipped when its
manifest already pins the same CSV, so a re-run keeps the world and the
pipeline's stage markers) and runs ``run.py --world_dir=ROOT/esci_world
--workdir=ROOT/workdir`` with the gin file in a subprocess. A re-run resumes:
finished stages are skipped by their markers. Exit status: run.py's.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from onesearch_jax.stages.workdir import Workdir  # noqa: E402
from onesearch_jax.world import esci, reader  # noqa: E402
from onesearch_jax.world import manifest as manifest_lib  # noqa: E402

DEFAULT_CSV = (
  REPO.parent / "shared" / "data" / "real" / "esci" / "esci_pairs_with_titles.csv"
)
DEFAULT_GIN = REPO / "experiments" / "esci" / "esci.gin"
# esci.write_esci_world options a run may set (flags of the same names).
WORLD_OPTIONS = ("validation", "pseudo_per_item", "pseudo_seed")
# The recipe's pseudo-queries per product (chosen on the validation world,
# experiments/esci/README.md).
DEFAULT_PSEUDO_PER_ITEM = 4
# The README table: (results.json metric, column label).
COLUMNS = (
  ("hr@10", "HR@10"),
  ("recall@10", "Recall@10"),
  ("mrr@10", "MRR@10"),
  ("ndcg@10", "NDCG@10"),
  ("gndcg@10", "gNDCG@10"),
)


def ensure_world(
  csv_path: str | os.PathLike, world_dir: pathlib.Path, **options: int
) -> str:
  """Writes the ESCI world unless ``world_dir`` already holds it.

  Args:
    csv_path: the ESCI CSV.
    world_dir: the world directory.
    **options: ``esci.write_esci_world`` options (validation,
      pseudo_per_item, pseudo_seed); unset ones are 0.

  Returns:
    "kept" (the manifest names the same source CSV hash and options, and
    ``reader.check_manifest`` finds every file intact) or "written".
  """
  options = {k: int(options.get(k, 0)) for k in WORLD_OPTIONS}
  manifest = manifest_lib.read_manifest(world_dir)
  if manifest is not None:
    have = manifest.get("config", {})
    same_src = (
      manifest.get("source") == "esci"
      and have.get("src_sha256") == manifest_lib.file_sha256(csv_path)
      and all(have.get(k, 0) == v for k, v in options.items())
    )
    if same_src and manifest.get("files"):
      try:
        intact = not reader.check_manifest(world_dir)
      except reader.SchemaError:
        intact = False
      if intact:
        return "kept"
  esci.write_esci_world(csv_path, world_dir, **options)
  return "written"


def results_table(results: dict, columns=COLUMNS) -> str:
  """A Markdown table of the click set ("all" group): one row per system,
  with the number of scored queries and ``columns`` at K = 10."""
  header = ["system", "queries"] + [label for _, label in columns]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, s in results["systems"].items():
    row = s["click"]["all"]
    vals = [f"{row[m]:.4f}" if row[m] is not None else "-" for m, _ in columns]
    lines.append("| " + " | ".join([name, str(row["n"])] + vals) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--root", required=True, help="holds esci_world/ and workdir/")
  p.add_argument("--csv", default=str(DEFAULT_CSV), help="esci_pairs_with_titles.csv")
  p.add_argument("--gin_file", default=str(DEFAULT_GIN))
  p.add_argument(
    "--gin_bindings", action="append", default=[], help="extra gin bindings"
  )
  p.add_argument(
    "--validation",
    type=int,
    default=0,
    help="hold out N train queries as the test split; leave the test queries out",
  )
  p.add_argument(
    "--pseudo_per_item",
    type=int,
    default=DEFAULT_PSEUDO_PER_ITEM,
    help="pseudo-queries per product from its own text (train sessions)",
  )
  p.add_argument("--pseudo_seed", type=int, default=0)
  args = p.parse_args(argv)
  root = pathlib.Path(args.root).resolve()
  world_dir, workdir = root / "esci_world", root / "workdir"
  start = time.time()
  options = {k: getattr(args, k) for k in WORLD_OPTIONS}
  state = ensure_world(args.csv, world_dir, **options)
  print(f"[esci] world {world_dir}: {state} {options}", flush=True)
  cmd = [
    sys.executable,
    str(REPO / "run.py"),
    f"--gin_file={args.gin_file}",
    f"--world_dir={world_dir}",
    f"--workdir={workdir}",
    f"--gin_search_paths={REPO}",
  ] + [f"--gin_bindings={b}" for b in args.gin_bindings]
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x]
  )
  print("[esci] " + " ".join(cmd), flush=True)
  rc = subprocess.call(cmd, cwd=REPO, env=env)
  if rc:
    print(f"[esci] run.py failed with exit status {rc}", file=sys.stderr)
    return rc
  results = Workdir(workdir).results()
  skips = results.get("skips") or {}
  print(
    f"\n[esci] test queries scored: {results['sets']['click']} with >= 1 Exact "
    f"product; left out: {skips}; wall time {time.time() - start:.0f} s\n"
  )
  print(results_table(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
