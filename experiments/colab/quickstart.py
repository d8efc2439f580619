# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # OneSearch in JAX: Colab quickstart
#
# Builds a tiny simulated e-commerce world, tokenizes its items into semantic
# IDs (KHQE), trains a tiny encoder-decoder through the three SFT phases,
# evaluates it against BM25, and then searches interactively: a query and a
# user go in, the trie-constrained beam search generates SIDs, and the SIDs
# map back to items. Runs on a CPU runtime in a few minutes (a GPU/TPU
# runtime works too). See experiments/colab/README.md.
#
# This file is the source of truth (jupytext percent format); the .ipynb is
# generated from it with `jupytext --sync experiments/colab/quickstart.py`.

# %%
# ruff: noqa: E402
# Install (Colab only): clone the repository unless it is already the working
# directory, then install it in editable mode. Elsewhere, run from the
# repository root with the package installed (`pip install -e .`).
import os
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
REPO_URL = os.environ.get("ONESEARCH_REPO_URL", "")  # set to your clone's URL
if IN_COLAB:
  if not os.path.exists("setup.py"):
    if not os.path.isdir("onesearch_jax_repo"):
      if not REPO_URL:
        raise RuntimeError("set REPO_URL (or ONESEARCH_REPO_URL) to the repository")
      subprocess.run(["git", "clone", REPO_URL, "onesearch_jax_repo"], check=True)
    os.chdir("onesearch_jax_repo")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "."], check=True)
  sys.path.insert(0, os.getcwd())

# %%
# Where the artefacts go. Setting ONESEARCH_QUICKSTART_WORKDIR and
# ONESEARCH_QUICKSTART_WORLD to an already trained workdir and its world skips
# the pipeline cell (the CI smoke test does that).
import pathlib

from onesearch_jax.stages.workdir import Workdir

PRETRAINED = os.environ.get("ONESEARCH_QUICKSTART_WORKDIR", "")
WORKDIR = pathlib.Path(PRETRAINED or "quickstart_workdir")
WORLD_DIR = pathlib.Path(
  os.environ.get("ONESEARCH_QUICKSTART_WORLD", Workdir(WORKDIR).world)
)
BEAM_SIZE = 50
print(f"workdir {WORKDIR.resolve()}, world {WORLD_DIR}")

# %%
# The tiny world (~1k items, 300 users) with the main job's model and SFT
# recipe, shortened to 50 + 50 + 800 steps (a few minutes on 2 CPU cores),
# through the gin-free config factories.
from onesearch_jax import configs
from onesearch_jax.stages.runner import run_pipeline

cfg = configs.pipeline_config(
  world=configs.world_config("tiny", seed=0),
  stages=("world", "sids", "train", "eval"),
  train=configs.sft_config(
    train=configs.train_config(
      log_every=50,
      eval_every=0,
      save_every_steps=200,
      optimizer=configs.optimizer_config(),
    ),
    steps=(50, 50, 800),
    eval_batches=1,
    eval_batch_size=32,
  ),
  eval=configs.eval_config(beam_size=BEAM_SIZE, ks=(10, 50), k_max=50),
)

# %%
# Run the pipeline: world -> sids -> train -> eval. Re-running the cell
# resumes: finished stages are skipped.
if not PRETRAINED:
  stages = run_pipeline(cfg, WORKDIR)
  results_md = Workdir(WORKDIR).results_md.read_text()
  print(results_md.split("## Slices")[0])  # the whole file has every slice

# %% [markdown]
# On this world the generative model alone ranks above BM25 and the
# `sidq_pop` floor on click HR@10 and MRR@10, level with dense retrieval, and
# above `query_memory` on HR@10 (the `onesearch` row above; the MCA cascade
# stays ahead at this training length). The main job (`python run.py`, under
# 10 minutes) ranks above BM25, dense and both rule floors on the default world.
# What follows works the same on any trained workdir.

# %%
# The searcher: trained model + request prompts + catalogue trie + SID -> items.
from onesearch_jax.search import Searcher

searcher = Searcher(WORKDIR, WORLD_DIR, beam_size=BEAM_SIZE, batch_size=1)


def search(query, user_id=None, k=10):
  """Top-k items for a query (user_id None = a cold-start user)."""
  result = searcher.search(query, user_id=user_id, k=k)
  print(searcher.format(result))
  return result


# %%
# A known user with one of their logged queries (the last session of the log).
session = searcher.prompter.index.sessions[-1]
known = search(session.query, user_id=session.user_id)

# %%
# The same query for a cold-start user: no history, so Mu-Seq's query default
# stands in for the behaviour sequence.
cold = search(session.query)

# %%
# Try your own: search("your query", user_id="some user id", k=10)
