"""Shared test set-up: JAX on CPU with 8 fake devices, tiny fixtures.

The environment variables must be set before anything imports jax, which is
why they live at the top of the first module pytest loads.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache(tmp_path_factory):
  """One persistent XLA compile cache for the whole session (a fresh, empty
  directory): a program compiled once (the shared tiny SFT run's train and
  eval steps, a resumed run's step, the same tiny model in many tests) is
  loaded, not compiled, the next time any test builds it. An executable
  loaded from the cache is the one the first compile produced, so results
  are unchanged; compile-to-compile determinism is covered by the kill -9
  drill (tests/train/kill_drill_test.py), whose fresh subprocesses start
  without this cache. Programs that compile in under 0.1 s are not stored.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache

  options = {
    "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache")),
    "jax_persistent_cache_min_compile_time_secs": 0.1,
  }
  old = {k: jax.config.values[k] for k in options}
  for k, v in options.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()
  yield
  for k, v in old.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def real_data_dir() -> pathlib.Path:
  """../shared/data/real (ESCI and WANDS excerpts). Fails loudly if absent."""
  path = SHARED_DATA / "real"
  if not path.is_dir():
    raise FileNotFoundError(
      f"{path} is missing: the tests need ../shared/data/real beside the repo"
    )
  return path


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory) -> pathlib.Path:
  """A tiny simulated world written once per session in the KuaiSearch schema."""
  from onesearch_jax.world import simulator
  from onesearch_jax.world.config import WorldConfig

  out = tmp_path_factory.mktemp("tiny_world")
  simulator.write_world(WorldConfig.tiny(seed=0), out)
  return out


def tiny_sid_build_config():
  """The tiny world's fast SID build (trained encoder, all four variants)."""
  from onesearch_jax.khqe import build, encoder, quantizer, text_vocab

  return build.BuildConfig(
    vocab=text_vocab.VocabConfig(vocab_size=600),
    encoder=encoder.EncoderConfig(dim=32, hidden_dim=64, max_len=24),
    train=encoder.EncoderTrainConfig(steps=60, batch_size=128, log_every=30),
    quantizer=quantizer.QuantizerConfig(
      levels=(32, 8, 8), opq_codes=64, n_iter=10, opq_iter=10
    ),
  )


@pytest.fixture(scope="session")
def tiny_sid_build(tiny_world_dir, tmp_path_factory):
  """One SID build of the tiny world, shared by tests/khqe and tests/eval
  (read-only): (BuildSummary, artefact dir, progress lines, BuildConfig)."""
  from onesearch_jax.khqe import build

  cfg = tiny_sid_build_config()
  out = tmp_path_factory.mktemp("tiny_sids")
  lines: list[str] = []
  summary = build.build_sids(tiny_world_dir, out, cfg, progress=lines.append)
  return summary, out, lines, cfg


@pytest.fixture(scope="session")
def zh_world_dir() -> pathlib.Path:
  """Hand-written Chinese rows in the KuaiSearch schema (tests/testdata)."""
  return pathlib.Path(__file__).resolve().parent / "testdata" / "kuaisearch_zh"


def _load_sft_fixtures():
  path = pathlib.Path(__file__).resolve().parent / "train" / "sft_fixtures.py"
  spec = importlib.util.spec_from_file_location("_sft_fixtures", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


# The tiny SFT run and its inputs (tests/train/sft_fixtures.py), session-wide:
# tests/train and tests/experiments share one training run.
_sft = _load_sft_fixtures()
tiny_sft_config = _sft.tiny_sft_config
fast_compile = _sft.fast_compile
sft_world = _sft.sft_world
sft_sids = _sft.sft_sids
sft_run = _sft.sft_run
