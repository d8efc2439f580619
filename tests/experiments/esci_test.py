"""The ESCI real-data run (experiments/esci): world, eval set, resume, and the
whole path end to end in tiny mode."""

from __future__ import annotations

import collections
import csv
import importlib.util
import json
import math
import pathlib

import pytest

from onesearch_jax import configs
from onesearch_jax.eval import examples
from onesearch_jax.stages import config, resume, runner
from onesearch_jax.world import esci

REPO = pathlib.Path(__file__).resolve().parents[2]
ESCI_DIR = REPO / "experiments" / "esci"


def _load_script():
  spec = importlib.util.spec_from_file_location("run_esci", ESCI_DIR / "run_esci.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


run_esci = _load_script()


@pytest.fixture(scope="module")
def esci_csv(real_data_dir) -> pathlib.Path:
  return real_data_dir / "esci" / "esci_pairs_with_titles.csv"


@pytest.fixture(scope="module")
def csv_truth(esci_csv):
  """Independent parse of the CSV: split and E-labelled products per query."""
  split, exact = {}, collections.defaultdict(set)
  with open(esci_csv, encoding="utf-8", newline="") as f:
    for r in csv.DictReader(f):
      split[r["query_id"]] = r["split"] or "train"
      if r["esci_label"] == "E":
        exact[r["query_id"]].add(r["product_id"])
  test = [q for q, s in split.items() if s == "test"]
  return {
    "test": test,
    "test_with_exact": [q for q in test if exact[q]],
    "exact": exact,
    "n_products": 1342,
  }


@pytest.fixture(scope="module")
def esci_world(esci_csv, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("esci") / "esci_world"
  assert run_esci.ensure_world(esci_csv, out) == "written"
  return out


def test_eval_set_has_every_test_query_with_an_exact_product(esci_world, csv_truth):
  es = examples.build_eval_set(esci_world)
  want = {f"esci-{q}" for q in csv_truth["test_with_exact"]}
  assert set(es.session_ids) == want and len(es) == len(want) == 179
  # The test sessions without any Exact product are counted, not dropped silently.
  assert es.skips == {"test_session_without_target": len(csv_truth["test"]) - 179}
  row_of = {i: n for n, i in enumerate(es.item_ids)}
  for n, sid in enumerate(es.session_ids):
    got = {int(t) for t in es.click_targets[n] if t >= 0}
    assert got == {row_of[p] for p in csv_truth["exact"][sid.removeprefix("esci-")]}
    # Graded labels: every Exact target has grade 3 (E=3 in relevance.jsonl).
    grades = dict(zip(es.rel_items[n].tolist(), es.rel_grades[n].tolist(), strict=True))
    assert all(grades[t] == 3 for t in got)
  assert not es.has_order.any()


def test_ensure_world_keeps_an_intact_world_and_rewrites_a_damaged_one(
  esci_csv, tmp_path
):
  out = tmp_path / "w"
  assert run_esci.ensure_world(esci_csv, out) == "written"
  assert run_esci.ensure_world(esci_csv, out) == "kept"
  assert (out / "LICENSE").is_file() and (out / "NOTICE").is_file()
  (out / "items.jsonl").write_text("", encoding="utf-8")
  assert run_esci.ensure_world(esci_csv, out) == "written"
  assert sum(1 for _ in open(out / "items.jsonl", encoding="utf-8")) == 1342
  # Other world options (pseudo-queries, a validation split): rewritten, then kept.
  assert run_esci.ensure_world(esci_csv, out, pseudo_per_item=2) == "written"
  assert run_esci.ensure_world(esci_csv, out, pseudo_per_item=2) == "kept"
  n_pseudo = len(
    {
      q
      for p in esci.load_esci_pairs(esci_csv).products
      for q in esci.pseudo_queries(p, 2)
    }
  )
  assert sum(1 for _ in open(out / "recall.jsonl", encoding="utf-8")) == 750 + n_pseudo
  assert run_esci.ensure_world(esci_csv, out, validation=50) == "written"
  assert sum(1 for _ in open(out / "recall.jsonl", encoding="utf-8")) == 250


def test_sids_config_overrides_nested_dataclass_fields():
  cfg = configs.sids_config({"train": {"steps": 7}, "variants": ()})
  default = configs.sids_config()
  assert cfg.train.steps == 7 and cfg.variants == ()
  assert cfg.train.batch_size == default.train.batch_size  # the rest kept
  with pytest.raises(ValueError, match="EncoderTrainConfig fields \\['nope'\\]"):
    configs.sids_config({"train": {"nope": 1}})
  with pytest.raises(ValueError, match="unknown BuildConfig fields \\['nope'\\]"):
    configs.sids_config({"nope": 1})


def test_world_stage_revalidates_a_rewritten_world_dir(esci_csv, tmp_path):
  world = tmp_path / "world"
  esci.write_esci_world(esci_csv, world)
  cfg = config.PipelineConfig(world_dir=str(world), stages=("world",))
  wd = tmp_path / "wd"
  logs = []
  first = runner.run_pipeline(cfg, wd, log=logs.append)["world"]
  again = runner.run_pipeline(cfg, wd, log=logs.append)["world"]
  assert not first.skipped and again.skipped
  assert again.marker["output_hash"] == first.marker["output_hash"]
  # Rewritten in place with other splits: same path, other content.
  esci.write_esci_world(esci_csv, world, empty_split="test")
  changed = runner.run_pipeline(cfg, wd, log=logs.append)["world"]
  assert not changed.skipped
  assert changed.marker["output_hash"] != first.marker["output_hash"]


def test_results_table_rows():
  row = {"n": 3, **{m: 0.5 for m, _ in run_esci.COLUMNS}}
  results = {"systems": {"bm25": {"click": {"all": row}}}}
  lines = run_esci.results_table(results).splitlines()
  assert lines[0].startswith("| system | queries | HR@10 |")
  assert lines[2] == "| bm25 | 3 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 |"


def test_compare_recipes_table_and_validation_args(tmp_path, monkeypatch):
  spec = importlib.util.spec_from_file_location(
    "compare_recipes", ESCI_DIR / "compare_recipes.py"
  )
  cmp = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cmp)

  def res(hr):
    row = {"hr@10": hr, "ndcg@10": hr / 2}
    return {
      "sets": {"click": 50},
      "systems": {s: {"click": {"all": row}} for s in ("onesearch", "bm25")},
    }

  lines = cmp.table({("base", 0): res(0.0), ("pseudo4", 1): res(0.5)}).splitlines()
  assert lines[2] == "| base | 0 | 50 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | - | - |"
  assert lines[3] == "| pseudo4 | 1 | 50 | 0.5000 | 0.2500 | 0.5000 | 0.2500 | - | - |"
  # A run is the validation world of the recipe with the seed bound; its
  # results are copied beside it, and a copied run is not redone.
  calls = []

  def fake_main(args):
    calls.append(args)
    ev = tmp_path / "pseudo4" / "workdir" / "eval"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "results.json").write_text(json.dumps(res(0.25)))
    return 0

  monkeypatch.setattr(cmp.run_esci, "main", fake_main)
  assert cmp.run_recipe(tmp_path, "pseudo4", 2, None) == res(0.25)
  assert cmp.run_recipe(tmp_path, "pseudo4", 2, None) == res(0.25)
  assert len(calls) == 1
  assert "--validation=50" in calls[0] and "--pseudo_per_item=4" in calls[0]
  assert "--gin_bindings=train_config.seed = 2" in calls[0]
  assert (tmp_path / "pseudo4" / "results_seed2.json").is_file()


def _random_hr(n_items: int, n_targets: int, k: int) -> float:
  """P(a uniformly random top-k of n_items holds one of n_targets)."""
  return 1.0 - math.comb(n_items - n_targets, k) / math.comb(n_items, k)


@pytest.mark.slow  # ~90-120 s on 2 shared CPU cores: two run.py processes
def test_esci_run_end_to_end_tiny(esci_csv, csv_truth, tmp_path, capfd, monkeypatch):
  # run.py runs in a subprocess: one CPU device there (conftest's 8 fake
  # devices only slow its compiles down).
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  # XLA without most optimisations there too: its programs compile in a
  # fraction of the time, and nothing below depends on the optimisation level.
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  root = tmp_path / "run"
  args = ["--root", str(root), "--csv", str(esci_csv)]
  args += ["--gin_file", str(ESCI_DIR / "esci_tiny.gin")]
  assert run_esci.main(args) == 0
  printed = capfd.readouterr().out
  wd = root / "workdir"
  results = json.loads((wd / "eval" / "results.json").read_text(encoding="utf-8"))
  systems = results["systems"]
  assert set(systems) == {"onesearch", "bm25", "dense", "mca"}
  n = len(csv_truth["test_with_exact"])
  assert results["sets"] == {"click": n, "order": 0}
  for name, s in systems.items():
    row = s["click"]["all"]
    assert row["n"] == n and row["n_graded"] == n, name  # every scored query
    for m, _ in run_esci.COLUMNS:
      assert 0.0 <= row[m] <= 1.0, (name, m)
    assert row["recall@10"] <= row["hr@10"] + 1e-9
    assert row["mrr@10"] <= row["hr@10"] + 1e-9
    assert f"| {name} | {n} |" in printed
  # Generative rows: trie-constrained beams are catalogue SIDs, no repeats.
  diag = systems["onesearch"]["diagnostics"]
  assert diag["valid_sid_rate"] == 1.0 and diag["duplicate_rate"] == 0.0
  # BM25 on the Exact products far above a random top-10 of 1,342 products.
  random_hr = (
    sum(
      _random_hr(csv_truth["n_products"], len(csv_truth["exact"][q]), 10)
      for q in csv_truth["test_with_exact"]
    )
    / n
  )
  assert systems["bm25"]["click"]["all"]["hr@10"] > 10 * random_hr
  # A second run resumes: every stage marker is kept as it was.
  stage_dirs = ("world_check", "sids", "train", "eval")
  markers = {d: (wd / d / resume.MARKER).read_text() for d in stage_dirs}
  assert run_esci.main(args) == 0
  out = capfd.readouterr().out
  assert "esci_world: kept" in out and out.count("skipping") == 4
  assert {d: (wd / d / resume.MARKER).read_text() for d in stage_dirs} == markers
