"""Learning curves of an SFT recipe on the VALIDATION day (never the test day).

One run = one recipe (gin files / bindings on top of gin/runs/main.gin) and
one training seed:

1. ``ROOT/base``: the world with ``eval_day='validation'`` (the test day is
   dropped, the last training day becomes the eval split) and its SIDs, built
   once and shared by every run (hard links);
2. ``ROOT/<name>_s<seed>``: ``run.py --mode=train`` with every
   ``--save_every`` step checkpointed and kept;
3. every kept checkpoint (the end of phases 1 and 2 and every checkpoint of
   phase 3) is decoded with the trie beam search (beam ``--beam``) on the
   validation day's click sessions; click HR@10 / MRR@10 against examples
   seen and training seconds go to ``ROOT/<name>_s<seed>/curve.json``, with
   the same metrics per query-frequency slice (head / torso / tail).

``--collect`` prints a table of every finished run under ROOT and writes
``ROOT/curves.png`` (one line per recipe, seeds as separate lines).

  python experiments/recipe/curves.py --root=/tmp/rc --name=base --seed=0
  python experiments/recipe/curves.py --root=/tmp/rc --name=lr6 --seed=0 \
      --gin_bindings="optimizer_config.learning_rate=6e-3"
  python experiments/recipe/curves.py --root=/tmp/rc --collect
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from experiments import ablate  # noqa: E402
from experiments.recipe import curve_metrics  # noqa: E402
from onesearch_jax.stages.workdir import Workdir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "/tmp/recipe_curves", "Experiment root.")
flags.DEFINE_string("name", "", "Recipe name (the run dir is NAME_sSEED).")
flags.DEFINE_integer("seed", 0, "Training seed (train_config.seed).")
flags.DEFINE_multi_string("gin_file", [], "Extra gin files after gin/runs/main.gin.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
flags.DEFINE_multi_string(
  "world_bindings", [], "Bindings of the shared base world (e.g. world seed)."
)
flags.DEFINE_integer("save_every", 100, "Checkpoint (= curve point) cadence in steps.")
flags.DEFINE_integer("beam", 32, "Beam size of the curve decode.")
flags.DEFINE_integer("max_queries", 0, "Decode at most this many queries (0 = all).")
flags.DEFINE_bool("collect", False, "Print the table of every run under --root.")
flags.DEFINE_bool(
  "redecode_last",
  False,
  "Decode only a finished run's last checkpoint again and replace the last "
  "point of its curve.json (adds the per-slice metrics to runs made before "
  "points had them).",
)
flags.DEFINE_string(
  "plot", "", "--collect: write the plot here (default ROOT/curves.png)."
)

VALIDATION = "world_config.eval_day = 'validation'"


def _run(args: list[str], log_path: pathlib.Path) -> None:
  env = dict(
    os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
  )
  cmd = [sys.executable, str(REPO / "run.py"), *args]
  print("$", " ".join(cmd), flush=True)
  with open(log_path, "w") as f:
    rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
  if rc:
    raise SystemExit(f"command failed (rc {rc}); log: {log_path}")


def ensure_base(root: pathlib.Path) -> pathlib.Path:
  base = root / "base"
  if Workdir(base).marker(Workdir(base).sids) is not None:
    return base
  base.mkdir(parents=True, exist_ok=True)
  args = ["--mode=build_sids", f"--workdir={base}", "--gin_file=gin/runs/main.gin"]
  args += [f"--gin_bindings={b}" for b in [VALIDATION, *FLAGS.world_bindings]]
  _run(args, root / "base.log")
  return base


def train(root: pathlib.Path, base: pathlib.Path, run_dir: pathlib.Path) -> None:
  if Workdir(run_dir).marker(Workdir(run_dir).train) is not None:
    return
  ablate.seed_workdir(base, run_dir)
  args = ["--mode=train", f"--workdir={run_dir}", "--gin_file=gin/runs/main.gin"]
  args += [f"--gin_file={g}" for g in FLAGS.gin_file]
  binds = [
    VALIDATION,
    *FLAGS.world_bindings,
    *FLAGS.gin_bindings,
    f"train_config.seed = {FLAGS.seed}",
    f"train_config.save_every_steps = {FLAGS.save_every}",
    "train_config.keep_last = 1000",
    "train_config.async_save = False",
  ]
  args += [f"--gin_bindings={b}" for b in binds]
  t = time.time()
  _run(args, run_dir / "train.log")
  print(f"trained in {time.time() - t:.0f} s", flush=True)


def _phase_seconds(phase_dir: pathlib.Path) -> dict[int, float]:
  """Training seconds at each logged step (sum of interval / rate)."""
  from onesearch_jax.train import sft_history

  tr, _ = sft_history.read_history(phase_dir)
  out, total, last = {0: 0.0}, 0.0, 0
  for r in tr:
    total += (r["step"] - last) / max(r["steps_per_sec"], 1e-9)
    last = r["step"]
    out[r["step"]] = total
  return out


def _seconds_at(table: dict[int, float], step: int) -> float:
  best = max((s for s in table if s <= step), default=0)
  return table[best]


def curve(run_dir: pathlib.Path, last_only: bool = False) -> list[dict]:
  """Decodes every kept checkpoint (``last_only``: phase 3's last one only);
  returns the curve points."""
  import numpy as np
  from flax import nnx

  from onesearch_jax import decoding
  from onesearch_jax import sharding as sh
  from onesearch_jax.eval import evaluate, examples, generative
  from onesearch_jax.eval.sid_items import SidItemIndex
  from onesearch_jax.train import checkpoints, sft_config, sft_load, state

  wd = Workdir(run_dir)
  train_dir = wd.train
  cfg = sft_load.read_config(train_dir)
  model_cfg = sft_load.read_model_config(train_dir)
  art = wd.sid_artefact()
  world_dir = wd.world
  eval_set = examples.build_eval_set(
    world_dir, sid_items=art.item_ids, sid_queries=art.query_texts
  )
  index = SidItemIndex.from_artefact(art)
  trie = decoding.catalogue_trie(np.asarray(art.item_codes), model_cfg.sid_ranges)
  batches = list(
    sft_load.eval_inputs(train_dir, "eval_click", batch_size=32, pad_last=True)
  )
  if FLAGS.max_queries:
    batches = batches[: max(1, FLAGS.max_queries // 32)]
  n_rows = sum(len(m) for _, m in batches)
  mesh = sh.single_device_mesh()
  points, searcher = [], None
  examples_before, seconds_before = 0, 0.0
  for k, name in enumerate(sft_config.PHASES):
    phase_dir = train_dir / name
    secs = _phase_seconds(phase_dir)
    ckpt = checkpoints.Checkpointer(phase_dir / "checkpoints")
    steps = ckpt.all_steps()
    if k < 2:
      steps = [s for s in steps if s == cfg.steps[k] and not last_only]
    elif last_only:
      steps = steps[-1:]
    opt = cfg.phase_train_config(k).optimizer
    for step in steps:
      ts = state.create_train_state(model_cfg, opt, mesh, sh.DP_RULES, seed=0)
      ts, _ = ckpt.restore(ts, step=step)
      model, _ = ts.merge()
      if searcher is None:
        searcher = decoding.make_beam_search(model, trie, beam_size=FLAGS.beam)
      else:
        searcher.state = nnx.state(model)
      t = time.time()
      beams = generative.decode_set(searcher, iter(batches))
      rows_click = evaluate.ranking_from_beams(
        index, beams.sid_index, eval_set, FLAGS.beam
      )[0]
      full = np.full((len(eval_set), rows_click.shape[1]), -1, np.int32)
      full[eval_set.rows_of("click")[:n_rows]] = rows_click
      mask = np.zeros(len(eval_set), bool)
      mask[eval_set.rows_of("click")[:n_rows]] = True
      res = curve_metrics.click_metrics(eval_set, full, mask)
      pt = {
        "phase": name,
        "step": step,
        "examples": examples_before + step * cfg.batch_size,
        "train_seconds": round(seconds_before + _seconds_at(secs, step), 1),
        "hr@10": res[0],
        "mrr@10": res[1],
        "slices": res[2],
        "queries": n_rows,
        "decode_seconds": round(time.time() - t, 1),
      }
      print(json.dumps(pt), flush=True)
      points.append(pt)
    ckpt.close()
    examples_before += cfg.steps[k] * cfg.batch_size
    seconds_before += _seconds_at(secs, cfg.steps[k])
  return points


def collect(root: pathlib.Path, out_png: pathlib.Path | None = None) -> str:
  """A markdown table (one row per recipe: seeds, final validation HR@10 /
  MRR@10 as mean and min-max over seeds) and the curves plot (one colour per
  recipe, one line per seed) of every finished run under root."""
  import collections

  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  runs: dict[str, dict[int, list[dict]]] = collections.defaultdict(dict)
  for path in sorted(root.glob("*_s*/curve.json")):
    name, _, seed = path.parent.name.rpartition("_s")
    runs[name][int(seed)] = json.loads(path.read_text())
  lines = [
    "| recipe | seeds | examples | train s (mean) | val click HR@10 mean (min-max) "
    "| val click MRR@10 mean (min-max) |",
    "|---|---|---|---|---|---|",
  ]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for c, (name, seeds) in enumerate(sorted(runs.items())):
    last = [pts[-1] for pts in seeds.values()]
    hr = np.array([p["hr@10"] for p in last])
    mrr = np.array([p["mrr@10"] for p in last])
    secs = np.mean([p["train_seconds"] for p in last])
    lines.append(
      f"| {name} | {', '.join(map(str, sorted(seeds)))} | {last[0]['examples']} | "
      f"{secs:.0f} | {hr.mean():.4f} ({hr.min():.4f}-{hr.max():.4f}) | "
      f"{mrr.mean():.4f} ({mrr.min():.4f}-{mrr.max():.4f}) |"
    )
    for i, (_seed, pts) in enumerate(sorted(seeds.items())):
      for ax, x in zip(axes, ("examples", "train_seconds"), strict=True):
        ax.plot(
          [p[x] for p in pts],
          [p["hr@10"] for p in pts],
          marker=".",
          color=colours[c % len(colours)],
          alpha=0.9,
          label=name if i == 0 else None,
        )
  for ax, x in zip(
    axes, ("examples seen", "training seconds (2 CPU cores)"), strict=True
  ):
    ax.set(xlabel=x, ylabel="validation-day click HR@10")
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png or root / "curves.png", dpi=80)
  plt.close(fig)
  return "\n".join(lines)


def main(argv):
  del argv
  root = pathlib.Path(FLAGS.root)
  root.mkdir(parents=True, exist_ok=True)
  if FLAGS.collect:
    print(collect(root, pathlib.Path(FLAGS.plot) if FLAGS.plot else None))
    return 0
  if not FLAGS.name:
    raise app.UsageError("--name is required (or --collect)")
  run_dir = root / f"{FLAGS.name}_s{FLAGS.seed}"
  if FLAGS.redecode_last:
    points = json.loads((run_dir / "curve.json").read_text())
    (last,) = curve(run_dir, last_only=True)
    if (last["phase"], last["step"]) != (points[-1]["phase"], points[-1]["step"]):
      raise SystemExit(f"{run_dir}: last checkpoint {last['step']} is not the curve's")
    points[-1] = last
    (run_dir / "curve.json").write_text(json.dumps(points, indent=1))
    return 0
  base = ensure_base(root)
  train(root, base, run_dir)
  points = curve(run_dir)
  (run_dir / "curve.json").write_text(json.dumps(points, indent=1))
  print(collect(root))
  return 0


if __name__ == "__main__":
  app.run(main)
