"""The shared tiny-SFT fixtures: the data tests' small world, a SID artefact
for it, and one short SFT run (tiny model, a few steps per stage).

Not a conftest: tests/conftest.py re-exports these fixtures, so that every
test directory (tests/train, tests/experiments) shares ONE session-scoped
training run instead of one per directory.

The world comes from tests/data/conftest.py's ``write_world`` (loaded by
path: pytest runs in importlib mode, so the test directories are not
packages).
"""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from onesearch_jax import configs


def _data_conftest():
  path = pathlib.Path(__file__).resolve().parents[1] / "data" / "conftest.py"
  spec = importlib.util.spec_from_file_location("_data_conftest_for_train", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def write_sid_artefact(world_dir: pathlib.Path, out: pathlib.Path) -> str:
  """A real KHQE artefact (fitted RQ + OPQ quantiser, levels 8-4-4, OPQ
  2x16) with random codes for every item and query of a world.

  Returns:
    The artefact's content hash.
  """
  import json

  from onesearch_jax.khqe import artefact, quantizer

  items = [json.loads(x)["item_id"] for x in open(world_dir / "items.jsonl")]
  queries = sorted(
    {json.loads(x)["query"] for x in open(world_dir / "recall.jsonl", encoding="utf-8")}
  )
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 8)).astype(np.float32)
  cfg = quantizer.QuantizerConfig(
    levels=(8, 4, 4), opq_subspaces=2, opq_codes=16, n_iter=2, opq_iter=1
  )
  q = quantizer.fit(x, cfg)
  codes = q.encode(rng.normal(size=(len(items) + len(queries), 8)).astype(np.float32))
  art = artefact.SIDArtefact(
    quantizer=q,
    item_ids=tuple(items),
    item_codes=codes[: len(items)],
    item_popularity=np.ones(len(items)),
    query_texts=tuple(queries),
    query_codes=codes[len(items) :],
  )
  return artefact.save(art, out)


def _tiny_sft_config(**kw):
  """Tiny model, 3/3/4 steps, a checkpoint every step (the tests restore
  intermediate steps), one eval batch."""
  args = dict(
    model=configs.model_config("tiny", {"qformer_layers": 1}),
    train=configs.train_config(
      log_every=1,
      eval_every=2,
      save_every_steps=1,
      keep_last=10,
      async_save=False,
      optimizer=configs.optimizer_config(warmup_steps=1),
    ),
    steps=(3, 3, 4),
    batch_size=8,
    lengths=((48, 24), (48, 24), (96, 6)),
    eval_batches=1,
    eval_batch_size=8,
    sentencepiece={"vocab_size": 300},
    # Each stage warms up from lr 0, so stage 2's first step keeps stage 1's
    # final parameters (test_three_stages_chain...); the main job's
    # continuous schedule is tested in tests/train/optimizers_test.py.
    schedule="per_stage",
    # Fixed-width batches: one compiled step per stage (the bucketed path is
    # tested in tests/data/model_batches_test.py and tests/train/sft_test.py).
    length_buckets=(),
  )
  args.update(kw)
  return configs.sft_config(**args)


@pytest.fixture(scope="session")
def tiny_sft_config():
  """The factory of the tests' SFTConfig (keyword overrides)."""
  return _tiny_sft_config


@pytest.fixture(scope="session")
def fast_compile():
  """XLA without most optimisations: compiles in a fraction of the time."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="session")
def sft_world(tmp_path_factory) -> pathlib.Path:
  return _data_conftest().write_world(tmp_path_factory.mktemp("sft_world"))


@pytest.fixture(scope="session")
def sft_sids(sft_world, tmp_path_factory) -> tuple[pathlib.Path, str]:
  out = tmp_path_factory.mktemp("sft_sids")
  return out, write_sid_artefact(sft_world, out)


@pytest.fixture(scope="session")
def sft_run(sft_world, sft_sids, tmp_path_factory, fast_compile):
  """One uninterrupted tiny SFT run: (SFTResult, logged lines)."""
  from onesearch_jax.train import sft

  sid_dir, sid_hash = sft_sids
  lines: list[str] = []
  out = tmp_path_factory.mktemp("sft_out")
  res = sft.run_sft(
    sft_world, sid_dir, out, _tiny_sft_config(), sid_hash=sid_hash, log=lines.append
  )
  return res, lines
