"""Byte-compiles what the main job and the tests import, right after install.

scripts/venv.sh installs with `pip install --no-compile`: pip's own pass
compiles every installed file, one at a time (~25 s on 2 cores, most of it
TensorFlow modules nothing here imports). Importing the stack once with
bytecode writing on compiles only the modules actually used (~7 s), and every
later process (the two test workers, the subprocess tests, the main job)
reads the cached bytecode, also where PYTHONDONTWRITEBYTECODE is set.
Modules imported later and not listed here compile on first use as usual.

Run by scripts/venv.sh as `PYTHONDONTWRITEBYTECODE= python scripts/precompile.py`.
"""

import compileall
import importlib
import os
import pathlib
import sys

MODULES = (
  "tensorflow",
  "seqio",
  "tensorflow_datasets",
  "jax",
  "flax.nnx",
  "optax",
  "orbax.checkpoint",
  "gin",
  "absl.flags",
  "matplotlib.pyplot",
  "pytest",
  "xdist",
  "onesearch_jax.main",
  "onesearch_jax.world.tfds_builder",
)


def main() -> int:
  if os.environ.get("PYTHONDONTWRITEBYTECODE"):
    print(
      "[precompile] PYTHONDONTWRITEBYTECODE is set; nothing written", file=sys.stderr
    )
    return 1
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("MPLBACKEND", "Agg")
  root = pathlib.Path(__file__).resolve().parent.parent
  sys.path.insert(0, str(root))
  for name in MODULES:
    importlib.import_module(name)
  for sub in ("onesearch_jax", "experiments", "benchmarks"):
    compileall.compile_dir(str(root / sub), quiet=1)
  print(f"[precompile] {len(sys.modules)} modules imported and byte-compiled")
  return 0


if __name__ == "__main__":
  sys.exit(main())
