"""Batch inference: requests (user, query) -> ranked items, from a workdir.

``run.py --mode=infer --requests=FILE --output=FILE`` calls `infer`. The
requests file is JSONL (``{"user_id", "query", "time_index"?, "request_id"?}``
per line) or TSV with a header (``data.session_prompts.read_requests``).
Each request gets the phase-3 prompt an eval example at that time would
have (unknown users get Mu-Seq's cold-start default), is decoded by the
trie-constrained beam search of the trained model, and its beams are mapped
to items through the SID -> items multimap (collisions in popularity order);
the steps are ``search.Searcher``'s (shared with the Colab quickstart).

Output: JSONL, one line per request in input order:
``{"request_id", "user_id", "query", "items": [item ids, best first],
"sids": [SID strings per beam], "scores": [beam log-probs]}``.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable

from onesearch_jax import search
from onesearch_jax.data import session_prompts


def infer(
  workdir: str | pathlib.Path,
  world_dir: str | pathlib.Path,
  requests_path: str | pathlib.Path,
  output_path: str | pathlib.Path,
  *,
  beam_size: int = 50,
  top_k: int = 20,
  batch_size: int = 32,
  log: Callable[[str], None] = print,
) -> int:
  """Ranks items for every request of a file; returns the number written.

  Args:
    workdir: a workdir with sids/ and a finished train/ stage.
    world_dir: the world the model was trained on (user histories).
    requests_path: JSONL or TSV requests.
    output_path: where the JSONL results go.
    beam_size: beams per request.
    top_k: items kept per request.
    batch_size: requests per beam-search call.
    log: progress printer.
  """
  requests = session_prompts.read_requests(requests_path)
  searcher = search.Searcher(
    workdir, world_dir, beam_size=beam_size, batch_size=batch_size
  )
  out = pathlib.Path(output_path)
  out.parent.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with out.open("w", encoding="utf-8") as f:
    for lo in range(0, len(requests), batch_size):
      chunk = requests[lo : lo + batch_size]
      for req, res in zip(chunk, searcher.search_batch(chunk, top_k), strict=True):
        row = {
          "request_id": req.request_id,
          "user_id": req.user_id,
          "query": req.query,
          "items": res.items,
          "sids": res.sids,
          "scores": [round(x, 4) for x in res.scores],
        }
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
      n = len(chunk)
      log(f"[infer] {lo + n}/{len(requests)} requests ({time.time() - start:.1f} s)")
  log(f"[infer] wrote {len(requests)} results to {out}")
  return len(requests)
