"""The simulated e-commerce search world, written in the KuaiSearch schema.

`write_world(config, out_dir)` draws a catalogue, a population and a log of
search sessions from `config.seed` and streams them to
``<out_dir>/{users,items,recall,ranking,relevance}.jsonl`` plus extras and
``manifest.json``. The same config writes byte-identical files.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from onesearch_jax.world import catalog as catalog_lib
from onesearch_jax.world import config as config_lib
from onesearch_jax.world import manifest as manifest_lib
from onesearch_jax.world import population as population_lib
from onesearch_jax.world import relevance as relevance_lib
from onesearch_jax.world import sessions as sessions_lib
from onesearch_jax.world import writer as writer_lib
from onesearch_jax.world.config import WorldConfig

EXTRAS = {
  "extras/item_latent.npy": "float32 [n_items, latent_dim] item latents (text-consistent)",
  "extras/item_latent_ids.txt": "item_id per row of item_latent.npy",
  "extras/query_intents.jsonl": "per distinct query: type, categories, attributes, count",
}


def _validation_split(write: Callable[[dict], None], n_days: int):
  """Wraps a row writer for ``eval_day="validation"``: rows of the last day
  (the test day) are dropped, rows of the day before are relabelled "test".

  The simulation itself is unchanged (it runs day by day), so every earlier
  row is identical to the ``eval_day="test"`` world's.
  """
  val_day = n_days - 2

  def wrapped(row: dict) -> None:
    if row["split"] == "test":
      return
    if int(row["time_index"]) // sessions_lib.SECONDS_PER_DAY == val_day:
      row = {**row, "split": "test"}
    write(row)

  return wrapped


def _timed(log: Callable[[str], None] | None, t0: float) -> Callable[[str], None]:
  """``log`` with the seconds since t0 in front of each line (None: silent)."""

  def timed(msg: str) -> None:
    if log is not None:
      log(f"[world {time.perf_counter() - t0:6.1f}s] {msg}")

  return timed


def write_world(
  config: WorldConfig,
  out_dir: str | os.PathLike,
  *,
  log: Callable[[str], None] | None = None,
) -> dict:
  """Generates a world and writes it to out_dir.

  Args:
    config: what to generate (sizes, behaviour, seed).
    out_dir: the directory to write (created; existing files are replaced).
    log: optional progress printer.

  Returns:
    The manifest dict (also written to <out_dir>/manifest.json).
  """
  out = pathlib.Path(out_dir)
  (out / "extras").mkdir(parents=True, exist_ok=True)
  log = _timed(log, time.perf_counter())

  rng_catalog, rng_latent, rng_users, rng_sessions, rng_relevance = (
    np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(5)
  )
  files: dict[str, str] = {}
  counts: dict[str, int] = {}

  catalog = catalog_lib.build_catalog(config, rng_catalog)
  with writer_lib.JsonlWriter(out / "items.jsonl") as w:
    for start in range(0, catalog.n_items, config.chunk_items):
      for row in catalog.rows(start, min(start + config.chunk_items, catalog.n_items)):
        w.write(row)
      log(f"items {min(start + config.chunk_items, catalog.n_items)}/{catalog.n_items}")
  files["items.jsonl"], counts["items"] = w.sha256, w.rows

  catalog_lib.write_latents(catalog, out / "extras/item_latent.npy", rng_latent)
  with open(out / "extras/item_latent_ids.txt", "w", encoding="utf-8") as f:
    for start in range(0, catalog.n_items, config.chunk_items):
      stop = min(start + config.chunk_items, catalog.n_items)
      f.write("".join(catalog.item_id(i) + "\n" for i in range(start, stop)))
  for name in ("extras/item_latent.npy", "extras/item_latent_ids.txt"):
    files[name] = manifest_lib.file_sha256(out / name)
  log("item latents written")

  pop = population_lib.build_population(config, catalog, rng_users)
  with writer_lib.JsonlWriter(out / "users.jsonl") as w:
    for u in range(pop.n_users):
      w.write(pop.row(u))
  files["users.jsonl"], counts["users"] = w.sha256, w.rows

  with (
    writer_lib.JsonlWriter(out / "recall.jsonl") as w_recall,
    writer_lib.JsonlWriter(out / "ranking.jsonl") as w_ranking,
  ):
    write_recall, write_ranking = w_recall.write, w_ranking.write
    if config.eval_day == "validation":
      write_recall = _validation_split(write_recall, config.n_days)
      write_ranking = _validation_split(write_ranking, config.n_days)
    query_log = sessions_lib.simulate(
      config, catalog, pop, rng_sessions, write_recall, write_ranking, log
    )
  files["recall.jsonl"], counts["recall"] = w_recall.sha256, w_recall.rows
  files["ranking.jsonl"], counts["ranking"] = w_ranking.sha256, w_ranking.rows

  with writer_lib.JsonlWriter(out / "extras/query_intents.jsonl") as w:
    for q, entry in query_log.items():
      w.write({"query": q, "count": entry.count, **entry.intent.to_json(catalog)})
  files["extras/query_intents.jsonl"] = w.sha256

  index = catalog_lib.CategoryIndex(catalog)
  with writer_lib.JsonlWriter(out / "relevance.jsonl") as w:
    for row in relevance_lib.relevance_rows(
      catalog, index, query_log, config.relevance_pairs, rng_relevance
    ):
      w.write(row)
  files["relevance.jsonl"], counts["relevance"] = w.sha256, w.rows
  log("relevance written")

  manifest = manifest_lib.write_manifest(
    out,
    source="simulator",
    config=config_lib.config_dict(config),
    counts={t: counts[t] for t in ("users", "items", "recall", "ranking", "relevance")},
    files=files,
    extra=_manifest_extra(config),
  )
  log(f"done: {counts}")
  return manifest


def _manifest_extra(config: WorldConfig) -> dict[str, Any]:
  return {
    "extras": dict(EXTRAS),
    "ranking_negative_rate": config.ranking_negative_rate,
    "test_split": "last day (time_index >= (n_days - 1) * 86400)",
  }
