"""Print decoded examples of a task: what the model sees.

  python -m onesearch_jax.data.inspect --task=s3_personal --n=5 \\
      --world_dir=workdir/world --sid_dir=workdir/sids

``--task`` is a task kind (``s1_query_to_sid``, ``s3_personal``,
``eval_click``, ...), a full registered name, or a mixture ("phase1").
Without ``--sid_dir`` a random synthetic SID table is used (labelled as such).
Ablations: ``--user_id=hashed|none``, ``--no_seq_short``, ``--no_long_seq``,
``--no_sliding_window``. Any other ``MuSeqConfig`` field with
``--museq=FIELD=VALUE`` (repeatable), e.g. the OneSearch-V2 prompts
(docs/V2.md)::

  python -m onesearch_jax.data.inspect --task=s3_personal --n=3 \\
      --world_dir=workdir/world --sid_dir=workdir/sids \\
      --museq=keywords=builtin --museq=cot_tasks=true
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import seqio

from onesearch_jax.data import museq, tasks, world_source
from onesearch_jax.data.sid_table import SIDTable


def _synthetic_table(world_dir: str) -> SIDTable:
  world = world_source.read_world(world_dir)
  queries = sorted({r["query"] for r in world.recall})
  return SIDTable.synthetic(
    [r["item_id"] for r in world.items], queries, levels=(64, 16, 16), opq_codes=64
  )


def museq_overrides(pairs: list[str]) -> dict:
  """``MuSeqConfig`` fields from ``FIELD=VALUE`` strings, each value parsed as
  the field's default's type (bool: true/false/1/0)."""
  defaults = {f.name: f.default for f in dataclasses.fields(museq.MuSeqConfig)}
  out = {}
  for pair in pairs:
    name, sep, text = pair.partition("=")
    if not sep or name not in defaults:
      raise ValueError(
        f"--museq {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(defaults)}"
      )
    kind = type(defaults[name])
    if kind is bool:
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"--museq {pair!r}: {name} must be bool (true / false)")
      out[name] = text.lower() in ("true", "1")
    else:
      try:
        out[name] = kind(text)
      except ValueError:
        raise ValueError(f"--museq {pair!r}: {name} must be {kind.__name__}") from None
  return out


def format_example(ex: dict, vocabulary, index: int) -> str:
  """Human-readable text of one (tokenized) example."""
  lines = [f"--- example {index}"]
  lines.append("inputs : " + vocabulary.decode(np.asarray(ex["inputs"]).tolist()))
  lines.append("targets: " + vocabulary.decode(np.asarray(ex["targets"]).tolist()))
  lines.append(
    f"lengths: inputs {len(ex['inputs'])} tokens, targets {len(ex['targets'])}"
  )
  if "long_seq" in ex:
    norms = np.linalg.norm(np.asarray(ex["long_seq"]), axis=-1)
    mask = np.asarray(ex["long_seq_mask"]).tolist()
    lines.append(
      "long_seq: [9, D] norms " + " ".join(f"{v:.2f}" for v in norms) + f" mask {mask}"
    )
  for key in ("user_id", "session_id", "query", "target_item_ids"):
    if key in ex:
      v = ex[key]
      v = [x.decode() for x in v] if np.ndim(v) else v.decode()
      lines.append(f"{key}: {v}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", required=True)
  p.add_argument("--n", type=int, default=5)
  p.add_argument("--world_dir", required=True)
  p.add_argument("--sid_dir", default=None)
  p.add_argument("--split", default=None, help="default: test for eval_*, else train")
  p.add_argument("--user_id", default="behaviour", choices=museq.USER_ID_MODES)
  p.add_argument("--no_seq_short", action="store_true")
  p.add_argument("--no_long_seq", action="store_true")
  p.add_argument("--no_sliding_window", action="store_true")
  p.add_argument("--shuffle_seed", type=int, default=None)
  p.add_argument(
    "--museq",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="set a MuSeqConfig field (repeatable), e.g. keywords=builtin",
  )
  args = p.parse_args(argv)
  fields = {
    "user_id": args.user_id,
    "use_seq_short": not args.no_seq_short,
    "use_long_seq": not args.no_long_seq,
    "sliding_window": not args.no_sliding_window,
  }
  try:
    fields.update(museq_overrides(args.museq))
    config = museq.MuSeqConfig(**fields)
  except ValueError as e:
    print(f"inspect: {e}", file=sys.stderr)
    return 2
  if args.sid_dir:
    reg = tasks.register_tasks(args.world_dir, args.sid_dir, config=config)
  else:
    print("NOTE: no --sid_dir: using a random synthetic SID table")
    reg = tasks.register_tasks(
      args.world_dir, sid_table=_synthetic_table(args.world_dir), config=config
    )
  names = {**reg.tasks, **reg.mixtures}
  name = names.get(args.task, args.task)
  if (
    name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names()
  ):
    print(f"unknown task {args.task!r}; known: {sorted(names)}", file=sys.stderr)
    return 1
  split = args.split or ("test" if "eval_" in name else "train")
  print(f"task {name} split {split}; examples per task: {json.dumps(reg.counts)}")
  if reg.skips:
    print(f"skipped: {json.dumps(reg.skips)}")
  ds = seqio.get_mixture_or_task(name).get_dataset(
    sequence_length=None,
    split=split,
    shuffle=args.shuffle_seed is not None,
    seed=args.shuffle_seed,
  )
  for i, ex in enumerate(ds.take(args.n).as_numpy_iterator()):
    print(format_example(ex, reg.vocabulary, i))
  return 0


if __name__ == "__main__":
  sys.exit(main())
