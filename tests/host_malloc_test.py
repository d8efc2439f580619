"""host_malloc: the GLIBC_TUNABLES merge, when run.py re-executes, and that
the tunable changes what a large malloc costs in page faults."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess
import sys
import textwrap

import pytest

from onesearch_jax import host_malloc

REPO = pathlib.Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize(
  "current, expected",
  [
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("a=1::b=2:", "a=1:b=2:glibc.malloc.hugetlb=1"),
    # The user's own value wins, whatever it is.
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),
    ("x=1:glibc.malloc.hugetlb=2", "x=1:glibc.malloc.hugetlb=2"),
    # A longer name with the tunable as its prefix is another tunable.
    ("glibc.malloc.hugetlbx=1", "glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1"),
  ],
)
def test_tunables_with_hugepages(current, expected):
  assert host_malloc.tunables_with_hugepages(current) == expected


def test_wanted():
  assert host_malloc.wanted({}, "Linux", "glibc")
  assert host_malloc.wanted({"GLIBC_TUNABLES": "a=1"}, "Linux", "glibc")
  assert not host_malloc.wanted(
    {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "Linux", "glibc"
  )
  assert not host_malloc.wanted({"ONESEARCH_HUGEPAGE_MALLOC": "0"}, "Linux", "glibc")
  assert host_malloc.wanted({"ONESEARCH_HUGEPAGE_MALLOC": "1"}, "Linux", "glibc")
  assert not host_malloc.wanted({}, "Darwin", "")
  assert not host_malloc.wanted(
    {}, "Linux", ""
  )  # musl: platform.libc_ver() is ("", "")


_SCRIPT = textwrap.dedent(
  """
  import os, sys
  with open(sys.argv[1], "a") as f:
    f.write("run\\n")
  from onesearch_jax import host_malloc
  host_malloc.reexec_with_hugepages()
  print(repr(os.environ.get("GLIBC_TUNABLES")), sys.argv[2:])
  """
)


def _run_script(tmp_path, env_extra):
  script = tmp_path / "entry.py"
  script.write_text(_SCRIPT)
  runs = tmp_path / "runs.txt"
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",)}
  env.pop(host_malloc.OPT_OUT, None)
  env.update(env_extra)
  env["PYTHONPATH"] = str(REPO)
  out = subprocess.run(
    [sys.executable, "-u", str(script), str(runs), "--flag=x y"],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  return runs.read_text().count("run"), out.stdout.strip()


def test_reexec_runs_once_more_with_the_tunable_and_the_same_arguments(tmp_path):
  n, out = _run_script(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
  if GLIBC:
    assert n == 2
    assert out == "'glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1' ['--flag=x y']"
  else:  # nothing to do elsewhere: one run, the variable as it was
    assert (n, out) == (1, "'glibc.malloc.arena_max=4' ['--flag=x y']")


def test_reexec_opt_out_and_already_set(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  n, out = _run_script(tmp_path / "a", {host_malloc.OPT_OUT: "0"})
  assert (n, out) == (1, "None ['--flag=x y']")
  n, out = _run_script(tmp_path / "b", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
  assert (n, out) == (1, "'glibc.malloc.hugetlb=0' ['--flag=x y']")


_FAULTS = textwrap.dedent(
  """
  import ctypes, resource
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype = ctypes.c_void_p
  n = 64 << 20
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  p = libc.malloc(n)  # above glibc's mmap threshold: fresh pages
  ctypes.memset(p, 1, n)
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  """
)


def _faults(tunables: str | None) -> int:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if tunables is not None:
    env["GLIBC_TUNABLES"] = tunables
  out = subprocess.run(
    [sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True
  )
  return int(out.stdout)


def _thp_mode() -> str:
  try:
    text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
  except OSError:
    return "absent"
  return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "absent"


def test_tunable_cuts_the_page_faults_of_a_large_malloc():
  """64 MiB touched once: 16,384 faults of 4 KiB pages without huge pages,
  ~32 with 2 MiB ones. Only glibc on Linux with THP "madvise" is expected to
  differ (under "always" both runs get huge pages, under "never" neither)."""
  plain, huge = _faults(None), _faults("glibc.malloc.hugetlb=1")
  pages = (64 << 20) // 4096
  if GLIBC and _thp_mode() == "madvise":
    assert plain >= pages * 0.9
    assert huge < plain / 4, (plain, huge)
  else:
    assert abs(huge - plain) < pages / 4, (plain, huge, _thp_mode())


def test_module_prints_what_scripts_export():
  """``python -m onesearch_jax.host_malloc`` (scripts/test.sh): the merged
  value where a re-execution is wanted, nothing otherwise."""

  def printed(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.pop(host_malloc.OPT_OUT, None)
    env.update(env_extra, PYTHONPATH=str(REPO))
    return subprocess.run(
      [sys.executable, "-m", "onesearch_jax.host_malloc"],
      env=env,
      capture_output=True,
      text=True,
      check=True,
    ).stdout

  merged = printed({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
  if GLIBC:
    assert merged == "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1\n"
  else:
    assert merged == ""
  assert printed({host_malloc.OPT_OUT: "0"}) == ""
  assert printed({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == ""
