"""PARS settings chosen on the VALIDATION day (never the test day).

One run = one set of pars_config bindings (on top of gin/runs/main.gin)
applied to a finished validation-day workdir (``run.py
--bindings="world_config.eval_day='validation'"``, stages world, sids,
train):

1. the reward model is trained once per workdir and RM settings
   (``ROOT/rm_<hash>``, copied into each run);
2. ``pars.run.run_pars`` runs the configured phases into ``ROOT/<name>``;
3. the SFT model (once, cached in ``ROOT/sft_metrics.json``) and the final
   aligned model are decoded with the main job's trie beam search (beam 350)
   on the validation day's click and order sessions; click HR@10 / MRR@10,
   order HR@10 / MRR@10 and the phases' DPO diagnostics (chosen / rejected
   log-probs, reward accuracy and margin per logged step) go to
   ``ROOT/<name>/tune.json``.

``--collect`` prints the table of every run under ROOT; ``--plot`` draws the
DPO diagnostics curves of the named runs.

(gin/runs/main.gin switches the alignment phases off: a run that trains
phase 1 passes ``--bindings=pars_config.run_phase1=True``.)

  python experiments/pars/tune.py --val_workdir=/tmp/val0 --root=/tmp/pt --name=base \
      --bindings="pars_config.run_phase1=True"
  python experiments/pars/tune.py --val_workdir=/tmp/val0 --root=/tmp/pt --name=lr1e4 \
      --bindings="pars_config.run_phase1=True" --bindings="pars_config.learning_rate=1e-4"
  python experiments/pars/tune.py --root=/tmp/pt --collect --plot=docs/figures/pars_dpo.png
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "val_workdir", "", "A finished validation-day workdir (world, sids, train)."
)
flags.DEFINE_string("root", "/tmp/pars_tune", "Experiment root.")
flags.DEFINE_string("name", "", "Run name (ROOT/NAME).")
flags.DEFINE_multi_string("bindings", [], "pars_config gin bindings.")
flags.DEFINE_bool("collect", False, "Print the table of every run under --root.")
flags.DEFINE_string("plot", "", "--collect: write the DPO diagnostics plot here.")
flags.DEFINE_list("plot_runs", [], "--collect: runs to plot (default: all).")
flags.DEFINE_bool(
  "transductive_check",
  False,
  "DIAGNOSTIC ONLY, never a recipe: phase 1 samples its sessions from the "
  "validation day's own sessions (their prompts, no labels) instead of the "
  "train split: an upper bound on what the alignment can carry to the "
  "evaluated sessions (docs/PARS.md).",
)
flags.DEFINE_string(
  "rerank_grid",
  "",
  "Evaluate RM re-rank variants of this run's beams (a run "
  "name under --root with a reward model, or 'sft') instead of training.",
)

METRICS = (
  ("click", "hr@10"),
  ("click", "mrr@10"),
  ("order", "hr@10"),
  ("order", "mrr@10"),
)
CURVES = ("chosen_logp", "rejected_logp", "reward_accuracy", "reward_margin")


def _pars_stage_config():
  import gin
  from onesearch_jax import main as main_lib

  made = main_lib.register_configurables()
  gin.parse_config_files_and_bindings([str(REPO / "gin/runs/main.gin")], FLAGS.bindings)
  return made["pars_config"](), made["eval_config"]()


def _row(results: dict, name: str) -> dict:
  sys_ = results["systems"][name]
  return {f"{k} {m}": sys_[k]["all"][m] for k, m in METRICS if k in sys_}


def _evaluate(wd, world_dir, eval_cfg, generator, models):
  from onesearch_jax.eval import evaluate, workdir_eval

  eval_set, rankings, _ = workdir_eval.rank_workdir(
    wd, world_dir, eval_cfg, generator=generator, models=models, log=lambda _m: None
  )
  return evaluate.evaluate_rankings(eval_set, rankings, ks=eval_cfg.ks)


def run_one() -> None:
  import dataclasses

  from onesearch_jax import generator as generator_lib
  from onesearch_jax.pars import stage as stage_lib
  from onesearch_jax.stages.workdir import Workdir

  wd = Workdir.of(pathlib.Path(FLAGS.val_workdir))
  world_dir = wd.root / "world"
  root = pathlib.Path(FLAGS.root)
  out = root / FLAGS.name
  stage_cfg, eval_cfg = _pars_stage_config()
  eval_cfg = dataclasses.replace(eval_cfg, baselines=(), exact_rows=0)
  pcfg = stage_cfg.pars
  if FLAGS.transductive_check and pcfg.data.phase1_rejected != "distill":
    # the other list modes choose a logged positive as the chosen item: on the
    # validation day's sessions that would read the evaluated labels
    raise app.UsageError(
      "--transductive_check needs pars_config.phase1_rejected='distill'"
    )
  # The reward model depends on the world, the SIDs and its own settings only
  # (not on the SFT model): shared by the runs of every training seed.
  sid_hash = json.loads((wd.sids / "STAGE.json").read_text())["output_hash"]
  rm_key = json.dumps(
    [
      dataclasses.asdict(pcfg.reward_model),
      dataclasses.asdict(pcfg.features),
      sid_hash,
    ],
    sort_keys=True,
  )
  rm_dir = root / f"rm_{hashlib.sha256(rm_key.encode()).hexdigest()[:10]}"
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  if (rm_dir / "metrics.json").exists():
    shutil.copytree(rm_dir, out / "reward_model")
  t0 = time.perf_counter()
  marker = stage_lib.run_stage(world_dir, wd, out, stage_cfg, log=print)
  pars_seconds = time.perf_counter() - t0
  if not (rm_dir / "metrics.json").exists():
    shutil.copytree(out / "reward_model", rm_dir)
  generator = generator_lib.load_generator(wd, beam_size=eval_cfg.beam_size)
  sft_file = root / f"sft_metrics_{wd.root.name}.json"
  if sft_file.exists():
    sft = json.loads(sft_file.read_text())
  else:
    sft = _row(_evaluate(wd, world_dir, eval_cfg, generator, None), "onesearch")
    sft_file.write_text(json.dumps(sft, indent=1))
  phases = generator_lib.existing_phases(out)
  aligned = None  # no alignment phase ran: the reward model only (--rerank_grid)
  if phases:
    model = generator_lib.load_phase_model_from(
      wd, out / phases[-1] / "checkpoints", pcfg.phase(phases[-1]).optimizer
    )
    aligned = _row(
      _evaluate(wd, world_dir, eval_cfg, generator, [("aligned", model)]), "aligned"
    )
  summary = json.loads((out / "summary.json").read_text())
  record = {
    "name": FLAGS.name,
    "workdir": str(wd.root),
    "bindings": list(FLAGS.bindings),
    "transductive_check": FLAGS.transductive_check,
    "sft": sft,
    "aligned": aligned,
    "phases": phases,
    "examples": marker["examples"],
    "reward_model": {k: v for k, v in marker["reward_model"].items() if "auc" in k},
    "pars_seconds": pars_seconds,
    "history": {p: summary.get(f"{p}_history", []) for p in phases},
    "example_stats": {p: summary.get(f"{p}_examples", {}) for p in phases},
  }
  (out / "tune.json").write_text(json.dumps(record, indent=1, default=float))
  print(json.dumps({k: record[k] for k in ("name", "sft", "aligned")}, indent=1))


def rerank_grid() -> None:
  """Re-rank keys over the beams of the SFT model (or of a run's aligned
  model) on the validation day: R_score with several head weights, plus
  gen_weight x the generator's log-probability."""
  import dataclasses

  import numpy as np

  from onesearch_jax import generator as generator_lib
  from onesearch_jax.eval import evaluate, examples, generative
  from onesearch_jax.eval.sid_items import SidItemIndex
  from onesearch_jax.pars import rerank, rm_stats
  from onesearch_jax.pars import reward_model as rm_lib
  from onesearch_jax.pars import run as run_lib
  from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec
  from onesearch_jax.stages.workdir import Workdir
  from onesearch_jax.train import sft_load
  from onesearch_jax.world import reader

  wd = Workdir.of(pathlib.Path(FLAGS.val_workdir))
  world_dir = wd.root / "world"
  root = pathlib.Path(FLAGS.root)
  run_dir = root / FLAGS.name
  stage_cfg, eval_cfg = _pars_stage_config()
  pcfg = stage_cfg.pars
  gen = generator_lib.load_generator(wd, beam_size=eval_cfg.beam_size)
  model = gen.model
  if FLAGS.rerank_grid != "sft":
    src = root / FLAGS.rerank_grid
    final = generator_lib.existing_phases(src)[-1]
    model = generator_lib.load_phase_model_from(
      wd, src / final / "checkpoints", pcfg.phase(final).optimizer
    )
  art = wd.sid_artefact()
  eval_set = examples.build_eval_set(
    world_dir, sid_items=art.item_ids, sid_queries=art.query_texts
  )
  kinds = [k for k in examples.KINDS if eval_set.rows_of(k).size]
  per_set = generative.decode_sets(
    gen.with_model(model).searcher,
    {k: sft_load.eval_inputs(wd.train, f"eval_{k}", batch_size=eval_cfg.batch_size,
                             pad_last=True) for k in kinds},
  )  # fmt: skip
  world = reader.load_world(world_dir)
  ilog, ctx, rel, rtable = run_lib.build_reward_inputs(world, gen.table, pcfg)
  rm = rm_lib.restore(run_dir / "reward_model", pcfg.reward_model, ctx, ilog, rel)
  codec = SidCodec.from_ranges(gen.model_config.sid_ranges, gen.table.code_ranges)
  lookup = ItemLookup.build(
    ilog.item_codes, ilog.has_sid, rtable.counts.clicks, gen.table.code_ranges
  )
  index = SidItemIndex.from_artefact(art)
  session_row = ilog.session_index()
  heads = {}
  for kind, beams in per_set.items():
    sid = beams.sid_index
    tokens = codec.tokens(np.asarray(gen.unique_codes)[np.maximum(sid, 0)])
    codes, valid = codec.codes(tokens)
    items = np.where(sid >= 0, lookup.lookup(codes, valid), -1)
    rows = np.asarray([session_row[s] for s in beams.session_ids])[:, None]
    out = rm.predict(rows, items)
    heads[kind] = (out, items)
  variants = {"generator": None}
  for lam in ((1, 1, 1, 0.1), (1, 0, 1, 0.1), (1, 0, 0, 0), (1, 0, 1, 0)):
    for g in (0.0, 0.02, 0.05, 0.1, 0.2):
      variants[f"lambda={lam} gen_weight={g}"] = (lam, g, "r")
  for g in (0.1, 0.2, 0.3, 0.5, 1.0):
    variants[f"log ctr + {g} x gen"] = ((1, 0, 0, 0), g, "log")
  # item-level CTR only (train-split counts, no user or query feature):
  # how much of the re-rank is an item prior the generator could hold
  for g in (0.5, 1.0, 2.0):
    variants[f"log item ctr (train counts) + {g} x gen"] = ((1, 0, 0, 0), g, "item")
  # the main key applied to the generator's top `depth` beams only (the rest
  # keep the generator's order): how deep the re-rank's gain lies
  for depth in (2, 4, 8, 16, 32, 64, 128):
    variants[f"main key within top {depth}"] = ((1, 0, 1, 0), 0.1, "r", depth)
  rankings = {}
  for name, spec in variants.items():
    sets = {}
    for kind, beams in per_set.items():
      if spec is None:
        sets[kind] = beams
        continue
      lam, g, mode = spec[:3]
      out, items = heads[kind]
      if mode == "r":
        cfg = rm_lib.RScoreConfig(*lam)
        r = rm_lib.r_score(
          out["ctr"], out["cvr"], out["ctcvr"], out["s_rel_model"], cfg
        )
      elif mode == "item":
        c = rtable.counts  # the reward model's ctr feature, item counts only
        smoothed = rm_stats.smoothed_ctr(c.clicks, c.exposures)  # [N] items
        r = np.log(smoothed[np.maximum(items, 0)])
      else:
        r = np.log(np.maximum(out["ctr"], 1e-9))
      key = rerank.sort_key(np.where(items >= 0, r, -np.inf), beams.scores, g)
      if len(spec) > 3:
        w = np.arange(key.shape[1])
        key = np.where(w < spec[3], key, -1e9 - w)
      order = np.argsort(-key, axis=1, kind="stable")
      sets[kind] = dataclasses.replace(
        beams,
        sid_index=np.take_along_axis(beams.sid_index, order, 1),
        scores=np.take_along_axis(beams.scores, order, 1),
      )
    rankings[name] = generative.rank_eval_set(eval_set, sets, index, eval_cfg.k_max)[0]
  results = evaluate.evaluate_rankings(eval_set, rankings, ks=eval_cfg.ks)
  lines = ["| re-rank key | " + " | ".join(f"{k} {m}" for k, m in METRICS) + " |"]
  lines.append("|---|" + "---|" * len(METRICS))
  for name in variants:
    row = _row(results, name)
    lines.append(
      f"| {name} | " + " | ".join(f"{row[f'{k} {m}']:.4f}" for k, m in METRICS) + " |"
    )
  text = "\n".join(lines)
  print(text)
  (run_dir / f"rerank_{FLAGS.rerank_grid}.md").write_text(text + "\n")


def collect() -> None:
  root = pathlib.Path(FLAGS.root)
  runs = [json.loads(p.read_text()) for p in sorted(root.glob("*/tune.json"))]
  runs = [r for r in runs if r["aligned"]]  # reward-model-only runs have no row
  cols = [f"{k} {m}" for k, m in METRICS]
  print("| run | workdir | bindings | " + " | ".join(cols) + " |")
  print("|---|---|---|" + "---|" * len(cols))
  for r in runs:
    cells = [
      f"{r['aligned'][c]:.4f} ({r['aligned'][c] - r['sft'][c]:+.4f})" for c in cols
    ]
    print(
      f"| {r['name']} | {pathlib.Path(r['workdir']).name} | "
      f"{'; '.join(b.replace('pars_config.', '') for b in r['bindings'])} | "
      + " | ".join(cells)
      + " |"
    )
  if not FLAGS.plot:
    return
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  chosen = [r for r in runs if not FLAGS.plot_runs or r["name"] in FLAGS.plot_runs]
  fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
  for r in chosen:
    hist = r["history"][r["phases"][-1]]
    steps = [h["step"] for h in hist]
    for ax, key in zip(axes, CURVES, strict=True):
      ax.plot(steps, [h.get(key, float("nan")) for h in hist], label=r["name"])
  for ax, key in zip(axes, CURVES, strict=True):
    ax.set_title(key)
    ax.set_xlabel("step")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(FLAGS.plot, dpi=110)
  print(f"wrote {FLAGS.plot}")


def main(argv) -> None:
  del argv
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  if FLAGS.collect:
    collect()
    return
  if FLAGS.rerank_grid:
    rerank_grid()
    return
  if not FLAGS.val_workdir or not FLAGS.name:
    raise app.UsageError("--val_workdir and --name are required (or --collect)")
  if FLAGS.transductive_check:
    import numpy as np

    from onesearch_jax.pars import phases

    # the evaluated (non-train) sessions; their labels are not read (the
    # lists are the generator's beams in the reward model's order)
    phases.phase1_pool = lambda log, pool: np.flatnonzero(~log.session_train)
  run_one()


if __name__ == "__main__":
  app.run(main)
