"""Interactive / batch search over a trained workdir: requests -> SIDs -> items.

``Searcher`` bundles what serving one request needs, built once from a
workdir (``sids/`` + a finished ``train/``) and the world it was trained on:

* the workdir's generator (``generator.load_generator``: the trained model,
  its vocabulary, the catalogue trie and the jitted constrained beam search,
  compiled once for ``[batch_size, L]``; short batches are padded with
  copies of row 0);
* the phase-3 prompts of requests (``Generator.prompter``: an eval example
  at the request time; unknown users get Mu-Seq's cold start);
* the SID -> items multimap (``eval.sid_items.SidItemIndex``: collisions in
  popularity order) and the item rows of the world (titles).

``infer.infer`` (``run.py --mode=infer``) and the Colab quickstart
(experiments/colab) both rank through it::

  s = Searcher("workdir", "workdir/world", beam_size=50)
  hit = s.search("wireless earbuds", user_id="u0001", k=10)
  hit.items, hit.item_scores, hit.item_sids, s.title(hit.items[0])
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from onesearch_jax import generator as generator_lib
from onesearch_jax.data import session_prompts, world_source
from onesearch_jax.data.sid_table import sid_string
from onesearch_jax.eval.sid_items import SidItemIndex
from onesearch_jax.stages.workdir import Workdir

# The user id of a request without one: a user the world must not contain.
COLD_START_USER = "__cold_start__"


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """One request's ranking.

  Beam level (W' = valid beams, best first; an invalid beam is dropped):
    sids: W' SID strings (``<a_i><b_j>...``).
    scores: W' beam log-probs, non-increasing.

  Item level (K <= top_k items, best first; the beams' items in beam order,
  a SID's items in popularity order, each item once):
    items: K item ids.
    item_sids: K SID strings (the beam each item came from).
    item_scores: K log-probs of that beam (non-increasing).
  """

  request: session_prompts.Request
  sids: list[str]
  scores: list[float]
  items: list[str]
  item_sids: list[str]
  item_scores: list[float]


class Searcher:
  """Ranks items for (user, query) requests with a trained workdir.

  Args:
    workdir: holds ``sids/`` (the SID artefact) and ``train/`` (a finished
      ``run_sft`` output).
    world_dir: the world the model was trained on (histories, item titles).
    beam_size: beams per request (W).
    batch_size: requests per beam-search call (one compiled shape).
    phase: which SFT phase's parameters (default the last).

  Attributes:
    generator: the workdir's ``generator.Generator``; ``model``,
      ``vocabulary``, ``model_config``, ``table`` (the SID table), ``trie``
      are its.
    prompter: the SessionPrompter of requests.
    index: SID -> items.
    items: item id -> the world's item row.
    unique_codes: [U, L] the SIDs in ``sid_index`` order.
  """

  def __init__(
    self,
    workdir: str | pathlib.Path,
    world_dir: str | pathlib.Path,
    *,
    beam_size: int = 50,
    batch_size: int = 32,
    phase: str = "phase3",
  ):
    if beam_size < 1 or batch_size < 1:
      raise ValueError(
        f"Searcher: beam_size and batch_size must be >= 1 ({beam_size}, {batch_size})"
      )
    self.beam_size = int(beam_size)
    self.batch_size = int(batch_size)
    self.generator = generator_lib.load_generator(
      workdir, beam_size=self.beam_size, phase=phase, batch_size=self.batch_size
    )
    self.model = self.generator.model
    self.vocabulary = self.generator.vocabulary
    self.model_config = self.generator.model_config
    self.table = self.generator.table
    self.trie = self.generator.trie
    self.unique_codes = self.generator.unique_codes
    world = world_source.read_world(world_dir)
    self.items: dict[str, dict[str, Any]] = {r["item_id"]: r for r in world.items}
    self.users = frozenset(r["user_id"] for r in world.users)
    if COLD_START_USER in self.users:
      raise ValueError(
        f"{world_dir}: the world has a user {COLD_START_USER!r}, the id reserved "
        "for cold-start requests"
      )
    self.prompter = self.generator.prompter(world)
    self.index = SidItemIndex.from_artefact(Workdir.of(workdir).sid_artefact())
    missing = [i for i in self.index.item_ids if i not in self.items]
    if missing:
      raise ValueError(
        f"{world_dir}: {len(missing)} items of the SID artefact are not in "
        f"items.jsonl (first {missing[0]!r}): wrong world for this workdir?"
      )

  def sid_of(self, sid_row: int) -> str:
    """The SID string of a row of ``unique_codes``."""
    return sid_string(self.unique_codes[sid_row], self.table.opq_codes)

  def title(self, item_id: str) -> str:
    """The item's title in the world."""
    return str(self.items[item_id]["item_title"])

  def search_batch(
    self, requests: Sequence[session_prompts.Request], top_k: int = 10
  ) -> list[SearchResult]:
    """Ranks every request (in chunks of ``batch_size``).

    Args:
      requests: the requests.
      top_k: items kept per request.

    Returns:
      One SearchResult per request, in order.
    """
    if top_k < 1:
      raise ValueError(f"search_batch: top_k must be >= 1: {top_k}")
    out: list[SearchResult] = []
    for lo in range(0, len(requests), self.batch_size):
      chunk = list(requests[lo : lo + self.batch_size])
      out.extend(self._search_chunk(chunk, top_k))
    return out

  def _search_chunk(
    self, chunk: list[session_prompts.Request], top_k: int
  ) -> list[SearchResult]:
    res = self.generator(self.prompter.for_requests(chunk))
    sid = np.asarray(res.sid_index)
    scores = np.asarray(res.scores)
    rows = self.index.expand(sid, top_k)
    results = []
    for i, req in enumerate(chunk):
      valid = sid[i] >= 0
      # An item's beam: the first beam that emitted its SID (expand's order).
      first_beam: dict[int, int] = {}
      for b in np.flatnonzero(valid):
        first_beam.setdefault(int(sid[i, b]), int(b))
      item_rows = [int(j) for j in rows[i] if j >= 0]
      beams = [first_beam[int(self.index.sid_of_item[j])] for j in item_rows]
      results.append(
        SearchResult(
          request=req,
          sids=[self.sid_of(s) for s in sid[i][valid]],
          scores=[float(x) for x in scores[i][valid]],
          items=[self.index.item_ids[j] for j in item_rows],
          item_sids=[self.sid_of(sid[i, b]) for b in beams],
          item_scores=[float(scores[i, b]) for b in beams],
        )
      )
    return results

  def search(
    self,
    query: str,
    user_id: str | None = None,
    k: int = 10,
    time_index: int | None = None,
  ) -> SearchResult:
    """Ranks items for one query.

    Args:
      query: the query text.
      user_id: the user; None = a cold-start user (no history).
      k: items returned.
      time_index: the request time (None: after the whole log).
    """
    req = session_prompts.Request(
      user_id=COLD_START_USER if user_id is None else user_id,
      query=query,
      time_index=time_index,
    )
    return self.search_batch([req], top_k=k)[0]

  def table_rows(self, result: SearchResult) -> list[dict[str, Any]]:
    """One display row per item: rank, item id, title, SID, score."""
    return [
      {
        "rank": r + 1,
        "item_id": item,
        "title": self.title(item),
        "sid": s,
        "score": round(score, 4),
      }
      for r, (item, s, score) in enumerate(
        zip(result.items, result.item_sids, result.item_scores, strict=True)
      )
    ]

  def format(self, result: SearchResult) -> str:
    """A plain-text table of ``table_rows`` (for notebooks and logs)."""
    req = result.request
    who = "cold-start user" if req.user_id == COLD_START_USER else req.user_id
    known = "" if req.user_id == COLD_START_USER or req.user_id in self.users else "*"
    lines = [f"query {req.query!r}, {who}{known}: {len(result.items)} items"]
    for row in self.table_rows(result):
      lines.append(
        f"{row['rank']:>3}  {row['score']:>9.4f}  {row['sid']}  "
        f"{row['item_id']}  {row['title']}"
      )
    if known:
      lines.append("* not a user of the world: served as a cold start")
    return "\n".join(lines)
