"""The inspection command prints human-readable prompts and targets."""

from __future__ import annotations

from onesearch_jax.data import inspect


def test_inspect_prints_decoded_examples(small_world, capsys):
  assert inspect.main(["--task=eval_click", "--n=2", f"--world_dir={small_world}"]) == 0
  out = capsys.readouterr().out
  assert "synthetic SID table" in out
  assert out.count("--- example") == 2
  assert "inputs : [BOS][UID]" in out and "[GEN_IID]" in out
  assert "targets: <a_" in out and "target_item_ids: ['i" in out
  assert "long_seq: [9, D] norms" in out


def test_inspect_unknown_task(small_world, capsys):
  assert inspect.main(["--task=nope", f"--world_dir={small_world}"]) == 1
  assert "unknown task" in capsys.readouterr().err
