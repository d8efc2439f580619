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
