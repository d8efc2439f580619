"""onesearch_jax: an open JAX/Flax implementation of OneSearch.

Exact, known-good versions live in constraints.txt (`pip install -c`);
the ranges below are what the code is written against.
"""

import setuptools

INSTALL_REQUIRES = [
  # The design-card stack.
  "jax>=0.10,<0.11",
  "flax>=0.12,<0.13",
  "optax>=0.2.8",
  "orbax-checkpoint>=0.12",
  "tensorflow-datasets>=4.9.10",
  "seqio==0.0.20",
  "sentencepiece>=0.2",
  "numpy>=2.0",
  "absl-py>=2.0",
  "gin-config>=0.5",
  # pyahocorasick: the standard Aho-Corasick automaton (also what the
  # official OneSearch keyword enhancement uses); used for longest-first
  # keyword matching on English and CJK text.
  "pyahocorasick>=2.1",
  # tensorflow-datasets 4.9.10 imports importlib_resources but only declares
  # it for Python < 3.9 (tensorflow/datasets#11212); without it no builder runs.
  "importlib_resources>=6",
  # matplotlib: PNG plots in the SID report and world statistics.
  "matplotlib>=3.8",
  # bm25s: the BM25 baseline of the evaluation (eval/baselines/bm25.py).
  "bm25s>=0.2",
]

EXTRAS = {
  # pytest-xdist: the suite runs in two processes (one per core) so the
  # single-threaded compiles of different test files overlap.
  "test": ["pytest>=8", "pytest-xdist>=3.6", "ruff==0.17.6"],
  # Baselines and peers measured side by side in benchmarks/ (never needed
  # by the main job or tests).
  "bench": ["faiss-cpu", "torch", "transformers"],
  "colab": ["jupytext", "ipykernel"],
  "tpu": ["jax[tpu]>=0.10,<0.11"],
  # The Beam caching job (data/cache_tasks.py), in its own environment
  # (scripts/beam_venv.sh, constraints-beam.txt): apache-beam does not resolve
  # against constraints.txt. google-crc32c: the TFRecord checksums of Beam's
  # WriteToTFRecord (without it, or crcmod, the write fails).
  "beam": ["apache-beam>=2.72", "google-crc32c>=1.5"],
}

setuptools.setup(
  name="onesearch_jax",
  version="0.1.0",
  description="OneSearch generative e-commerce search in JAX/Flax",
  packages=setuptools.find_packages(include=["onesearch_jax", "onesearch_jax.*"]),
  package_data={"onesearch_jax": ["world/data/*"]},
  python_requires=">=3.11",
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS,
)
