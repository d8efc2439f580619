"""Tiny worlds, SID tables and configs for tests and notebooks (as seqio's
``seqio/test_utils.py``).

Plain builders only: the pytest fixtures that share them across a test
session live in the ``tests/**/conftest.py`` files and call these.

- ``write_tiny_world``: the simulator's tiny world (``WorldConfig.tiny``).
- ``tiny_sid_build_config``: the fast SID build of the tiny world.
- ``write_small_world`` / ``synthetic_sid_table`` / ``write_sid_artefact``: a
  hand-rolled random world (every session controlled: a few users, four
  categories, English and Chinese text, a last day in the test split), a
  random SID table over it, and a real KHQE artefact with random codes.
- ``tiny_sft_config``: the tiny model's short three-phase SFT run.
- ``hand_world`` / ``hand_table``: the PARS tests' three-item world.
- ``fast_compile``: XLA without most optimisations, for tiny models.
- ``compiled_programs``: counts the XLA programs compiled inside a block.

Importing this module imports jax: set ``XLA_FLAGS`` / ``JAX_PLATFORMS``
first (tests/conftest.py does).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import pathlib
import sys
from collections.abc import Iterator

import jax
import numpy as np

from onesearch_jax import configs
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.khqe import artefact, build, encoder, quantizer, text_vocab
from onesearch_jax.train.sft_config import SFTConfig
from onesearch_jax.world import jsonl, simulator, writer
from onesearch_jax.world.config import WorldConfig
from onesearch_jax.world.reader import SkipReport, World

# ---------------------------------------------------------------------------
# The simulator's tiny world and its fast SID build.


def write_tiny_world(out: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes the simulator's tiny world (``WorldConfig.tiny``) to ``out``."""
  simulator.write_world(WorldConfig.tiny(seed=seed), out)
  return out


def tiny_sid_build_config() -> build.BuildConfig:
  """The tiny world's fast SID build (trained encoder, all four variants):
  vocab 600, encoder dim 32, 60 steps, levels 32-8-8, OPQ codes 64."""
  return build.BuildConfig(
    vocab=text_vocab.VocabConfig(vocab_size=600),
    encoder=encoder.EncoderConfig(dim=32, hidden_dim=64, max_len=24),
    train=encoder.EncoderTrainConfig(steps=60, batch_size=128, log_every=30),
    quantizer=quantizer.QuantizerConfig(
      levels=(32, 8, 8), opq_codes=64, n_iter=10, opq_iter=10
    ),
  )


# ---------------------------------------------------------------------------
# A small random world, written row by row (the data and SFT tests).

CATEGORIES = [  # (l1, l2, l3, title words, queries)
  (
    "Clothing",
    "Women",
    "Dresses",
    ["red", "dress", "summer"],
    ["red dress", "summer dress"],
  ),
  ("Clothing", "Men", "Shoes", ["running", "shoes", "light"], ["running shoes"]),
  ("Food", "Snacks", "Nuts", ["nuts", "gift", "box"], ["nut gift box", "坚果零食"]),
  ("Digital", "Phones", "Phones", ["phone", "5G", "华为"], ["华为手机 5G", "phone"]),
]


def clustered_points(n: int, d: int, clusters: int, seed: int = 0) -> np.ndarray:
  """[n, d] float32 points around ``clusters`` Gaussian centres (scale 4,
  unit noise): k-means / RQ / quantiser test data with real structure."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(clusters, d)) * 4
  return (centers[rng.integers(0, clusters, n)] + rng.normal(size=(n, d))).astype(
    np.float32
  )


def _small_item(i: int, rng: np.random.Generator) -> dict:
  c = i % len(CATEGORIES)
  l1, l2, l3, words, _ = CATEGORIES[c]
  return {
    "item_id": f"i{i:03d}",
    "item_title": " ".join(rng.permutation(words).tolist()) + f" model{i}",
    "brand_id": f"b{c}",
    "brand_name": f"brand{c}",
    "seller_id": f"s{c}",
    "seller_name": f"seller{c}",
    "category_level1_id": f"c1_{l1}",
    "category_level1_name": l1,
    "category_level2_id": f"c2_{l1}_{l2}",
    "category_level2_name": l2,
    "category_level3_id": f"c3_{l1}_{l2}_{l3}",
    "category_level3_name": l3,
  }


def _small_user(u: int) -> dict:
  return {
    "user_id": f"u{u:02d}",
    "gender": ("female", "male")[u % 2],
    "age_bucket": ("18-23", "24-30", "50+")[u % 3],
    "fre_country": "cn",
    "fre_province": "p",
    "fre_city": "c",
  }


def write_small_world(
  out: pathlib.Path,
  *,
  n_users: int = 12,
  n_items: int = 40,
  n_days: int = 5,
  sessions_per_day: int = 2,
  seed: int = 0,
) -> pathlib.Path:
  """Writes a small random world in the KuaiSearch schema to ``out``.

  users / items / recall JSONL files (ranking and relevance empty):
  ``n_items`` items cycling through ``CATEGORIES``, ``n_users`` users with
  ``sessions_per_day`` recall sessions each per day over ``n_days`` days
  (4 items shown per session, from the query's category); the last day is
  the test split. Deterministic in ``seed``.

  Returns:
    ``out``.
  """
  rng = np.random.default_rng(seed)
  out.mkdir(parents=True, exist_ok=True)
  items = [_small_item(i, rng) for i in range(n_items)]
  by_cat: dict[int, list[str]] = {}
  for i, item in enumerate(items):
    by_cat.setdefault(i % len(CATEGORIES), []).append(item["item_id"])
  users = [_small_user(u) for u in range(n_users)]
  recall = []
  sid = 0
  for day in range(n_days):
    for u in range(n_users):
      for _ in range(sessions_per_day):
        c = int(rng.integers(len(CATEGORIES)))
        queries = CATEGORIES[c][4]
        shown = rng.choice(by_cat[c], size=4, replace=False).tolist()
        clicked = [x for x in shown if rng.random() < 0.4]
        purchased = [x for x in clicked if rng.random() < 0.5]
        recall.append(
          {
            "user_id": f"u{u:02d}",
            "session_id": f"s{sid:05d}",
            "query": queries[int(rng.integers(len(queries)))],
            "impressed_item_ids": shown,
            "clicked_item_ids": clicked,
            "purchased_item_ids": purchased,
            "time_index": day * 86400 + int(rng.integers(86400)),
            "split": "test" if day == n_days - 1 else "train",
          }
        )
        sid += 1
  tables = {"users": users, "items": items, "recall": recall}
  for name in ("users", "items", "recall", "ranking", "relevance"):
    with writer.JsonlWriter(out / f"{name}.jsonl") as w:
      for row in tables.get(name, ()):
        w.write(row)
  return out


def _items_and_queries(world_dir: pathlib.Path) -> tuple[list[str], list[str]]:
  """A world's item ids (file order) and its recall queries (sorted)."""
  items = [r["item_id"] for r in jsonl.read_jsonl(world_dir / "items.jsonl")]
  queries = sorted({r["query"] for r in jsonl.read_jsonl(world_dir / "recall.jsonl")})
  return items, queries


def synthetic_sid_table(world_dir: pathlib.Path, seed: int = 0, **kw) -> SIDTable:
  """A random SID table over every item and recall query of a world
  (``SIDTable.synthetic``; ``kw``: its levels, OPQ sizes, ...)."""
  items, queries = _items_and_queries(world_dir)
  return SIDTable.synthetic(items, queries, seed=seed, **kw)


def write_sid_artefact(world_dir: pathlib.Path, out: pathlib.Path) -> str:
  """Saves a real KHQE artefact for a world to ``out``: a fitted RQ + OPQ
  quantiser (dim 8, levels 8-4-4, OPQ 2x16) with random codes (item codes
  ``[n_items, 5]``) for every item and recall query of the world.

  Returns:
    The artefact's content hash.
  """
  items, queries = _items_and_queries(world_dir)
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


# ---------------------------------------------------------------------------
# The tiny SFT run.


def tiny_sft_config(**kw) -> SFTConfig:
  """Tiny model, 3/3/4 steps, a checkpoint every step (the tests restore
  intermediate steps), one eval batch; ``kw`` overrides ``sft_config``'s
  arguments."""
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
    # Each phase warms up from lr 0, so phase 2's first step keeps phase 1's
    # final parameters (test_three_phases_chain...); the main job's
    # continuous schedule is tested in tests/train/optimizers_test.py.
    schedule="per_phase",
    # Fixed-width batches: one compiled step per phase (the bucketed path is
    # tested in tests/data/model_batches_test.py and tests/train/sft_test.py).
    length_buckets=(),
    # A 64-example shuffle window: filling the main job's 2,000-example one
    # preprocesses the tiny world's tasks dozens of times over, per iterator.
    shuffle_buffer=64,
  )
  args.update(kw)
  return configs.sft_config(**args)


@contextlib.contextmanager
def fast_compile() -> Iterator[None]:
  """XLA without most optimisations while inside: tiny models compile in a
  fraction of the time."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", old)


# ---------------------------------------------------------------------------
# The PARS tests' hand-built world.


def _hand_item(item_id: str, l1: str, l3: str) -> dict:
  return {
    "item_id": item_id,
    "item_title": f"title {item_id}",
    "category_level1_id": l1,
    "category_level3_id": l3,
  }


def _hand_session(sid, user, t, split, shown, clicked, bought, query="red dress"):
  return {
    "user_id": user,
    "session_id": sid,
    "query": query,
    "impressed_item_ids": shown,
    "clicked_item_ids": clicked,
    "purchased_item_ids": bought,
    "time_index": t,
    "split": split,
  }


def hand_world() -> World:
  """Items A, B (category X) and C (category Y); users u1, u2.

  s1 (u1, train): shown A B, clicked A, bought A
  s2 (u1, train): shown B C, clicked B
  s3 (u2, test):  shown A
  """
  items = [
    _hand_item("A", "L1x", "X"),
    _hand_item("B", "L1x", "X"),
    _hand_item("C", "L1y", "Y"),
  ]
  users = [
    {"user_id": "u1", "gender": "female", "age_bucket": "18-23"},
    {"user_id": "u2", "gender": "male", "age_bucket": "50+"},
  ]
  recall = [
    _hand_session("s1", "u1", 10, "train", ["A", "B"], ["A"], ["A"]),
    _hand_session("s2", "u1", 20, "train", ["B", "C"], ["B"], []),
    _hand_session("s3", "u2", 30, "test", ["A"], [], [], query="phone"),
  ]
  relevance = [{"query": "red dress", "item_id": "A", "score": 3}]
  return World(
    path="", users=users, items=items, recall=recall, ranking=[],
    relevance=relevance, report=SkipReport(), manifest=None,
  )  # fmt: skip


# hand_world's item codes, [3 items, 5]: L1, L2, L3 and two OPQ codes.
HAND_CODES = np.array([[0, 1, 0, 2, 3], [1, 0, 1, 0, 1], [3, 1, 1, 3, 0]], np.int32)


def hand_table() -> SIDTable:
  """hand_world's SID table: ``HAND_CODES``, levels 4-2-2, OPQ 2x4."""
  t = SIDTable.synthetic(["A", "B", "C"], ["phone", "red dress"], levels=(4, 2, 2),
                         opq_codes=4, n_opq=2)  # fmt: skip
  return SIDTable(
    item_ids=t.item_ids, item_codes=HAND_CODES, query_texts=t.query_texts,
    query_codes=t.query_codes, levels=t.levels, opq_codes=t.opq_codes,
    rq_centroids=t.rq_centroids,
  )  # fmt: skip


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compiled_programs() -> Iterator[collections.Counter]:
  """Yields a Counter of the names of the XLA programs compiled inside
  (a ``jax.monitoring`` duration listener on the backend-compile event)."""
  names: collections.Counter = collections.Counter()

  def listen(event, _secs, **kw):
    if event == _COMPILE_EVENT:
      names[kw.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


def load_script(name: str, path: str | pathlib.Path):
  """The module of a script outside the package (experiments/...), loaded
  once under ``name`` (cached in ``sys.modules``), for tests."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
  return sys.modules[name]
