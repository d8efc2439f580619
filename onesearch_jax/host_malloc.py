"""Transparent huge pages for the host allocator (glibc), set before start.

XLA:CPU allocates each execution's temporary buffer afresh. At the main
job's shapes that buffer is tens of MB, above glibc's largest mmap
threshold (32 MiB), so every train step maps new memory and touches it one
4 KiB page fault at a time and unmaps it at the end: ~19,000 page faults
and about a third of the step's CPU in the kernel
(docs/BENCHMARKS.md, "The host allocator"). glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) makes malloc ask for transparent
huge pages (``madvise(MADV_HUGEPAGE)``) on the memory it maps, so the same
buffer costs ~1/50 of the faults. Where the machine's transparent huge pages
are "madvise" (the common default) that is the difference; under "always"
they are on anyway and under "never" the tunable does nothing.

The numbers do not change: only where the buffers live and how the kernel
backs them. glibc reads tunables once, at process start, so ``run.py``
re-executes itself with the tunable added (``reexec_with_hugepages``) before
it imports JAX; ``scripts/test.sh`` exports the value
``python -m onesearch_jax.host_malloc`` prints for the test processes.
Opt out with ``ONESEARCH_HUGEPAGE_MALLOC=0``. Other libcs (musl, macOS)
and other platforms are left alone.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

TUNABLE = "glibc.malloc.hugetlb"
VALUE = "1"
OPT_OUT = "ONESEARCH_HUGEPAGE_MALLOC"


def tunables_with_hugepages(current: str) -> str:
  """``GLIBC_TUNABLES`` with ``glibc.malloc.hugetlb=1`` added.

  Args:
    current: the variable's value ("" when unset): colon-separated
      ``name=value`` pairs.

  Returns:
    ``current`` unchanged when it already sets the tunable (the user's
    value wins), else ``current`` with ``glibc.malloc.hugetlb=1`` appended.
  """
  pairs = [p for p in current.split(":") if p]
  if any(p.split("=", 1)[0] == TUNABLE for p in pairs):
    return current
  return ":".join([*pairs, f"{TUNABLE}={VALUE}"])


def wanted(env: Mapping[str, str], system: str, libc: str) -> bool:
  """Whether a process with ``env`` on ``system`` / ``libc`` should re-execute.

  True on Linux with glibc when the opt-out is not "0" and
  ``GLIBC_TUNABLES`` does not set the tunable yet.
  """
  if env.get(OPT_OUT, "1") == "0" or system != "Linux" or libc != "glibc":
    return False
  current = env.get("GLIBC_TUNABLES", "")
  return tunables_with_hugepages(current) != current


def reexec_with_hugepages(argv: Sequence[str] | None = None) -> None:
  """Replaces this process by itself with the tunable set, where ``wanted``.

  Call it first thing in a command-line entry point, before heavy imports
  (the new process starts from scratch). Returns only when nothing is to
  be done.

  Args:
    argv: the full command line to run again (default ``sys.orig_argv``: the
      interpreter, its options, the script and its arguments).
  """
  if not wanted(os.environ, platform.system(), platform.libc_ver()[0]):
    return
  env = dict(os.environ)
  env["GLIBC_TUNABLES"] = tunables_with_hugepages(env.get("GLIBC_TUNABLES", ""))
  argv = list(sys.orig_argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, argv, env)


def main() -> None:
  """Prints the ``GLIBC_TUNABLES`` value this process's children should get
  (nothing where ``wanted`` is False), for shell scripts to export."""
  if wanted(os.environ, platform.system(), platform.libc_ver()[0]):
    print(tunables_with_hugepages(os.environ.get("GLIBC_TUNABLES", "")))


if __name__ == "__main__":
  main()
