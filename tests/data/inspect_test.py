"""The inspection command prints human-readable prompts and targets."""

from __future__ import annotations

import pytest

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


def test_museq_overrides_parse_by_field_type():
  got = inspect.museq_overrides(
    ["keywords=builtin", "cot_tasks=true", "short_window=3", "use_profile=0"]
  )
  assert got == {
    "keywords": "builtin",
    "cot_tasks": True,
    "short_window": 3,
    "use_profile": False,
  }


def test_museq_override_changes_the_prompt(small_world, capsys):
  args = ["--task=eval_click", "--n=1", f"--world_dir={small_world}"]
  assert inspect.main(args) == 0
  plain = capsys.readouterr().out
  assert inspect.main([*args, "--museq=use_seq_short=false"]) == 0
  without = capsys.readouterr().out
  prompt = [ln for ln in plain.splitlines() if ln.startswith("inputs :")][0]
  shorter = [ln for ln in without.splitlines() if ln.startswith("inputs :")][0]
  assert len(shorter) < len(prompt)


@pytest.mark.parametrize(
  "arg,message",
  [
    ("--museq=nope=1", "FIELD one of"),
    ("--museq=keywords", "FIELD=VALUE"),
    ("--museq=cot_tasks=maybe", "must be bool"),
    ("--museq=short_window=x", "must be int"),
    ("--museq=cot_tasks=true", "need a keyword source"),  # MuSeqConfig's own check
  ],
)
def test_bad_museq_overrides_are_named(small_world, capsys, arg, message):
  assert inspect.main(["--task=eval_click", f"--world_dir={small_world}", arg]) == 2
  assert message in capsys.readouterr().err
