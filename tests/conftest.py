"""Shared test set-up: JAX on CPU with 8 fake devices, tiny fixtures.

The environment variables must be set before anything imports jax, which is
why they live at the top of the first module pytest loads. The fixtures are
thin wrappers over the builders of onesearch_jax/testing.py.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fcntl  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402
from xdist.scheduler import LoadFileScheduling  # noqa: E402

from onesearch_jax import testing  # noqa: E402
from onesearch_jax.khqe import build  # noqa: E402
from onesearch_jax.train import sft  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The costly session fixtures, in priority order: under pytest-xdist a session
# fixture is built once per worker, so the test files that use one share a
# worker (``SharedFixtureScheduling``).
SHARED_FIXTURES = ("sft_run", "tiny_sid_build")


class SharedFixtureScheduling(LoadFileScheduling):
  """``--dist loadfile`` (a file's tests run in one worker, its module
  fixtures built once), except that every test file naming one of
  ``SHARED_FIXTURES`` joins that fixture's work unit: the tiny SFT run and
  the tiny SID build are each built in one worker only."""

  def _split_scope(self, nodeid: str) -> str:
    return _work_unit(self.config, nodeid)


@functools.cache
def _shared_scope(path: pathlib.Path) -> str | None:
  """The first of ``SHARED_FIXTURES`` a test file names (as a word), if any."""
  text = path.read_text(encoding="utf-8")
  return next((f for f in SHARED_FIXTURES if re.search(rf"\b{f}\b", text)), None)


def pytest_xdist_make_scheduler(config, log):
  """The scheduler of ``--dist loadfile`` (scripts/test.sh), taking the work
  units in the order the workers collected them (``pytest_collection_modifyitems``
  puts the heaviest first), not by their number of tests."""
  if config.getoption("dist") == "loadfile":
    config.option.loadscopereorder = False
    return SharedFixtureScheduling(config, log)
  return None


# Seconds per test (setup + call + teardown) measured on a fresh clone, 2
# idle cores, written by a run with ONESEARCH_RECORD_TEST_SECONDS=PATH (see
# pytest_sessionfinish); a test not listed counts SLOW_SECONDS if `slow`,
# else 1 s. A work unit weighs the sum over its selected tests, so the quick
# tier (-m "not slow") is balanced by its own tests. Only the order of work
# units depends on it, never a result.
TEST_SECONDS = json.loads(
  (pathlib.Path(__file__).parent / "test_seconds.json").read_text()
)
SLOW_SECONDS = 30


def _deselect_beam(config, items) -> None:
  """Tests marked ``beam`` need the Beam environment (.venv-beam): they run
  only when the -m expression names the marker (``-m beam``, what
  scripts/test.sh's Beam step runs); otherwise they are deselected, and
  pytest reports them as such."""
  if "beam" in (config.option.markexpr or ""):
    return
  beam = [item for item in items if item.get_closest_marker("beam")]
  if beam:
    config.hook.pytest_deselected(items=beam)
    items[:] = [item for item in items if not item.get_closest_marker("beam")]


def pytest_collection_modifyitems(config, items):
  """Deselects the ``beam`` tests (``_deselect_beam``); in an xdist worker,
  the heaviest work units first (``TEST_SECONDS``), so that the last units
  handed out are short and both workers finish together
  (longest-processing-time-first). The order within a unit is kept."""
  _deselect_beam(config, items)
  if not hasattr(config, "workerinput"):
    return
  weight: dict[str, float] = {}
  for item in items:
    unit = _work_unit(config, item.nodeid)
    default = SLOW_SECONDS if item.get_closest_marker("slow") else 1.0
    weight[unit] = weight.get(unit, 0.0) + TEST_SECONDS.get(item.nodeid, default)
  items.sort(key=lambda item: -weight[_work_unit(config, item.nodeid)])


_RECORDED: dict[str, float] = {}


def pytest_runtest_logreport(report):
  """Sums each test's phase durations (in the controller under xdist)."""
  if os.environ.get("ONESEARCH_RECORD_TEST_SECONDS"):
    _RECORDED[report.nodeid] = _RECORDED.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
  """ONESEARCH_RECORD_TEST_SECONDS=tests/test_seconds.json: writes the
  per-test seconds of this run (the controller's view; merged into the file's
  entries, so a partial run updates only its tests)."""
  path = os.environ.get("ONESEARCH_RECORD_TEST_SECONDS")
  if not path or hasattr(session.config, "workerinput") or not _RECORDED:
    return
  out = pathlib.Path(path)
  # scripts/test.sh runs the Beam tests beside the suite: both sessions may
  # merge into the file at once, so the read-update-write holds a lock.
  with open(f"{out}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    seconds = json.loads(out.read_text()) if out.exists() else {}
    seconds.update({k: round(v, 2) for k, v in _RECORDED.items()})
    out.write_text(json.dumps(dict(sorted(seconds.items())), indent=0) + "\n")


def _work_unit(config, nodeid: str) -> str:
  """A test's xdist work unit: its shared fixture's, else its file."""
  path = nodeid.split("::", 1)[0]
  return _shared_scope(config.rootpath / path) or path


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


@pytest.fixture(scope="session", autouse=True)
def _checkpoints_without_replica_parallel():
  """Orbax writes each replicated array once, from its first replica, for the
  whole session (``ArrayHandler(use_replica_parallel=False)``) instead of
  slicing it across the replicas of the 8 fake devices: that slicing runs
  ~1,500 eager JAX ops per tiny-model save (a compile for each new shape),
  ~1-7 s a save against ~0.4 s. The bytes on disk and every restore are the
  same; only which replica writes which slice differs. Orbax's default
  handler stays covered where it runs in production shape: the kill -9 drill
  (tests/train/kill_drill_test.py, 8 fake devices, async saves killed
  mid-write) and the run.py subprocess tests start without this fixture.
  """
  old = ocp.type_handlers.get_type_handler(jax.Array)
  handler = ocp.type_handlers.ArrayHandler(
    use_replica_parallel=False,
    # the default handler's metadata store (orbax registers it with one)
    array_metadata_store=old._array_metadata_store,
  )
  ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
  yield
  ocp.type_handlers.register_type_handler(jax.Array, old, override=True)


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
  return testing.write_tiny_world(tmp_path_factory.mktemp("tiny_world"))


@pytest.fixture(scope="session")
def tiny_sid_build(tiny_world_dir, tmp_path_factory):
  """One SID build of the tiny world, shared by tests/khqe and tests/eval
  (read-only): (BuildSummary, artefact dir, progress lines, BuildConfig)."""
  cfg = testing.tiny_sid_build_config()
  out = tmp_path_factory.mktemp("tiny_sids")
  lines: list[str] = []
  summary = build.build_sids(tiny_world_dir, out, cfg, log=lines.append)
  return summary, out, lines, cfg


@pytest.fixture(scope="session")
def zh_world_dir() -> pathlib.Path:
  """Hand-written Chinese rows in the KuaiSearch schema (tests/testdata)."""
  return pathlib.Path(__file__).resolve().parent / "testdata" / "kuaisearch_zh"


# The tiny SFT run and its inputs, session-wide: tests/train and
# tests/experiments share ONE training run.


@pytest.fixture(scope="session")
def tiny_sft_config():
  """The factory of the tests' SFTConfig (keyword overrides)."""
  return testing.tiny_sft_config


@pytest.fixture(scope="session")
def fast_compile():
  """XLA without most optimisations: compiles in a fraction of the time."""
  with testing.fast_compile():
    yield


@pytest.fixture(scope="session")
def sft_world(tmp_path_factory) -> pathlib.Path:
  """The data tests' small random world (testing.write_small_world)."""
  return testing.write_small_world(tmp_path_factory.mktemp("sft_world"))


@pytest.fixture(scope="session")
def sft_sids(sft_world, tmp_path_factory) -> tuple[pathlib.Path, str]:
  """A SID artefact for sft_world: (artefact dir, content hash)."""
  out = tmp_path_factory.mktemp("sft_sids")
  return out, testing.write_sid_artefact(sft_world, out)


@pytest.fixture(scope="session")
def sft_run(sft_world, sft_sids, tmp_path_factory, fast_compile):
  """One uninterrupted tiny SFT run: (SFTResult, logged lines)."""
  sid_dir, sid_hash = sft_sids
  lines: list[str] = []
  out = tmp_path_factory.mktemp("sft_out")
  cfg = testing.tiny_sft_config()
  res = sft.run_sft(sft_world, sid_dir, out, cfg, sid_hash=sid_hash, log=lines.append)
  return res, lines
