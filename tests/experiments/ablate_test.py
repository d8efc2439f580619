"""experiments/ablate.py and the paper-table ablation gin files.

Every variant gin file must build a PipelineConfig that differs from the main
job (gin/runs/main.gin) in exactly the switches the variant names, so each
table row changes one thing. The runner's seeding and table code are checked
on hand-made workdirs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import pytest

import gin
from onesearch_jax import main as cli
from onesearch_jax import testing
from onesearch_jax.pars.grpo import GRPOConfig
from onesearch_jax.v2.sdft import SDFTConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = ("tokenizer", "opq_depth", "museq", "pars", "seeds", "keyword_cot", "v2")
# The main job's stage list has no pars stage, so the variants that spell it
# out change nothing there; the pars experiment adds the stage.
NO_PARS = {"stages": ("world", "sids", "train", "eval")}
WITH_PARS: dict = {}
NO_BASELINES = {"eval.baselines": ()}


@pytest.fixture(scope="module")
def ablate():
  return testing.load_script("_onesearch_ablate", ROOT / "experiments" / "ablate.py")


@pytest.fixture(scope="module")
def run_module():
  made = cli.register_configurables()
  yield cli, made
  gin.clear_config(clear_constants=True)


def _build(run_module, path: pathlib.Path):
  mod, made = run_module
  gin.clear_config(clear_constants=True)
  gin.add_config_file_search_path(str(ROOT))
  with gin.unlock_config():
    gin.parse_config_files_and_bindings([str(path)], [], skip_unknown=False)
  return mod.build_config(made)


def _leaves(obj, prefix=""):
  """Dotted path -> leaf value of a (nested) dataclass / dict."""
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
  if isinstance(obj, dict) and obj:
    out = {}
    for k, v in obj.items():
      out.update(_leaves(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: obj}


def _diff(a, b) -> dict:
  la, lb = _leaves(a), _leaves(b)
  return {k: lb.get(k) for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)}


# The V2 rows are cumulative: each adds one switch to the row before it.
COT = {
  **NO_PARS,
  **NO_BASELINES,
  "train.museq.keywords": "builtin",
  "train.museq.cot_tasks": True,
  "train.lengths": ((56, 24), (48, 6), (128, 6)),
  "train.phase_tasks": (
    (
      ("s1_title_to_sid", 1.0),
      ("s1_query_to_sid", 1.0),
      ("s1_query_to_keywords", 1.0),
      ("s1_sidq_to_keyword_sids", 1.0),
      ("s1_user_query_to_keywords", 1.0),
      ("s1_user_sidq_to_keyword_sids", 1.0),
    ),
    (("s2_query_to_sidi", 1.0), ("s2_sidq_to_sidi", 1.0), ("s1_title_to_sid", 0.5)),
    (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.2)),
  ),
}
SDFT_OFF = dataclasses.asdict(SDFTConfig())
SDFT = {
  **COT,
  "train.museq.keywords_in": "teacher",
  **{f"train.sdft.{k}": v for k, v in SDFT_OFF.items()},
}
RDROP = {**SDFT, "train.model.dropout_rate": 0.1, "train.sdft.rdrop_weight": 0.5}
FGM = {**RDROP, "train.sdft.fgm_epsilon": 0.6}
FOCAL = {**FGM, "train.sdft.focal": True}


# The GRPO rows: the +focal row with the main job's stage list (pars back in)
# and the pars stage's GRPOConfig (off in the main job) with the variant set.
def _grpo(variant: str) -> dict:
  fields = dataclasses.asdict(GRPOConfig(variant=variant))
  out = {k: v for k, v in FOCAL.items() if k != "stages"}
  return {**out, **{f"pars.pars.grpo.{k}": v for k, v in _leaves(fields).items()}}


# variant file -> the fields (dotted PipelineConfig paths) it must change.
EXPECTED = {
  "tokenizer/00_rq_plain.gin": {
    **NO_PARS,
    "sids.final_variant": "rq_plain",
    "sids.variants": ("rq_plain",),
  },
  "tokenizer/01_keywords.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "sids.final_variant": "+keywords",
    "sids.variants": ("+keywords",),
  },
  "tokenizer/02_l3_parent.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "sids.final_variant": "+l3_parent",
    "sids.variants": ("+l3_parent",),
  },
  "tokenizer/03_opq.gin": {**NO_PARS, **NO_BASELINES, "sids.variants": ("+opq",)},
  "opq_depth/00_opq2.gin": {
    **NO_PARS,
    "sids.variants": ("+opq",),
    "sids.quantizer_overrides.opq_subspaces": 2,
  },
  "opq_depth/01_opq1.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "sids.variants": ("+opq",),
    "sids.quantizer_overrides.opq_subspaces": 1,
  },
  "opq_depth/02_opq4.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "sids.variants": ("+opq",),
    "sids.quantizer_overrides.opq_subspaces": 4,
    "train.lengths": ((64, 40), (64, 40), (192, 8)),
  },
  "opq_depth/03_opq8.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "sids.variants": ("+opq",),
    "sids.quantizer_overrides.opq_subspaces": 8,
    "train.lengths": ((64, 40), (64, 40), (192, 12)),
  },
  "museq/00_full.gin": {**NO_PARS},
  "museq/01_hashed_user_id.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "train.museq.user_id": "hashed",
  },
  "museq/02_no_seq_short.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "train.museq.use_seq_short": False,
  },
  "museq/03_no_long_seq.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "train.museq.use_long_seq": False,
  },
  "museq/04_no_sliding_window.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "train.museq.sliding_window": False,
  },
  "keyword_cot/00_v1.gin": {**NO_PARS},
  "keyword_cot/01_rag.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "train.museq.keywords": "builtin",
    "train.lengths": ((48, 6), (48, 6), (128, 6)),
  },
  "keyword_cot/02_direct_cot.gin": {
    **NO_PARS,
    **NO_BASELINES,
    "train.museq.keywords": "builtin",
    "train.museq.direct_cot": True,
    "train.lengths": ((48, 6), (48, 6), (112, 36)),
  },
  "v2/01_cot.gin": COT,
  "pars/00_main.gin": {**WITH_PARS},
  "v2/06_grpo.gin": _grpo("grpo"),
  "v2/07_tpma.gin": _grpo("tpma"),
  "v2/00_v1.gin": {**NO_PARS},
  "v2/02_sdft.gin": SDFT,
  "v2/03_rdrop.gin": RDROP,
  "v2/04_fgm.gin": FGM,
  "v2/05_focal.gin": FOCAL,
  "seeds/00_seed0.gin": {**NO_PARS},
  "seeds/01_seed1.gin": {**NO_PARS, **NO_BASELINES, "train.train.seed": 1},
  "seeds/02_seed2.gin": {**NO_PARS, **NO_BASELINES, "train.train.seed": 2},
  "pars/01_phase1.gin": {**WITH_PARS, "pars.pars.run_phase1": True},
  "pars/02_phase2.gin": {
    **WITH_PARS,
    **NO_BASELINES,
    "pars.pars.run_phase1": True,
    "pars.pars.run_phase2": True,
  },
  "pars/03_long.gin": {
    **WITH_PARS,
    **NO_BASELINES,
    "pars.pars.run_phase1": True,
    "pars.pars.data.phase1_sessions": 4096,
    "pars.pars.batch_size": 32,
    "pars.pars.phase1.num_steps": 300,
    "pars.pars.phase1.optimizer.total_steps": 300,
    "pars.pars.phase1.checkpoint.save_every_steps": 300,
  },
}


def test_every_variant_file_is_listed():
  found = {
    p.relative_to(ROOT / "experiments").as_posix()
    for e in EXPERIMENTS
    for p in (ROOT / "experiments" / e).glob("*.gin")
  }
  assert found == set(EXPECTED)


def test_variants_change_only_their_switch(run_module):
  main = _build(run_module, ROOT / "gin" / "runs" / "main.gin")
  for rel, want in EXPECTED.items():
    cfg = _build(run_module, ROOT / "experiments" / rel)
    assert _diff(main, cfg) == want, rel


def test_variant_files_and_names(ablate, tmp_path):
  for name in ("02_b.gin", "00_a.gin", "01_no_x.gin", "notes.txt"):
    (tmp_path / name).write_text("")
  files = ablate.variant_files(tmp_path)
  assert [f.name for f in files] == ["00_a.gin", "01_no_x.gin", "02_b.gin"]
  assert [ablate.variant_name(f) for f in files] == ["a", "no_x", "b"]
  assert ablate.variant_name(pathlib.Path("plain.gin")) == "plain"
  with pytest.raises(ValueError, match="no variant gin files"):
    ablate.variant_files(tmp_path / "empty_dir_that_is_missing")


def test_seed_workdir_links_finished_stages_only(ablate, tmp_path):
  src = tmp_path / "a"
  (src / "world").mkdir(parents=True)
  (src / "world" / "STAGE.json").write_text("{}")
  (src / "world" / "items.jsonl").write_text("x\n")
  (src / "sids" / "sub").mkdir(parents=True)  # unfinished: no marker
  (src / "sids" / "sub" / "f").write_text("y")
  (src / "jax_cache").mkdir()
  (src / "jax_cache" / "prog").write_text("z")
  (src / "eval").mkdir()
  (src / "eval" / "STAGE.json").write_text("{}")  # never seeded
  dst = tmp_path / "b"
  assert ablate.seed_workdir(src, dst) == ["world", "jax_cache"]
  assert (dst / "world" / "items.jsonl").read_text() == "x\n"
  assert (
    os.stat(dst / "world" / "items.jsonl").st_ino
    == os.stat(src / "world" / "items.jsonl").st_ino
  )
  assert not (dst / "sids").exists() and not (dst / "eval").exists()
  assert ablate.seed_workdir(src, dst) == []  # an existing workdir is left alone


def _workdir(root: pathlib.Path, name: str, hr350: dict, *, opq=2, icr=0.9, base=True):
  wd = root / name
  (wd / "sids").mkdir(parents=True)
  (wd / "eval").mkdir()
  (wd / "sids" / "STAGE.json").write_text(
    json.dumps({"seconds": 1.5, "metrics": {"+opq": {"ICR": icr, "CUR_Total": 0.1}}})
  )
  (wd / "sids" / "config.json").write_text(
    json.dumps({"quantizer": {"opq_subspaces": opq}, "metadata": {"variant": "+opq"}})
  )

  def res(v):
    return {k: {"all": {"hr@350": v, "hr@10": v / 2, "mrr@10": 0.01}} for k in hr350}

  systems = {"onesearch": {kind: res(v)[kind] for kind, v in hr350.items()}}
  if base:
    systems["bm25"] = {kind: res(0.5)[kind] for kind in hr350}
  (wd / "eval" / "results.json").write_text(json.dumps({"systems": systems}))


def test_results_table_relative_change_and_baselines_once(ablate, tmp_path):
  _workdir(tmp_path, "full", {"click": 0.40, "order": 0.20})
  _workdir(tmp_path, "no_x", {"click": 0.30, "order": 0.25}, opq=0, icr=0.5)
  table = ablate.collect(tmp_path, ["full", "no_x", "missing"])
  recs = json.loads((tmp_path / "results.json").read_text())["rows"]
  by = {(r["variant"], r["system"]): r for r in recs}
  assert set(by) == {
    ("full", "onesearch"),
    ("no_x", "onesearch"),
    ("(baseline)", "bm25"),
  }
  assert by[("no_x", "onesearch")]["d_click_hr350"] == pytest.approx(0.30 / 0.40 - 1)
  assert by[("no_x", "onesearch")]["d_order_hr350"] == pytest.approx(0.25 / 0.20 - 1)
  assert by[("full", "onesearch")]["d_click_hr350"] == pytest.approx(0.0)
  assert by[("no_x", "onesearch")]["sid_len"] == 3
  assert by[("full", "onesearch")]["sid_len"] == 5
  assert by[("no_x", "onesearch")]["ICR"] == 0.5
  assert [r["system"] for r in recs][-1] == "bm25"  # baselines last
  assert "-25.0%" in table and "+25.0%" in table
  assert (tmp_path / "results.md").read_text().strip() == table.strip()


@pytest.mark.slow
def test_ablate_runs_variants_seeds_and_resumes(ablate, tmp_path, capfd, monkeypatch):
  """Two tiny variants (world + sids only): the second reuses the first's
  world through seeding, builds its own SIDs, and the table has both rows
  (re-running is the pipeline's own resume, tested in tests/pipeline)."""
  # The run.py processes compile with XLA's optimisations mostly off (much
  # faster compiles; the rows checked here do not depend on them).
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  exp = tmp_path / "toy"
  exp.mkdir()
  common = (
    "include 'gin/worlds/tiny.gin'\n"
    "pipeline_config.stages = ('world', 'sids')\n"
    "sids_config.overrides = {'train': {'steps': 10, 'log_every': 10}, "
    "'variants': (), 'final_variant': '%s', "
    "'quantizer_overrides': {'n_iter': 3, 'opq_iter': 2}}\n"
  )
  (exp / "00_opq.gin").write_text(common % "+opq")
  (exp / "01_plain.gin").write_text(common % "rq_plain")
  root = tmp_path / "root"
  assert ablate.main([f"--experiment={exp}", f"--root={root}"]) == 0
  out = capfd.readouterr().out
  assert "seeded world, sids, jax_cache from opq" in out
  assert "[sids] inputs changed: rebuilding" in out  # the other tokenizer
  assert out.count("[world] up to date") == 1  # the seeded variant
  recs = json.loads((root / "toy" / "results.json").read_text())["rows"]
  by = {r["variant"]: r for r in recs}
  assert set(by) == {"opq", "plain"}
  assert by["opq"]["sid_len"] == 5 and by["plain"]["sid_len"] == 3
  assert by["opq"]["system"] == by["plain"]["system"] == "(not evaluated)"
  for r in recs:  # reported ICR = the artefact's own codes
    from onesearch_jax.khqe import artefact, sid_metrics

    art = artefact.load(root / "toy" / r["variant"] / "sids")
    levels = tuple(art.quantizer.config.levels)
    assert r["ICR"] == pytest.approx(sid_metrics.cur_icr(art.item_codes, levels)["ICR"])
  # --collect_only rebuilds the same table without running anything.
  table = (root / "toy" / "results.md").read_text()
  (root / "toy" / "results.md").unlink()
  assert ablate.main([f"--experiment={exp}", f"--root={root}", "--collect_only"]) == 0
  assert "$ " not in capfd.readouterr().out
  assert (root / "toy" / "results.md").read_text() == table


def _seed_workdir(root, seed, variant, click_hr, *, decode=(2.0, 100)):
  """A finished variant of training seed ``seed``: eval results with beam
  diagnostics and the eval marker's decode times (seconds, decoded)."""
  wd = root / f"seed{seed}" / variant
  (wd / "eval").mkdir(parents=True)
  res = {
    "click": {"all": {"hr@10": click_hr, "mrr@10": click_hr / 2}},
    "order": {"all": {"hr@10": click_hr / 4, "mrr@10": click_hr / 8}},
    "diagnostics": {"valid_sid_rate": 1.0 - click_hr / 10},
  }
  systems = {"onesearch": res, "bm25": {"click": {"all": {"hr@10": 0.3}}}}
  (wd / "eval" / "results.json").write_text(json.dumps({"systems": systems}))
  seconds, decoded = decode
  marker = {
    "seconds": 1.0,
    "decode": {
      "onesearch": {
        "click": {"queries": decoded, "decoded": decoded, "seconds": seconds},
        "order": {"queries": 7, "decoded": 0, "seconds": 0.1},
      }
    },
  }
  (wd / "eval" / "STAGE.json").write_text(json.dumps(marker))


def test_seeds_table_mean_and_range_over_seeds(ablate, tmp_path):
  _seed_workdir(tmp_path, 0, "v1", 0.60, decode=(2.0, 100))
  _seed_workdir(tmp_path, 1, "v1", 0.70, decode=(3.0, 100))
  _seed_workdir(tmp_path, 2, "v1", 0.65, decode=(4.0, 200))
  _seed_workdir(tmp_path, 0, "cot", 0.50)  # only one seed has run it so far
  table = ablate.collect_seeds(tmp_path, [0, 1, 2], ["v1", "cot"])
  recs = json.loads((tmp_path / "results_seeds.json").read_text())["rows"]
  by = {(r["variant"], r["system"]): r for r in recs}
  v1 = by[("v1", "onesearch")]
  assert v1["seeds"] == [0, 1, 2]
  assert v1["click/hr@10/mean"] == pytest.approx(0.65)
  assert (v1["click/hr@10/min"], v1["click/hr@10/max"]) == (0.60, 0.70)
  assert v1["order/mrr@10/mean"] == pytest.approx(0.65 / 8)
  assert v1["valid_sid_rate/mean"] == pytest.approx(1 - 0.065)
  # 2 s / 100, 3 s / 100, 4 s / 200 queries: 20, 30, 20 ms per query.
  assert v1["decode_ms/mean"] == pytest.approx(70 / 3)
  assert by[("cot", "onesearch")]["seeds"] == [0]
  assert by[("cot", "onesearch")]["click/hr@10/n"] == 1
  assert by[("(baseline)", "bm25")]["seeds"] == [0]  # once, not per seed
  assert recs[-1]["system"] == "bm25"
  assert "| v1 | onesearch | 0,1,2 | 0.6500 (0.6000-0.7000) |" in table
  assert "| cot | onesearch | 0 | 0.5000 |" in table


def test_seeds_flag_rejects_bad_lists(ablate):
  with pytest.raises(SystemExit):
    ablate.main(["--experiment=v2", "--seeds=0,x", "--collect_only"])
  with pytest.raises(SystemExit):
    ablate.main(["--experiment=v2", "--seeds=1,1", "--collect_only"])


def test_seed_source_is_the_nearest_earlier_variant_with_a_workdir(ablate, tmp_path):
  names = ["v1", "cot", "sdft", "grpo"]
  (tmp_path / "v1").mkdir()
  (tmp_path / "sdft").mkdir()
  assert ablate.seed_source(tmp_path, names, "v1") is None
  assert ablate.seed_source(tmp_path, names, "cot") == "v1"
  assert ablate.seed_source(tmp_path, names, "sdft") == "v1"  # cot never ran
  assert ablate.seed_source(tmp_path, names, "grpo") == "sdft"
