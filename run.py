r"""onesearch_jax command line (absl + gin).

  python run.py                                   # the main job, default world
  python run.py --gin_file=gin/worlds/tiny.gin    # a tiny world (CI, ~2 min)
  python run.py --mode=world --workdir=/tmp/w     # only the world + statistics
  python run.py --mode=build_sids --gin_bindings="world_config.preset='tiny'"
  python run.py --mode=train                      # world -> sids -> SFT 1, 2, 3
  python run.py --mode=train --gin_file=gin/models/small.gin \
      --gin_bindings="sft_config.steps=(500, 500, 1000)"
  python run.py --mode=pars                       # ... -> pars/ (RM + PARS 1, 2; not in the main job)
  python run.py --mode=eval                       # ... -> eval/results.md
  python run.py --mode=infer --requests=req.jsonl --infer_output=out.jsonl
  python run.py --mode=validate --world_dir=/path/to/kuaisearch   # real data

gin binds only at this edge: the library takes frozen dataclass configs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

MODES = ("main", "world", "build_sids", "train", "pars", "eval", "infer", "validate")
# What each pipeline mode runs (pipeline.check_stages validates a list).
MODE_STAGES = {
  "world": ("world",),
  "build_sids": ("world", "sids"),
  "train": ("world", "sids", "train"),
  "pars": ("world", "sids", "train", "pars"),
  "eval": ("world", "sids", "train", "eval"),
}
# gin name -> factory in onesearch_jax.configs (the only gin registrations).
CONFIGURABLES = (
  "world_config",
  "sids_config",
  "model_config",
  "mesh_config",
  "optimizer_config",
  "train_config",
  "sft_config",
  "pars_config",
  "eval_config",
  "pipeline_config",
)

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "main", MODES, "What to run.")
flags.DEFINE_string("workdir", "workdir", "Where every artefact goes.")
flags.DEFINE_multi_string("gin_file", [], "gin files (repeatable).")
flags.DEFINE_multi_string("gin_bindings", [], "gin bindings (repeatable).")
flags.DEFINE_multi_string(
  "gin_search_paths", [str(pathlib.Path(__file__).parent)], "gin include paths."
)
flags.DEFINE_string(
  "world_dir",
  "",
  "A directory in the KuaiSearch schema to use instead of simulating a world.",
)

flags.DEFINE_string(
  "requests", "", "--mode=infer: JSONL/TSV requests (user_id, query[, time_index])."
)
flags.DEFINE_string(
  "infer_output", "", "--mode=infer: output JSONL (default WORKDIR/infer.jsonl)."
)
flags.DEFINE_integer("top_k", 20, "--mode=infer: items per request.")


def register_configurables() -> dict:
  """Registers the config factories with gin (once per process).

  Returns:
    gin name -> the gin-wrapped factory.
  """
  import gin
  from onesearch_jax import configs

  made = {}
  for name in CONFIGURABLES:
    try:
      made[name] = gin.external_configurable(getattr(configs, name), name)
    except ValueError:  # already registered in this process (tests)
      made[name] = gin.get_configurable(name)
  return made


def build_config(made: dict):
  """The PipelineConfig from the (gin-bound) factories."""
  optimizer = made["optimizer_config"]()
  sft = made["sft_config"](
    model=made["model_config"](),
    train=made["train_config"](optimizer=optimizer),
    mesh=made["mesh_config"](),
  )
  return made["pipeline_config"](
    world=made["world_config"](),
    sids=made["sids_config"](),
    train=sft,
    eval=made["eval_config"](),
    pars=made["pars_config"](),
  )


def _parse_gin():
  """Registers the config factories with gin and parses files + bindings."""
  import gin

  made = register_configurables()
  for path in FLAGS.gin_search_paths:
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_bindings)
  return gin, made


def _compilation_cache(workdir: pathlib.Path) -> None:
  """XLA executables cached in the workdir: a re-run, and a stage whose step
  compiles to the same program as an earlier one (SFT stages 1 and 2), skip
  compilation."""
  import jax

  jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  gin, made = _parse_gin()
  # TensorFlow (seqio's tf.data) must not take an accelerator from JAX.
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  from onesearch_jax import distributed, pipeline

  distributed.maybe_initialize()  # no-op on one host

  workdir = pathlib.Path(FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cfg = build_config(made)
  if FLAGS.world_dir:
    cfg = dataclasses.replace(cfg, world_dir=FLAGS.world_dir)
  (workdir / "operative_config.gin").write_text(gin.operative_config_str())
  _compilation_cache(workdir)

  def log(msg: str) -> None:
    print(msg, flush=True)

  if FLAGS.mode == "validate":
    from onesearch_jax.world import reader

    if not FLAGS.world_dir:
      raise app.UsageError("--mode=validate needs --world_dir")
    world = reader.load_world(FLAGS.world_dir)
    log(f"{world.counts}\n{world.report.format()}")
    return 0
  if FLAGS.mode == "infer":
    from onesearch_jax import infer

    if not FLAGS.requests:
      raise app.UsageError("--mode=infer needs --requests=FILE")
    pipeline.run_pipeline(
      dataclasses.replace(cfg, stages=MODE_STAGES["train"]), workdir, log=log
    )
    world_dir = FLAGS.world_dir or str(workdir / "world")
    infer.infer(
      workdir,
      world_dir,
      FLAGS.requests,
      FLAGS.infer_output or str(workdir / "infer.jsonl"),
      beam_size=cfg.eval.beam_size,
      top_k=FLAGS.top_k,
      batch_size=cfg.eval.batch_size,
      log=log,
    )
    return 0
  if FLAGS.mode in MODE_STAGES:
    cfg = dataclasses.replace(cfg, stages=MODE_STAGES[FLAGS.mode])
  pipeline.run_pipeline(cfg, workdir, log=log)
  return 0


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  sys.exit(app.run(main))
