"""Is the beam score miscalibrated per SID level? A validation-day probe.

Decodes a finished validation-day workdir's click sessions (beam 350, the
main job's trie beam search), scores every beam's five tokens with the
incremental decoder (their sum equals the beam score; checked), re-orders
the beams by sum_l alpha_l * log p(token_l | prefix) over a grid of level
weights and prints click HR@10 / MRR@10 per alpha (alpha = 1 everywhere is
the model's own order). docs/TRAINING.md has the result.

  python experiments/recipe/level_weights.py /tmp/val0 /tmp/val0_levels.json
"""

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from onesearch_jax import generator as generator_lib  # noqa: E402
from onesearch_jax.eval import evaluate, examples, generative  # noqa: E402
from onesearch_jax.eval.sid_items import SidItemIndex  # noqa: E402
from onesearch_jax.stages.workdir import Workdir  # noqa: E402
from onesearch_jax.train import sft_load  # noqa: E402


def main(argv: list[str]) -> None:
  wd = Workdir.of(pathlib.Path(argv[0]))
  out_path = argv[1]
  gen = generator_lib.load_generator(wd, beam_size=350)
  model = gen.model
  cfg = model.cfg
  art = wd.sid_artefact()
  eval_set = examples.build_eval_set(
    wd.root / "world", sid_items=art.item_ids, sid_queries=art.query_texts
  )
  offsets = np.asarray([r[0] for r in gen.model_config.sid_ranges], np.int32)
  ucodes = np.asarray(gen.unique_codes)
  graphdef, state = nnx.split(model)

  @jax.jit
  def level_lp(state, batch, tokens):
    m = nnx.merge(graphdef, state)
    enc_out, enc_mask = m.encode(batch)
    cross = m.cross_kv(enc_out)
    b, c, s = tokens.shape
    cache = m.init_cache(b * c, s)
    prev = jnp.zeros((b, c), jnp.int32)
    outs = []
    for t in range(s):
      vs = (
        tuple(cfg.sid_ranges[t])
        if cfg.restrict_sid_levels and t < len(cfg.sid_ranges)
        else None
      )
      logits, cache = m.beam_decode_step(prev, cache, cross, enc_mask, vocab_slice=vs)
      lp = jax.nn.log_softmax(logits, axis=-1)
      tgt = tokens[:, :, t] - (vs[0] if vs else 0)
      outs.append(jnp.take_along_axis(lp, tgt[..., None], axis=-1)[..., 0])
      prev = tokens[:, :, t]
    return jnp.stack(outs, -1)  # [B, C, S]

  sids, lps, sess = [], [], []
  t0 = time.time()
  for batch, metas in sft_load.eval_inputs(
    wd.train, "eval_click", batch_size=64, pad_last=True
  ):
    n = len(metas)
    res = gen.searcher(dict(batch))
    sid = np.asarray(res.sid_index)
    tok = ucodes[np.maximum(sid, 0)] + offsets[None, None]
    inputs = {
      k: jnp.asarray(batch[k])
      for k in ("encoder_input_tokens", "long_seq_features")
      if k in batch
    }
    lp = np.asarray(level_lp(state, inputs, jnp.asarray(tok, jnp.int32)))
    lp = np.where(sid[..., None] >= 0, lp, -np.inf)
    # check: the level sum equals the beam score
    ok = sid[:n] >= 0
    err = np.abs(lp[:n].sum(-1)[ok] - np.asarray(res.scores)[:n][ok]).max()
    sids.append(sid[:n])
    lps.append(lp[:n])
    sess += [m["session_id"] for m in metas]
  print(
    "decoded",
    len(sess),
    "in",
    round(time.time() - t0, 1),
    "s; max |sum lp - score|",
    float(err),
    flush=True,
  )
  sid = np.concatenate(sids)
  lp = np.concatenate(lps)
  index = SidItemIndex.from_artefact(art)
  grid = {}
  for a4 in (0.25, 0.5, 0.75, 1.0, 1.5):
    for a1 in (0.5, 1.0, 1.5, 2.0):
      for a3 in (0.5, 1.0, 1.5):
        grid[(a1, 1.0, a3, a4, a4)] = None
  rankings = {}
  for alpha in grid:
    key = np.nan_to_num((lp * np.asarray(alpha)).sum(-1), neginf=-1e30)
    key = np.where(sid >= 0, key, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    beams = generative.SetBeams(
      sid_index=np.take_along_axis(sid, order, 1),
      scores=np.take_along_axis(key, order, 1).astype(np.float32),
      session_ids=tuple(sess),
      seconds=0.0,
      reused=0,
    )
    rankings[str(alpha)] = generative.rank_eval_set(
      eval_set, {"click": beams}, index, 350
    )[0]
  res = evaluate.evaluate_rankings(eval_set, rankings, ks=(10,))
  rows = {}
  for name in rankings:
    c = res["systems"][name]["click"]["all"]
    rows[name] = (c["hr@10"], c["mrr@10"])
  json.dump(rows, open(out_path, "w"), indent=1)
  base = rows[str((1.0, 1.0, 1.0, 1.0, 1.0))]
  print("base", base)
  for name, v in sorted(rows.items(), key=lambda kv: -kv[1][1])[:12]:
    print(
      name,
      round(v[0], 4),
      round(v[1], 4),
      round(v[0] - base[0], 4),
      round(v[1] - base[1], 4),
    )


if __name__ == "__main__":
  main(sys.argv[1:])
