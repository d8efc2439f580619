"""The Colab quickstart (experiments/colab): pairing and a tiny-mode smoke run.

The smoke run executes the notebook's .py pointed (by its environment
variables) at the shared tiny trained workdir (sft_run in tests/conftest.py),
so the pipeline cell is skipped and nothing is trained a second time.
"""

from __future__ import annotations

import json
import math
import pathlib
import runpy

import pytest

from onesearch_jax import search
from onesearch_jax.data import session_prompts
from onesearch_jax.data.sid_table import sid_string
from onesearch_jax.khqe import artefact

COLAB = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "colab"
PY = COLAB / "quickstart.py"
IPYNB = COLAB / "quickstart.ipynb"


def percent_cells(text: str) -> list[tuple[str, str]]:
  """(cell_type, source) of a jupytext percent file (header skipped)."""
  lines = text.splitlines()
  if lines and lines[0] == "# ---":
    end = lines.index("# ---", 1)
    lines = lines[end + 1 :]
  cells: list[tuple[str, list[str]]] = []
  for line in lines:
    if line.startswith("# %%"):
      kind = "markdown" if "[markdown]" in line else "code"
      cells.append((kind, []))
    elif cells:
      cells[-1][1].append(line)
    elif line.strip():
      raise ValueError(f"{PY}: text before the first '# %%' cell: {line!r}")
  out = []
  for kind, body in cells:
    if kind == "markdown":
      body = [x[2:] if x.startswith("# ") else x.lstrip("#") for x in body]
    out.append((kind, "\n".join(body).strip("\n")))
  return out


def test_ipynb_cells_equal_the_py_cells():
  nb = json.loads(IPYNB.read_text(encoding="utf-8"))
  assert nb["nbformat"] == 4
  got = [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]
  want = percent_cells(PY.read_text(encoding="utf-8"))
  assert len(want) >= 8
  assert got == want, (
    "experiments/colab/quickstart.ipynb is out of date: run "
    "`jupytext --sync experiments/colab/quickstart.py`"
  )
  for c in nb["cells"]:
    if c["cell_type"] == "code":
      assert c["outputs"] == [] and c["execution_count"] is None  # committed clean


def test_percent_parser_on_a_hand_written_file():
  text = (
    "# ---\n# jupyter: x\n# ---\n\n# %% [markdown]\n# # T\n#\n# a\n\n# %%\nx = 1\n\n"
  )
  assert percent_cells(text) == [("markdown", "# T\n\na"), ("code", "x = 1")]


@pytest.fixture(scope="module")
def trained_workdir(sft_run, sft_sids, tmp_path_factory) -> pathlib.Path:
  res, _ = sft_run
  wd = tmp_path_factory.mktemp("quickstart_wd")
  (wd / "sids").symlink_to(sft_sids[0])
  (wd / "train").symlink_to(res.out_dir)
  return wd


@pytest.mark.slow
def test_quickstart_runs_and_searches(
  trained_workdir, sft_world, sft_sids, tmp_path, monkeypatch, capsys
):
  monkeypatch.setenv("ONESEARCH_QUICKSTART_WORKDIR", str(trained_workdir))
  monkeypatch.setenv("ONESEARCH_QUICKSTART_WORLD", str(sft_world))
  monkeypatch.chdir(tmp_path)  # nothing may be written beside the test
  ns = runpy.run_path(str(PY), run_name="__main__")
  printed = capsys.readouterr().out
  assert not (tmp_path / "quickstart_workdir").exists()  # no second training

  art = artefact.load(sft_sids[0])
  sid_of_item = {
    i: sid_string(c, art.quantizer.config.opq_codes)
    for i, c in zip(art.item_ids, art.item_codes, strict=True)
  }
  titles = {
    json.loads(x)["item_id"]: json.loads(x)["item_title"]
    for x in (sft_world / "items.jsonl").read_text().splitlines()
  }
  users = {
    json.loads(x)["user_id"]
    for x in (sft_world / "users.jsonl").read_text().splitlines()
  }
  known, cold = ns["known"], ns["cold"]
  assert known.request.user_id in users
  assert cold.request.user_id == search.COLD_START_USER not in users
  assert known.request.query == cold.request.query
  for res in (known, cold):
    assert len(res.items) == 10 and len(set(res.items)) == 10
    assert all(i in titles for i in res.items)
    for seq in (res.scores, res.item_scores):
      assert all(math.isfinite(s) for s in seq)
      assert seq == sorted(seq, reverse=True)
    # each item is shown with its own SID and the score of the beam that emitted it
    for item, sid, score in zip(res.items, res.item_sids, res.item_scores, strict=True):
      assert sid == sid_of_item[item]
      assert score == res.scores[res.sids.index(sid)]
    assert len(set(res.sids)) == len(res.sids)  # the trie emits each SID once
    assert titles[res.items[0]] in printed and res.item_sids[0] in printed
  assert "cold-start user" in printed
  # the cold-start prompt is not the known user's personalised prompt
  prompter = ns["searcher"].prompter
  q = known.request.query
  assert prompter.prompt_text(known.request) != prompter.prompt_text(
    session_prompts.Request(search.COLD_START_USER, q)
  )
  # search() is Searcher.search: the same request ranks the same items again
  again = ns["searcher"].search(q, user_id=known.request.user_id, k=10)
  assert again.items == known.items
  # batches are chunked by batch_size (1 here) and keep the request order
  both = ns["searcher"].search_batch([cold.request, known.request], top_k=10)
  assert [r.items for r in both] == [cold.items, known.items]
  with pytest.raises(ValueError, match="top_k"):
    ns["searcher"].search_batch([known.request], top_k=0)
