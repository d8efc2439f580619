"""End-to-end tests of khqe/build.py (build_sids) on the tiny and zh worlds."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from onesearch_jax import testing
from onesearch_jax.khqe import (
  artefact,
  build,
  embeddings_io,
  encoder,
  quantizer,
  sid_metrics,
  text_embedder,
)
from onesearch_jax.world import reader

FAST = testing.tiny_sid_build_config()  # the session's tiny_sid_build config


@pytest.fixture(scope="module")
def tiny_build(tiny_sid_build):
  """The session's tiny-world build (tests/conftest.py, shared with
  tests/eval), which is this module's FAST config."""
  summary, out, lines, cfg = tiny_sid_build
  assert cfg == FAST
  return summary, out, lines


@pytest.mark.slow
def test_build_sids_tiny_world_artefact(tiny_build, tiny_world_dir):
  summary, out, lines = tiny_build
  world = reader.load_world(tiny_world_dir)
  art = artefact.load(out, expected_hash=summary.content_hash)
  # Every item exactly once in the SID -> items multimap.
  listed = [i for ids in art.sid_to_items().values() for i in ids]
  assert sorted(listed) == sorted(r["item_id"] for r in world.items)
  assert len(listed) == len(set(listed))
  assert list(art.item_ids) == [r["item_id"] for r in world.items]
  assert art.item_codes.shape == (len(world.items), 5)
  # Every distinct query of recall + ranking got a SID.
  queries = {r["query"] for r in world.recall} | {r["query"] for r in world.ranking}
  assert set(art.query_texts) == queries and len(art.query_texts) == len(queries)
  assert summary.n_queries == len(queries) and summary.n_items == len(world.items)
  # Local code ranges of the final (+opq) variant.
  k1, k2, k3 = FAST.quantizer.levels
  for col, k in enumerate((k1, k2, k3, 64, 64)):
    assert 0 <= art.item_codes[:, col].min() and art.item_codes[:, col].max() < k
  # The report holds all four variants; the metrics are the final codes'.
  assert list(summary.metrics) == list(build.VARIANTS)
  for name in build.VARIANTS:
    assert f"| {name} |" in art.report
  icr = np.mean(np.unique(art.item_codes, axis=0, return_counts=True)[1] == 1)
  n_sid, counts = np.unique(art.item_codes, axis=0, return_counts=True)
  assert summary.metrics["+opq"]["ICR"] == pytest.approx(
    np.sum(counts == 1) / len(world.items)
  )
  assert summary.metrics["+opq"]["n_sids"] == len(n_sid) == len(art.sid_to_items())
  assert summary.metrics["+opq"]["ICR"] > summary.metrics["rq_plain"]["ICR"]
  assert icr > 0.8
  # Keywords come from the simulator's attributes and match most texts.
  assert summary.keyword_source == "attributes" and summary.n_keywords > 0
  assert summary.match_rates["items"]["match_rate"] > 0.9
  # Progress lines name every step with a timing.
  text = "\n".join(lines)
  for step in ("read", "embed", "keywords", "quantise[+opq]", "artefact"):
    assert f"] {step}:" in text
  assert set(summary.timings) >= {"read", "embed", "keywords", "artefact"}
  # New texts embedded by the saved encoder + dictionary get the same SIDs.
  embedder = text_embedder.load_text_embedder(out)
  q_codes = art.quantizer.encode(embedder.queries(list(art.query_texts)))
  assert np.mean(np.all(q_codes == art.query_codes, axis=1)) > 0.98
  i_codes = art.quantizer.encode(embedder.items(world.items))
  assert np.mean(np.all(i_codes == art.item_codes, axis=1)) > 0.98
  config = json.loads((out / "config.json").read_text())
  assert config["metadata"]["keywords"]["source"] == "attributes"
  assert config["quantizer"]["l3_mode"] == "parent_ab"


@pytest.mark.slow
def test_build_sids_precomputed_embeddings(tiny_world_dir, tmp_path):
  world = reader.load_world(tiny_world_dir)
  items = [r["item_id"] for r in world.items]
  queries = build._distinct_queries(world)
  rng = np.random.default_rng(0)
  d = 16
  embeddings_io.save_embeddings(
    tmp_path / "i.npy",
    tmp_path / "i.txt",
    items[::-1],
    rng.normal(size=(len(items), d)),
  )
  embeddings_io.save_embeddings(
    tmp_path / "q.npy", tmp_path / "q.txt", queries, rng.normal(size=(len(queries), d))
  )
  pre = build.PrecomputedEmbeddings(
    str(tmp_path / "i.npy"),
    str(tmp_path / "i.txt"),
    str(tmp_path / "q.npy"),
    str(tmp_path / "q.txt"),
  )
  cfg = build.BuildConfig(
    precomputed=pre, variants=("+opq",), quantizer=FAST.quantizer, save_embeddings=True
  )
  summary = build.build_sids(tiny_world_dir, tmp_path / "out", cfg)
  assert list(summary.metrics) == ["+opq"] and summary.encoder_history == []
  with pytest.raises(FileNotFoundError, match="built from precomputed"):
    text_embedder.load_text_embedder(tmp_path / "out")
  art = artefact.load(tmp_path / "out", summary.content_hash)
  assert sorted(i for v in art.sid_to_items().values() for i in v) == sorted(items)
  # The raw item embeddings were re-ordered to the world's item order.
  ids, raw = embeddings_io.load_embeddings(
    tmp_path / "out/embeddings/items_raw.npy", tmp_path / "out/embeddings/items_raw.txt"
  )
  _, given = embeddings_io.load_embeddings(tmp_path / "i.npy", tmp_path / "i.txt")
  assert ids == items
  np.testing.assert_allclose(raw, given[::-1])
  # A missing item is a clear error naming the id file.
  embeddings_io.save_embeddings(
    tmp_path / "i.npy",
    tmp_path / "i.txt",
    items[1:],
    rng.normal(size=(len(items) - 1, d)),
  )
  with pytest.raises(
    embeddings_io.EmbeddingsError, match=r"i.txt: 1 ids have no embedding"
  ):
    build.build_sids(tiny_world_dir, tmp_path / "out2", cfg)


ZH_CFG = build.BuildConfig(
  vocab=FAST.vocab,
  encoder=FAST.encoder,
  train=encoder.EncoderTrainConfig(steps=10, batch_size=16),
  quantizer=quantizer.QuantizerConfig(
    levels=(4, 2, 2), opq_codes=4, n_iter=5, opq_iter=5
  ),
  keywords=build.keywords_lib.KeywordConfig(min_pv=1),
  variants=("+opq",),  # one quantiser fit keeps this test fast
  save_embeddings=True,
  keyword_tag_weights=(),  # the plain mean; the weighted test sets its own
)


@pytest.fixture(scope="module")
def zh_build(zh_world_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("zh") / "sids"
  return build.build_sids(zh_world_dir, out, ZH_CFG), out


def test_build_sids_chinese_world(zh_build):
  summary, out = zh_build
  art = artefact.load(out, summary.content_hash)
  assert len(art.item_ids) == 10
  assert sum(len(v) for v in art.sid_to_items().values()) == 10
  assert "红色连衣裙" in art.query_texts
  assert summary.match_rates["queries"]["match_rate"] > 0.5
  # build_sids appends its keyword and encoder notes to the report; the wall
  # times go to the unhashed manifest info (they differ from run to run).
  assert set(art.info["timings_s"]) >= {"read", "embed", "keywords"}
  rates = summary.match_rates["items"]
  assert "## Keyword enhancement" in art.report and "## Aligned encoder" in art.report
  assert f"| items | 10 | {rates['match_rate']:.2%} |" in art.report


def test_build_hash_covers_tokenizer_and_survives_relocation(zh_build, zh_world_dir):
  summary, out = zh_build
  h = summary.content_hash
  files = json.loads((out / "manifest.json").read_text())["files"]
  for name in (
    "keywords.tsv",
    "text_encoder/spm.model",
    "text_encoder/params.npz",
    "text_encoder/encoder_config.json",
    "text_encoder/embedder.json",
    "embeddings/items_fused.npy",
    "embeddings/queries_raw.txt",
  ):
    assert name in files, name
  # No absolute path is hashed; the world is pinned by its content hash.
  config = json.loads((out / "config.json").read_text())
  assert str(zh_world_dir) not in json.dumps(config)
  world = reader.load_world(zh_world_dir)
  assert config["metadata"]["world_content_hash"] == build.world_hash(
    zh_world_dir, world
  )
  # A copy elsewhere keeps its hash, loads, and embeds texts the same way.
  moved = out.parent / "other" / "place" / "sids"
  shutil.copytree(out, moved)
  art = artefact.load(moved, expected_hash=h)
  texts = list(art.query_texts)
  np.testing.assert_array_equal(
    art.quantizer.encode(text_embedder.load_text_embedder(moved, h).queries(texts)),
    art.quantizer.encode(text_embedder.load_text_embedder(out, h).queries(texts)),
  )
  assert art.info["world_dir"] == os.path.relpath(zh_world_dir, out)
  # Editing a tokenizer file is refused by both readers.
  kw = moved / "keywords.tsv"
  kw.write_text(kw.read_text(encoding="utf-8") + "x\tbrand\t1\t0\n", encoding="utf-8")
  with pytest.raises(artefact.ArtefactError, match="keywords.tsv.*file modified"):
    text_embedder.load_text_embedder(moved)
  with pytest.raises(artefact.ArtefactError, match="keywords.tsv.*file modified"):
    artefact.load(moved, expected_hash=h)
  shutil.rmtree(moved.parent.parent)


@pytest.mark.slow
def test_same_build_gives_same_hash(zh_build, zh_world_dir, tmp_path):
  summary, _ = zh_build
  again = build.build_sids(zh_world_dir, tmp_path, ZH_CFG)
  assert again.content_hash == summary.content_hash


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match="unknown variants"):
    build.BuildConfig(variants=("rq_plain", "+magic"))


def test_bad_final_variant_and_quantizer_overrides_are_rejected():
  with pytest.raises(ValueError, match="final_variant '\\+magic'"):
    build.BuildConfig(final_variant="+magic")
  with pytest.raises(ValueError, match=r"unknown QuantizerConfig fields \['depth'\]"):
    build.BuildConfig(quantizer_overrides={"depth": 4})


@pytest.mark.slow
def test_final_variant_and_opq_depth_set_the_artefact_sids(tiny_world_dir, tmp_path):
  """The tokenizer / OPQ-depth ablations: the artefact holds the chosen
  variant's codes (3 RQ codes without OPQ, 3 + s with s OPQ codes), and its
  reported ICR is that of those codes."""
  world = reader.load_world(tiny_world_dir)
  items = [r["item_id"] for r in world.items]
  queries = build._distinct_queries(world)
  rng = np.random.default_rng(1)
  d = 16
  for name, ids in (("i", items), ("q", queries)):
    embeddings_io.save_embeddings(
      tmp_path / f"{name}.npy",
      tmp_path / f"{name}.txt",
      ids,
      rng.normal(size=(len(ids), d)),
    )
  pre = build.PrecomputedEmbeddings(
    *(str(tmp_path / f) for f in ("i.npy", "i.txt", "q.npy", "q.txt"))
  )
  scaled = {"levels": (32, 8, 8), "opq_codes": 64, "n_iter": 5, "opq_iter": 5}
  for final, opq, width in (("rq_plain", 2, 3), ("+opq", 4, 7)):
    cfg = build.BuildConfig(
      precomputed=pre,
      variants=(final,),
      final_variant=final,
      quantizer_overrides={**scaled, "opq_subspaces": opq},
    )
    out = tmp_path / f"out_{final}_{opq}"
    summary = build.build_sids(tiny_world_dir, out, cfg)
    art = artefact.load(out, summary.content_hash)
    assert art.item_codes.shape == (len(items), width), (final, opq)
    assert art.metadata["variant"] == final
    assert list(summary.metrics) == [final]
    want = sid_metrics.cur_icr(art.item_codes, (32, 8, 8))["ICR"]
    assert summary.metrics[final]["ICR"] == pytest.approx(want)
    sids = art.item_sids()
    assert all(s.count("<") == width for s in sids)
    if width > 3:
      # The j-th OPQ code is offset by j * opq_codes in the shared d_ range.
      last = int(sids[0].rsplit("<d_", 1)[1][:-1])
      assert (width - 4) * 64 <= last < (width - 3) * 64


def test_keyword_tag_weights_build_records_and_replays_them(
  zh_build, zh_world_dir, tmp_path
):
  """A build with fusion weights: its fused embeddings differ from the plain
  build's where a weighted keyword meets another, the artefact and the
  saved encoder settings record the weights, and the text embedder
  reproduces the build's fused query and item embeddings exactly."""
  plain_summary, plain_out = zh_build
  entries, _ = build.keywords_lib.load_dictionary(
    plain_out / text_embedder.KEYWORDS_FILE
  )
  tag = max({k.tag for k in entries}, key=[k.tag for k in entries].count)
  cfg = dataclasses.replace(ZH_CFG, keyword_tag_weights=((tag, 5.0),))
  out = tmp_path / "sids"
  summary = build.build_sids(zh_world_dir, out, cfg)
  art = artefact.load(out, summary.content_hash)
  assert art.metadata["keywords"]["tag_weights"] == [[tag, 5.0]]
  assert "tag_weights" not in artefact.load(plain_out).metadata["keywords"]
  settings = json.loads((out / "text_encoder" / "embedder.json").read_text())
  assert settings["keyword_tag_weights"] == [[tag, 5.0]]

  def fused(root, name):
    d = root / build.EMBEDDINGS_DIR
    return embeddings_io.load_embeddings(d / f"{name}.npy", d / f"{name}.txt")

  q_ids, q_fused = fused(out, "queries_fused")
  assert not np.array_equal(q_fused, fused(plain_out, "queries_fused")[1])
  embedder = text_embedder.load_text_embedder(out, summary.content_hash)
  assert embedder.keyword_weights is not None
  np.testing.assert_array_equal(embedder.queries(list(q_ids)), q_fused)
  i_ids, i_fused = fused(out, "items_fused")
  rows = {r["item_id"]: r for r in reader.load_world(zh_world_dir).items}
  np.testing.assert_array_equal(embedder.items([rows[i] for i in i_ids]), i_fused)
  with pytest.raises(ValueError, match="need > 0"):
    build.BuildConfig(keyword_tag_weights=((tag, -1.0),))
