"""Batch inference: requests (user, query) -> ranked items, from a workdir.

``run.py --mode=infer --requests=FILE --output=FILE`` calls `infer`. The
requests file is JSONL (``{"user_id", "query", "time_index"?, "request_id"?}``
per line) or TSV with a header (``data.session_prompts.read_requests``).
Each request gets the stage-3 prompt an eval example at that time would
have (unknown users get Mu-Seq's cold-start default), is decoded by the
trie-constrained beam search of the trained model, and its beams are mapped
to items through the SID -> items multimap (collisions in popularity order).

Output: JSONL, one line per request in input order:
``{"request_id", "user_id", "query", "items": [item ids, best first],
"sids": [SID strings per beam], "scores": [beam log-probs]}``.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable

import numpy as np

from onesearch_jax import decoding
from onesearch_jax.data import model_batches, session_prompts
from onesearch_jax.data.sid_table import SIDTable, sid_string
from onesearch_jax.eval.sid_items import SidItemIndex
from onesearch_jax.khqe import artefact
from onesearch_jax.train import sft


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
  workdir = pathlib.Path(workdir)
  train_dir = workdir / "train"
  requests = session_prompts.read_requests(requests_path)
  model, vocabulary, model_cfg = sft.load_trained(train_dir)
  spec = model_batches.read_spec(train_dir)
  art = artefact.load(workdir / "sids")
  table = SIDTable.from_artefact(workdir / "sids")
  prompter = session_prompts.SessionPrompter(
    world_dir,
    table,
    vocabulary,
    sft.read_config(train_dir).museq,
    inputs_length=spec.eval_inputs_length,
  )
  offsets = tuple(r[0] for r in model_cfg.sid_ranges)
  sizes = tuple(r[1] - r[0] for r in model_cfg.sid_ranges)
  codes = np.asarray(art.item_codes)
  trie = decoding.build_trie(
    codes,
    sizes,
    offsets,
    dense_levels=decoding.choose_dense_levels(sizes, num_items=len(codes)),
  )
  searcher = decoding.make_beam_search(model, trie, beam_size=beam_size)
  index = SidItemIndex.from_artefact(art)
  unique = decoding.unique_sids(codes)
  out = pathlib.Path(output_path)
  out.parent.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with out.open("w", encoding="utf-8") as f:
    for lo in range(0, len(requests), batch_size):
      chunk = requests[lo : lo + batch_size]
      batch = prompter.for_requests(chunk)
      n = len(chunk)
      if n < batch_size:  # one compiled shape: pad with copies of row 0
        batch = {
          k: np.concatenate([v, np.repeat(v[:1], batch_size - n, axis=0)])
          for k, v in batch.items()
        }
      res = searcher(batch)
      sid = np.asarray(res.sid_index)[:n]
      scores = np.asarray(res.scores)[:n]
      items = index.expand(sid, top_k)
      for i, req in enumerate(chunk):
        valid = sid[i] >= 0
        row = {
          "request_id": req.request_id,
          "user_id": req.user_id,
          "query": req.query,
          "items": [index.item_ids[j] for j in items[i] if j >= 0],
          "sids": [sid_string(unique[s], table.opq_codes) for s in sid[i][valid]],
          "scores": [round(float(x), 4) for x in scores[i][valid]],
        }
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
      log(f"[infer] {lo + n}/{len(requests)} requests ({time.time() - start:.1f} s)")
  log(f"[infer] wrote {len(requests)} results to {out}")
  return len(requests)
