#!/usr/bin/env bash
# Set up .venv (reused when present), lint with ruff, run the test suite.
# With ONESEARCH_BEAM_TESTS=1 (set by .ci/run; also on when CI=true), also
# set up .venv-beam (scripts/beam_venv.sh) and run the tests marked `beam`
# (the Beam task cache on the tiny world) in it, beside the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
echo "[lint] ruff check + ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# 8 fake CPU devices for the sharding tests (also set in tests/conftest.py).
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}"
export JAX_PLATFORMS=cpu
# Transparent huge pages for glibc's malloc (onesearch_jax/host_malloc.py;
# run.py sets it for itself): XLA:CPU's per-step buffers then cost a fraction
# of the page faults. It prints nothing where the variable stays as it is
# (ONESEARCH_HUGEPAGE_MALLOC=0, the tunable already set, not Linux + glibc).
tunables=$(.venv/bin/python -m onesearch_jax.host_malloc)
if [ -n "$tunables" ]; then
  export GLIBC_TUNABLES="$tunables"
fi
export TF_CPP_MIN_LOG_LEVEL=2
# Two test processes (pytest-xdist, one per core; a test file stays in one
# process so its module fixtures are built once, and the files sharing a
# costly session fixture share a process: tests/conftest.py, heaviest files
# first). PYTEST_WORKERS=0: one process.
beam="${ONESEARCH_BEAM_TESTS:-}"
if [ -z "$beam" ] && [ "${CI:-}" = "true" ]; then
  beam=1
fi
if [ "$beam" != "1" ]; then
  exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
fi
# The Beam step runs beside the suite, not after it: its environment's
# set-up is mostly downloads and its tests are one process, so on 2 cores it
# adds about a minute to the suite instead of ~4 minutes after it. Its output
# goes to a log printed when both are done; either failing fails the script.
beam_log=$(mktemp)
(
  bash scripts/beam_venv.sh
  exec .venv-beam/bin/python -m pytest -m beam tests/data/cache_tasks_test.py
) >"$beam_log" 2>&1 &
beam_pid=$!
trap 'kill "$beam_pid" 2>/dev/null || true; rm -f "$beam_log"' INT TERM
suite=0
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@" || suite=$?
echo "[beam] the Beam environment and the tests marked beam (run beside the suite)"
beam_rc=0
wait "$beam_pid" || beam_rc=$?
cat "$beam_log"
rm -f "$beam_log"
if [ "$suite" -ne 0 ] || [ "$beam_rc" -ne 0 ]; then
  echo "[test] failed: suite exit $suite, Beam step exit $beam_rc"
  exit 1
fi
