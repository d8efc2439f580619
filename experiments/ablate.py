r"""Runs one paper-table ablation: every variant gin file of an experiment folder.

  python experiments/ablate.py --experiment=tokenizer          # Tables 2/3
  python experiments/ablate.py --experiment=opq_depth          # Table 7
  python experiments/ablate.py --experiment=museq              # Table 6
  python experiments/ablate.py --experiment=pars               # Table 5 rows
  python experiments/ablate.py --experiment=v2                 # V2 table rows
  python experiments/ablate.py --experiment=v2 --seeds=0,1,2   # ... over 3 seeds
  python experiments/ablate.py --experiment=museq --variants=full,no_seq_short
  python experiments/ablate.py --experiment=tokenizer --collect_only

An experiment is a folder ``experiments/<name>/`` holding one gin file per
variant, ``<NN>_<variant>.gin``, run in file-name order. Each gin file
includes ``gin/runs/main.gin`` (the main job) and changes only what the
variant ablates, so every row differs from the main job in one switch.

Each variant runs ``run.py`` in its own workdir ``<root>/<name>/<variant>``
(a subprocess: its own gin state and XLA flags). Before a variant's first run
its workdir is seeded with hard links to the nearest earlier variant's
(``seed_source``) finished stage
directories (world/, sids/, train/, pars/ and the XLA cache): a stage whose
inputs are unchanged is then skipped by the pipeline's stage markers, and a
stage whose inputs differ is rebuilt from scratch (markers hash the
configs), so seeding never changes a result, it only saves time. Re-running
resumes: finished variants are skipped stage by stage.

``--seeds=0,1,2`` runs the whole experiment once per training seed
(``train_config.seed``) in ``<root>/<name>/seed<N>/`` (a later seed's first
variant is seeded with the first seed's world and SIDs, which the seed does
not change) and writes ``<root>/<name>/results_seeds.{md,json}``: per
variant and generative system the mean and the range over the seeds of
click and order HR@10 / MRR@10, the valid-SID rate of the beams and the
beam-search time per decoded click query (from the eval stage's marker).

At the end (and after every variant) the rows are collected into
``<root>/<name>/results.{md,json}``: the SID utilisation of the variant's
artefact (ICR, CUR at L1xL2 and in total, SID length) and the item-level
metrics of every generative system of its eval (HR/Recall/MRR@10 and
HR/MRR@350 on the click and order test sets), the relative change of HR@350
against the first variant, then the baselines once.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

from onesearch_jax.khqe import artefact
from onesearch_jax.stages.config import STAGE_ORDER
from onesearch_jax.stages.workdir import Workdir

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
# Stage directories a later variant may reuse (the pipeline re-checks them).
SEEDED = ("world", "world_check", "sids", "train", "pars", "jax_cache")
# What a training seed leaves unchanged (--seeds links these across seeds).
SEED_INVARIANT = ("world", "world_check", "sids", "jax_cache")
BASELINES = ("bm25", "dense", "mca", "sidq_pop", "query_memory")
# (results key, column title) of the metrics table.
COLUMNS = (
  ("click/hr@10", "click HR@10"),
  ("click/recall@10", "click R@10"),
  ("click/mrr@10", "click MRR@10"),
  ("click/hr@350", "click HR@350"),
  ("order/hr@10", "order HR@10"),
  ("order/hr@350", "order HR@350"),
  ("order/mrr@350", "order MRR@350"),
)
# Columns of the table over training seeds (--seeds): "valid_sid_rate" is the
# beams' share of catalogue SIDs, "decode_ms" the beam search's wall time per
# decoded click query (eval stage marker).
SEED_COLUMNS = (
  ("click/hr@10", "click HR@10"),
  ("click/mrr@10", "click MRR@10"),
  ("order/hr@10", "order HR@10"),
  ("order/mrr@10", "order MRR@10"),
  ("valid_sid_rate", "valid SID"),
  ("decode_ms", "decode ms/query"),
)
# The "<set>/<metric>" keys of both tables, read from results.json.
METRIC_KEYS = sorted({key for key, _ in COLUMNS + SEED_COLUMNS if "/" in key})
SID_COLUMNS = (
  ("sid_len", "SID len"),
  ("ICR", "ICR"),
  ("CUR_L1xL2", "CUR L1xL2"),
  ("CUR_Total", "CUR total"),
)


def variant_files(experiment: str | os.PathLike) -> list[pathlib.Path]:
  """The experiment's variant gin files, in run order.

  Args:
    experiment: a folder name under experiments/ or a path to one.
  """
  folder = pathlib.Path(experiment)
  if not folder.is_dir():
    folder = EXPERIMENTS / str(experiment)
  files = sorted(folder.glob("*.gin"))
  if not files:
    raise ValueError(f"{folder}: no variant gin files (<NN>_<variant>.gin)")
  return files


def variant_name(path: pathlib.Path) -> str:
  """``03_no_seq_short.gin`` -> ``no_seq_short``."""
  stem = path.stem
  head, _, rest = stem.partition("_")
  return rest if head.isdigit() and rest else stem


def seed_workdir(
  source: pathlib.Path, target: pathlib.Path, names: Sequence[str] = SEEDED
) -> list[str]:
  """Hard-links the finished stage directories of `source` into a new `target`.

  Only stages with a finished marker (``STAGE.json``) and the XLA cache are
  linked; nothing happens when `target` already exists (a resumed variant).

  Returns:
    The linked directory names.
  """
  if target.exists() or not source.is_dir():
    return []
  target.mkdir(parents=True)
  linked = []
  for name in names:
    src = source / name
    if not src.is_dir() or (name != "jax_cache" and not (src / "STAGE.json").exists()):
      continue
    shutil.copytree(src, target / name, copy_function=_link_or_copy)
    linked.append(name)
  return linked


def _link_or_copy(src: str, dst: str) -> None:
  try:
    os.link(src, dst)
  except OSError:  # another filesystem: copy
    shutil.copy2(src, dst)


def _get(tree: dict, key: str):
  node = tree
  for part in key.split("/"):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def variant_row(workdir: pathlib.Path) -> dict:
  """What one finished variant measured.

  Returns:
    {"sids": {sid_len, ICR, CUR_L1xL2, CUR_Total, sid_variant}, "systems":
    {system: {column key: value}}, "seconds": {stage: s}}; missing parts
    (a stage not run yet) are absent.
  """
  row: dict = {"sids": {}, "systems": {}, "seconds": {}}
  wd = Workdir(workdir)
  for stage in STAGE_ORDER:
    marker = wd.marker(wd.stage_dir(stage))
    if marker is not None:
      row["seconds"][stage] = marker.get("seconds")
  sids_marker = wd.marker(wd.sids)
  if sids_marker is not None:
    metrics = sids_marker["metrics"]
    cfg = artefact.read_config(wd.sids)
    final = cfg.get("metadata", {}).get("variant", "+opq")
    m = metrics.get(final, {})
    row["sids"] = {
      "sid_variant": final,
      "sid_len": 3 + int(cfg["quantizer"]["opq_subspaces"]),
      **{k: m.get(k) for k in ("ICR", "CUR_L1xL2", "CUR_Total")},
    }
  if wd.results_json.exists():
    systems = wd.results()["systems"]
    decode = (wd.marker(wd.eval) or {}).get("decode", {})
    for name, res in systems.items():
      vals = {key: _get(res, key.replace("/", "/all/", 1)) for key in METRIC_KEYS}
      vals["valid_sid_rate"] = _get(res, "diagnostics/valid_sid_rate")
      click = decode.get(name, {}).get("click", {})
      vals["decode_ms"] = (
        1000.0 * click["seconds"] / click["decoded"] if click.get("decoded") else None
      )
      row["systems"][name] = vals
  return row


def _fmt(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.4f}"
  return str(v)


def results_table(rows: dict[str, dict]) -> tuple[str, list[dict]]:
  """The Markdown table of an experiment and its rows as records.

  Args:
    rows: variant -> ``variant_row`` (in run order; the first is the
      reference of the relative HR@350 change).

  Returns:
    (Markdown, records): one record per (variant, generative system) with
    the SID and metric columns and ``d_click_hr350`` / ``d_order_hr350``
    (relative change vs the first variant's "onesearch"), then one per
    baseline (from the first variant that ran it).
  """
  records: list[dict] = []
  ref = None
  for row in rows.values():
    ref = row["systems"].get("onesearch")
    if ref:
      break
  seen_baselines = set()
  for variant, row in rows.items():
    for system, vals in row["systems"].items():
      if system in BASELINES:
        if system in seen_baselines:
          continue
        seen_baselines.add(system)
        rec = {"variant": "(baseline)", "system": system, **vals}
      else:
        rec = {"variant": variant, "system": system, **row["sids"], **vals}
        for kind in ("click", "order"):
          base = (ref or {}).get(f"{kind}/hr@350")
          v = vals.get(f"{kind}/hr@350")
          rec[f"d_{kind}_hr350"] = (v / base - 1.0) if base and v is not None else None
      records.append(rec)
    if not row["systems"]:
      records.append({"variant": variant, "system": "(not evaluated)", **row["sids"]})
  records.sort(key=lambda r: r["variant"] == "(baseline)")
  cols = (
    [("variant", "variant"), ("system", "system")]
    + list(SID_COLUMNS)
    + list(COLUMNS)
    + [("d_click_hr350", "Δ click HR@350"), ("d_order_hr350", "Δ order HR@350")]
  )
  lines = [
    "| " + " | ".join(title for _, title in cols) + " |",
    "|" + "---|" * len(cols),
  ]
  for rec in records:
    cells = []
    for key, _ in cols:
      v = rec.get(key)
      if key.startswith("d_") and v is not None:
        cells.append(f"{100 * v:+.1f}%")
      else:
        cells.append(_fmt(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines), records


def collect(root: pathlib.Path, names: Sequence[str]) -> str:
  """Writes ``root/results.{md,json}`` from the variant workdirs; returns the
  Markdown table."""
  rows = {n: variant_row(root / n) for n in names if (root / n).is_dir()}
  table, records = results_table(rows)
  seconds = {n: r["seconds"] for n, r in rows.items()}
  (root / "results.json").write_text(
    json.dumps({"rows": records, "stage_seconds": seconds}, indent=2, sort_keys=True)
  )
  (root / "results.md").write_text(table + "\n")
  return table


def seeds_table(per_seed: dict[int, dict[str, dict]]) -> tuple[str, list[dict]]:
  """The table over training seeds.

  Args:
    per_seed: seed -> {variant: ``variant_row``} (variants in run order).

  Returns:
    (Markdown, records): one record per (variant, system) seen in any seed,
    baselines once (they do not depend on the training seed), with
    ``<key>/mean``, ``<key>/min``, ``<key>/max`` and ``<key>/n`` for each
    of ``SEED_COLUMNS`` over the seeds that measured it, and ``seeds``.
  """
  order: list[tuple[str, str]] = []
  values: dict[tuple[str, str], dict[str, list[float]]] = {}
  seeds_of: dict[tuple[str, str], list[int]] = {}
  for seed, rows in per_seed.items():
    for variant, row in rows.items():
      for system, vals in row["systems"].items():
        key = ("(baseline)", system) if system in BASELINES else (variant, system)
        if key not in values:
          order.append(key)
          values[key] = {k: [] for k, _ in SEED_COLUMNS}
          seeds_of[key] = []
        if key[0] == "(baseline)" and seeds_of[key]:
          continue  # one training seed's run of a baseline is enough
        seeds_of[key].append(seed)
        for k, _ in SEED_COLUMNS:
          if vals.get(k) is not None:
            values[key][k].append(float(vals[k]))
  order.sort(key=lambda k: k[0] == "(baseline)")
  records, lines = [], []
  lines.append(
    "| variant | system | seeds | "
    + " | ".join(title for _, title in SEED_COLUMNS)
    + " |"
  )
  lines.append("|" + "---|" * (3 + len(SEED_COLUMNS)))
  for key in order:
    rec = {"variant": key[0], "system": key[1], "seeds": seeds_of[key]}
    cells = []
    for k, _ in SEED_COLUMNS:
      v = values[key][k]
      if not v:
        cells.append("-")
        continue
      rec.update({f"{k}/mean": float(np.mean(v)), f"{k}/min": min(v)})
      rec.update({f"{k}/max": max(v), f"{k}/n": len(v)})
      digits = 1 if k == "decode_ms" else 4
      mean = f"{np.mean(v):.{digits}f}"
      cells.append(
        mean if len(v) == 1 else f"{mean} ({min(v):.{digits}f}-{max(v):.{digits}f})"
      )
    records.append(rec)
    seeds = ",".join(str(s) for s in seeds_of[key])
    lines.append(f"| {key[0]} | {key[1]} | {seeds} | " + " | ".join(cells) + " |")
  return "\n".join(lines), records


def collect_seeds(
  root: pathlib.Path, seeds: Sequence[int], names: Sequence[str]
) -> str:
  """Writes ``root/results_seeds.{md,json}`` from ``root/seed<N>/<variant>``;
  returns the Markdown table (mean (min-max) over the seeds)."""
  per_seed = {}
  for seed in seeds:
    sroot = root / f"seed{seed}"
    per_seed[seed] = {n: variant_row(sroot / n) for n in names if (sroot / n).is_dir()}
  table, records = seeds_table(per_seed)
  (root / "results_seeds.json").write_text(
    json.dumps({"seeds": list(seeds), "rows": records}, indent=2, sort_keys=True)
  )
  (root / "results_seeds.md").write_text(table + "\n")
  return table


def run_variant(
  gin_file: pathlib.Path,
  workdir: pathlib.Path,
  extra_gin_files: Sequence[str] = (),
  extra_bindings: Sequence[str] = (),
) -> None:
  """``run.py`` for one variant (a subprocess; raises on failure)."""
  cmd = [sys.executable, str(REPO / "run.py"), f"--workdir={workdir}"]
  cmd += [f"--gin_file={gin_file}"] + [f"--gin_file={g}" for g in extra_gin_files]
  cmd += [f"--gin_bindings={b}" for b in extra_bindings]
  print("$ " + " ".join(cmd), flush=True)
  env = dict(
    os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
  )
  subprocess.run(cmd, check=True, cwd=REPO, env=env)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--experiment", required=True, help="folder under experiments/")
  parser.add_argument("--root", default="exp_workdir", help="workdirs go to ROOT/NAME/")
  parser.add_argument("--variants", default="", help="comma list (default: all)")
  parser.add_argument(
    "--gin_file", action="append", default=[], help="extra gin file after each variant"
  )
  parser.add_argument(
    "--gin_bindings", action="append", default=[], help="extra binding for each variant"
  )
  parser.add_argument(
    "--seeds",
    default="",
    help="comma list of training seeds: the experiment once per seed, in "
    "ROOT/NAME/seed<N>/, and a table of mean and range over the seeds",
  )
  parser.add_argument("--collect_only", action="store_true", help="only the table")
  args = parser.parse_args(argv)
  try:
    seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
  except ValueError:
    parser.error(f"--seeds: expected a comma list of integers, got {args.seeds!r}")
  if len(set(seeds)) != len(seeds):
    parser.error(f"--seeds: a seed repeats: {args.seeds!r}")

  files = variant_files(args.experiment)
  names = [variant_name(f) for f in files]
  if len(set(names)) != len(names):
    raise ValueError(f"{args.experiment}: variant names repeat: {names}")
  chosen = [v for v in args.variants.split(",") if v]
  unknown = sorted(set(chosen) - set(names))
  if unknown:
    raise ValueError(f"--variants {unknown} not in {args.experiment}: {names}")
  root = pathlib.Path(args.root) / pathlib.Path(args.experiment).name
  root.mkdir(parents=True, exist_ok=True)
  todo = [
    (f, n) for f, n in zip(files, names, strict=True) if not chosen or n in chosen
  ]
  if not seeds:
    if not args.collect_only:
      run_variants(root, todo, names, args.experiment, args.gin_file, args.gin_bindings)
    table = collect(root, names)
    print(f"[ablate] {root / 'results.md'}:\n{table}", flush=True)
    return 0
  if not args.collect_only:
    for seed in seeds:
      sroot = root / f"seed{seed}"
      first = root / f"seed{seeds[0]}" / names[0]
      if seed != seeds[0]:
        linked = seed_workdir(first, sroot / names[0], SEED_INVARIANT)
        if linked:
          print(f"[ablate] seed {seed}: seeded {', '.join(linked)} from {first}")
      print(f"[ablate] {args.experiment}: training seed {seed}", flush=True)
      bindings = [*args.gin_bindings, f"train_config.seed={seed}"]
      run_variants(sroot, todo, names, args.experiment, args.gin_file, bindings)
      collect_seeds(root, seeds, names)
  table = collect_seeds(root, seeds, names)
  print(f"[ablate] {root / 'results_seeds.md'}:\n{table}", flush=True)
  return 0


def seed_source(root: pathlib.Path, names: Sequence[str], name: str) -> str | None:
  """The variant a new workdir of ``name`` is seeded from: the nearest earlier
  variant (file order) that has a workdir. In a cumulative experiment (v2)
  that is the row this one adds to, whose SFT model a row that changes only a
  later stage reuses; in a one-switch experiment every variant shares the
  world (and usually the SIDs) with any other, and the markers rebuild what
  differs either way."""
  earlier = names[: names.index(name)]
  return next((n for n in reversed(earlier) if (root / n).is_dir()), None)


def run_variants(root, todo, names, experiment, gin_files, bindings) -> None:
  """Runs the chosen variants in ``root/<variant>`` in order, seeding each new
  workdir from the nearest earlier variant's (``seed_source``), and collects
  ``root/results.*``."""
  start = time.time()
  for k, (gin_file, name) in enumerate(todo):
    workdir = root / name
    source = seed_source(root, names, name)
    linked = seed_workdir(root / source, workdir) if source else []
    print(
      f"[ablate] {experiment}: variant {k + 1}/{len(todo)} {name} "
      f"(at {time.time() - start:.0f} s)"
      + (f"; seeded {', '.join(linked)} from {source}" if linked else ""),
      flush=True,
    )
    run_variant(gin_file, workdir, gin_files, bindings)
    collect(root, names)
  print(f"[ablate] {len(todo)} variants done in {time.time() - start:.0f} s")


if __name__ == "__main__":
  sys.exit(main())
