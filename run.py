r"""onesearch_jax command line (absl + gin).

  python run.py                                   # the main job, default world
  python run.py --gin_file=gin/worlds/tiny.gin    # a tiny world (seconds)
  python run.py --mode=world --workdir=/tmp/w     # only the world + statistics
  python run.py --mode=build_sids --gin_bindings="world_config.preset='tiny'"
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

MODES = ("main", "world", "build_sids", "validate")

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


def _parse_gin():
  """Registers the config factories with gin and parses files + bindings."""
  import gin
  from onesearch_jax import configs

  made = {
    name: gin.external_configurable(getattr(configs, name), name)
    for name in ("world_config", "sids_config", "pipeline_config")
  }
  for path in FLAGS.gin_search_paths:
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_bindings)
  return gin, made


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  gin, made = _parse_gin()
  from onesearch_jax import pipeline

  workdir = pathlib.Path(FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cfg = made["pipeline_config"](
    world=made["world_config"](), sids=made["sids_config"]()
  )
  if FLAGS.world_dir:
    cfg = dataclasses.replace(cfg, world_dir=FLAGS.world_dir)
  (workdir / "operative_config.gin").write_text(gin.operative_config_str())

  def log(msg: str) -> None:
    print(msg, flush=True)

  if FLAGS.mode == "validate":
    from onesearch_jax.world import reader

    if not FLAGS.world_dir:
      raise app.UsageError("--mode=validate needs --world_dir")
    world = reader.load_world(FLAGS.world_dir)
    log(f"{world.counts}\n{world.report.format()}")
    return 0
  if FLAGS.mode == "world":
    cfg = dataclasses.replace(cfg, stages=("world",))
  elif FLAGS.mode in ("main", "build_sids"):
    cfg = dataclasses.replace(cfg, stages=("world", "sids"))
  pipeline.run_pipeline(cfg, workdir, log=log)
  return 0


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  sys.exit(app.run(main))
