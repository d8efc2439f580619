"""onesearch_jax command line: ``python run.py --help``; see onesearch_jax/main.py."""

from onesearch_jax import host_malloc

if __name__ == "__main__":
  # Before JAX is imported: glibc reads its tunables only at process start.
  host_malloc.reexec_with_hugepages()
  from onesearch_jax import main

  main.run()
