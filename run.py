"""onesearch_jax command line: ``python run.py --help``; see onesearch_jax/main.py."""

from onesearch_jax import main

if __name__ == "__main__":
  main.run()
