"""The pipeline's eval stage and --mode=infer on a tiny trained workdir.

Uses the shared tiny SFT run (tests/conftest.py). The eval path (seqio eval
tasks -> beam search -> SID -> items) and the infer path (host-side
prompts of requests -> beam search -> items) are independent code paths
over the same model: for the same sessions they must rank the same items.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from onesearch_jax import infer
from onesearch_jax.eval import evaluate
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.eval.workdir_eval import rank_workdir
from onesearch_jax.stages.workdir import Workdir


@pytest.fixture(scope="module")
def workdir(sft_run, sft_sids, tmp_path_factory) -> pathlib.Path:
  res, _ = sft_run
  wd = Workdir(tmp_path_factory.mktemp("eval_wd"))
  wd.sids.symlink_to(sft_sids[0])
  wd.train.symlink_to(res.out_dir)
  return wd.root


CFG = EvalConfig(
  beam_size=12,
  batch_size=8,
  ks=(1, 5, 10),
  k_max=12,
  baselines=("bm25", "sidq_pop", "query_memory"),
  exact_rows=3,
)


@pytest.fixture(scope="module")
def ranked_with_extras(workdir, sft_world):
  extras: dict = {}
  ranked = rank_workdir(workdir, sft_world, CFG, log=lambda _: None, extras=extras)
  return ranked, extras


@pytest.fixture(scope="module")
def ranked(ranked_with_extras):
  return ranked_with_extras[0]


@pytest.mark.slow
def test_decode_times_per_model_and_set(ranked_with_extras):
  """extras["decode"]: every query of the click set decoded once, the order
  set's sessions reuse the click set's beams (the same inputs)."""
  (eval_set, _, _), extras = ranked_with_extras
  decode = extras["decode"]
  assert set(decode) == {"onesearch"}
  click, order = decode["onesearch"]["click"], decode["onesearch"]["order"]
  assert click["queries"] == click["decoded"] == eval_set.rows_of("click").size
  assert order["queries"] == eval_set.rows_of("order").size
  assert order["decoded"] == 0
  assert click["seconds"] > 0.0


@pytest.mark.slow
def test_eval_stage_ranks_with_valid_unique_beams(ranked):
  eval_set, rankings, diags = ranked
  assert set(rankings) == {"onesearch", "bm25", "sidq_pop", "query_memory"}
  assert set(diags) == {"onesearch"}
  diag = diags["onesearch"]
  rows = rankings["onesearch"]
  assert rows.shape == (len(eval_set), CFG.k_max)
  covered = eval_set.has_click | eval_set.has_order
  # every covered row got items; the trie only emits catalogue SIDs, uniquely
  assert (rows[covered, 0] >= 0).all()
  assert diag["valid_sid_rate"] == 1.0
  assert diag["duplicate_rate"] == 0.0
  assert 0.0 <= diag["beam_recall"] <= 1.0
  for r in rows[covered]:
    items = r[r >= 0]
    assert len(set(items.tolist())) == len(items)  # no item twice
  res = evaluate.evaluate_rankings(eval_set, rankings, ks=CFG.ks)
  md = evaluate.results_markdown(res)
  assert "onesearch" in md and "bm25" in md and "| query_memory |" in md
  for name in rankings:
    assert 0.0 <= res["systems"][name]["qsens@10"] <= 1.0
  # Rules rank whole clusters, then the catalogue: full rows, no repeats.
  for name in ("sidq_pop", "query_memory"):
    r = rankings[name]
    assert (r >= 0).all() or len(eval_set.item_ids) < CFG.k_max
    assert all(len(set(x.tolist())) == len(x) for x in r)


@pytest.mark.slow
def test_infer_matches_the_eval_path(ranked, workdir, sft_world, tmp_path):
  eval_set, rankings, _ = ranked
  rows = eval_set.rows_of("click")[:5]
  req = tmp_path / "requests.jsonl"
  with req.open("w") as f:
    for r in rows:
      line = {
        "request_id": eval_set.session_ids[r],
        "user_id": eval_set.user_ids[r],
        "query": eval_set.queries[r],
        "time_index": int(eval_set.times[r]),
      }
      f.write(json.dumps(line) + "\n")
  out = tmp_path / "out.jsonl"
  n = infer.infer(
    workdir,
    sft_world,
    req,
    out,
    beam_size=CFG.beam_size,
    top_k=CFG.k_max,
    batch_size=CFG.batch_size,
    log=lambda _: None,
  )
  assert n == len(rows)
  got = [json.loads(x) for x in out.read_text().splitlines()]
  for r, g in zip(rows, got, strict=True):
    want = [eval_set.item_ids[i] for i in rankings["onesearch"][r] if i >= 0]
    assert g["request_id"] == eval_set.session_ids[r]
    assert g["items"] == want
    assert len(g["sids"]) == len(g["scores"]) and g["scores"] == sorted(
      g["scores"], reverse=True
    )
    assert np.isfinite(g["scores"]).all()
