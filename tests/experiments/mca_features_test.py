"""experiments/recipe/mca_features.py: the cascade feature-ablation probe."""

from __future__ import annotations

import pathlib

import numpy as np

from onesearch_jax import testing
from onesearch_jax.eval import evaluate, examples
from onesearch_jax.eval.baselines import mca

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
  return testing.load_script(
    "_onesearch_mca_features", ROOT / "experiments" / "recipe" / "mca_features.py"
  )


def test_arms_name_known_features_only():
  script = _script()
  assert script.ARMS["mca"] == ()
  for drop in script.ARMS.values():
    mca.MCAConfig(drop_features=drop)  # raises on an unknown name


def test_probe_on_the_tiny_world(tiny_world_dir, tiny_sid_build, tmp_path, capsys):
  script = _script()
  _, sid_dir, _, _ = tiny_sid_build
  (tmp_path / "world").symlink_to(tiny_world_dir)
  (tmp_path / "sids").symlink_to(sid_dir)
  arms = {"mca": (), "none": mca.FEATURES}
  table = script.run(tmp_path, arms=arms, log=None)
  assert list(table) == ["query_memory", "mca", "none"]
  es = examples.build_eval_set(examples.read_eval_tables(tiny_world_dir))
  clicks = int(np.sum(es.has_click))
  for row in table.values():
    assert row["all"][0] == clicks
    assert sum(row[s][0] for s in row if s != "all") == clicks
  # The "mca" arm is the eval's MCA row (default features, same recall).
  base = evaluate.run_baselines(
    tiny_world_dir, sid_dir, eval_set=es, systems=("mca",), log=None
  )
  got = evaluate.evaluate_rankings(es, base, ks=(10,))["systems"]["mca"]["click"]
  assert table["mca"]["all"][1:] == (got["all"]["hr@10"], got["all"]["mrr@10"])
  text = script.markdown(table)
  assert text.count("\n") == 2 + len(table) - 1 and "| none |" in text
  # A workdir without sids/ is a user error (exit 2, one line).
  (tmp_path / "sids").unlink()
  assert script.main([f"--workdir={tmp_path}"]) == 2
  assert "sids: no such directory" in capsys.readouterr().err
