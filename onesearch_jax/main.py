r"""onesearch_jax command line (absl + gin); ``run.py`` runs ``run()``.

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

A user error (a bad flag, gin file or binding, world or request file) is its
message alone on stderr, one line, exit status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as py_logging
import os
import pathlib
import sys
import tokenize
from collections.abc import Iterator
from typing import NoReturn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import gin  # noqa: E402
from onesearch_jax import configs, distributed, infer  # noqa: E402
from onesearch_jax.data import session_prompts  # noqa: E402
from onesearch_jax.errors import UserError  # noqa: E402
from onesearch_jax.stages.config import PipelineConfig, check_stages  # noqa: E402
from onesearch_jax.stages.runner import run_pipeline  # noqa: E402
from onesearch_jax.stages.workdir import Workdir  # noqa: E402
from onesearch_jax.world import reader  # noqa: E402

MODES = ("main", "world", "build_sids", "train", "pars", "eval", "infer", "validate")
# What each pipeline mode runs (stages.config.check_stages validates a list).
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
# Failures of user input that reach main() as they are.
USER_ERRORS = (UserError, reader.SchemaError)
# What gin raises for a bad gin file or binding.
GIN_ERRORS = (ValueError, SyntaxError, OSError, tokenize.TokenError)
REPO = pathlib.Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "main", MODES, "What to run.")
flags.DEFINE_string("workdir", "workdir", "Where every artefact goes.")
flags.DEFINE_multi_string("gin_file", [], "gin files (repeatable).")
flags.DEFINE_multi_string("gin_bindings", [], "gin bindings (repeatable).")
flags.DEFINE_multi_string("gin_search_paths", [str(REPO)], "gin include paths.")
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
  made = {}
  for name in CONFIGURABLES:
    try:
      made[name] = gin.external_configurable(getattr(configs, name), name)
    except ValueError:  # already registered in this process (tests)
      made[name] = gin.get_configurable(name)
  return made


def build_config(made: dict) -> PipelineConfig:
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


@contextlib.contextmanager
def _user_input(
  errors: tuple[type[BaseException], ...], what: str = ""
) -> Iterator[None]:
  """Turns `errors` raised in the block into a UserError (prefixed `what: `)."""
  try:
    yield
  except errors as e:
    raise UserError(f"{what}: {e}" if what else str(e)) from e


def _parse_gin() -> dict:
  """Registers the config factories with gin and parses files + bindings."""
  made = register_configurables()
  for path in FLAGS.gin_search_paths:
    gin.add_config_file_search_path(path)
  # gin logs a missing file before raising; the UserError says it once.
  py_logging.disable(py_logging.ERROR)
  try:
    with _user_input(GIN_ERRORS, "gin"):
      gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_bindings)
  finally:
    py_logging.disable(py_logging.NOTSET)
  return made


def _compilation_cache(wd: Workdir) -> None:
  """XLA executables cached in the workdir: a re-run, and a stage whose step
  compiles to the same program as an earlier one (SFT phases 1 and 2), skip
  compilation."""
  jax.config.update("jax_compilation_cache_dir", str(wd.jax_cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _run(argv: list[str]) -> int:
  """The mode dispatch of ``main``: the user's input is checked first (gin,
  stage list, request file), then the runtime is set up and the mode runs."""
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {argv[1:]}")
  made = _parse_gin()
  with _user_input((ValueError,), "gin"):
    cfg = build_config(made)
  if FLAGS.world_dir:
    cfg = dataclasses.replace(cfg, world_dir=FLAGS.world_dir)
  if FLAGS.mode in MODE_STAGES:
    cfg = dataclasses.replace(cfg, stages=MODE_STAGES[FLAGS.mode])
  if FLAGS.mode not in ("validate", "infer"):  # infer runs MODE_STAGES["train"]
    check_stages(cfg.stages)
  if FLAGS.mode == "validate" and not FLAGS.world_dir:
    raise UserError("--mode=validate needs --world_dir")
  if FLAGS.mode == "infer":
    if not FLAGS.requests:
      raise UserError("--mode=infer needs --requests=FILE")
    # A bad request file fails now, not after training.
    with _user_input((ValueError, OSError)):
      session_prompts.read_requests(FLAGS.requests)
  if "://" in FLAGS.workdir:
    # The stages read and write the workdir with pathlib, which turns
    # gs://b/x into the local directory gs:/b/x: refuse, never lose a run.
    raise UserError(
      f"--workdir={FLAGS.workdir}: the main job's workdir must be a local path "
      "(its stages write with pathlib); on a TPU VM use "
      "experiments/tpu/launch.sh --sync=rsync, which mirrors a local workdir "
      "to the bucket"
    )
  wd = Workdir(pathlib.Path(FLAGS.workdir))
  wd.root.mkdir(parents=True, exist_ok=True)
  wd.operative_config.write_text(gin.operative_config_str())

  def log(msg: str) -> None:
    print(msg, flush=True)

  if FLAGS.mode == "validate":  # reads files only: no runtime to set up
    world = reader.validate_world(FLAGS.world_dir)  # streamed: no table held
    log(f"{world.counts}\n{world.report.format()}")
    return 0
  # TensorFlow (seqio's tf.data) must not take an accelerator from JAX.
  tf.config.set_visible_devices([], "GPU")
  distributed.maybe_initialize()  # no-op on one host
  _compilation_cache(wd)
  if FLAGS.mode == "infer":
    run_pipeline(dataclasses.replace(cfg, stages=MODE_STAGES["train"]), wd, log=log)
    infer.infer(
      wd.root,
      wd.world_source(FLAGS.world_dir),
      FLAGS.requests,
      FLAGS.infer_output or str(wd.infer_output),
      beam_size=cfg.eval.beam_size,
      top_k=FLAGS.top_k,
      batch_size=cfg.eval.batch_size,
      log=log,
    )
    return 0
  run_pipeline(cfg, wd, log=log)
  return 0


def fail(error: BaseException) -> NoReturn:
  """Prints a user error's message alone on stderr, one line; exit status 2."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  print(" ".join(lines) or type(error).__name__, file=sys.stderr, flush=True)
  sys.exit(2)


def main(argv: list[str]) -> int:
  """Runs --mode with the gin config; a user error exits via ``fail``."""
  try:
    return _run(argv)
  except USER_ERRORS as e:
    fail(e)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad flag exits via ``fail``."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(e)


def run() -> None:
  """The command line: ``python run.py [flags]``."""
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=parse_flags)
