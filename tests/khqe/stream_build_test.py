"""The streamed build_sids (khqe/stream_build.py, ``BuildConfig.stream``)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from onesearch_jax import configs, testing
from onesearch_jax.data import tasks
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.khqe import (
  artefact,
  build,
  encoder,
  quantizer,
  stream_build,
  stream_items,
  text_embedder,
)
from onesearch_jax.stages import sids as sids_stage
from onesearch_jax.world import jsonl, reader, validation

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The zh world's build (tests/khqe/build_test.py ZH_CFG), final variant only.
ZH_CFG = build.BuildConfig(
  vocab=testing.tiny_sid_build_config().vocab,
  encoder=testing.tiny_sid_build_config().encoder,
  train=encoder.EncoderTrainConfig(steps=10, batch_size=16),
  quantizer=quantizer.QuantizerConfig(
    levels=(4, 2, 2), opq_codes=4, n_iter=5, opq_iter=5
  ),
  keywords=build.keywords_lib.KeywordConfig(min_pv=1),
  variants=("+opq",),
)
# Samples smaller than the zh world (10 items, 8 sessions, ~10 queries),
# blocks of 3 rows: every sampled and block-wise path runs.
SMALL = build.StreamSample(
  sessions=4, items=3, queries=4, points_per_centroid=2, block_rows=3
)


def _table(path: pathlib.Path) -> list[dict]:
  return jsonl.read_jsonl(path, skip_blank=False)


def _train_popularity(world_dir) -> Counter:
  """Item id -> train impressions + clicks + purchases (the tie policy's)."""
  pop: Counter = Counter()
  for s in reader.load_world(world_dir).recall:
    if s["split"] == "train":
      for f in ("impressed_item_ids", "clicked_item_ids", "purchased_item_ids"):
        pop.update(s[f])
  return pop


@pytest.fixture(scope="module")
def zh_sampled(zh_world_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("zh_stream") / "sids"
  cfg = dataclasses.replace(ZH_CFG, stream=True, stream_sample=SMALL)
  lines: list[str] = []
  summary = stream_build.build_sids_streamed(zh_world_dir, out, cfg, log=lines.append)
  return summary, out, lines


def test_sampled_streamed_artefact_is_valid_and_self_consistent(
  zh_sampled, zh_world_dir
):
  summary, out, lines = zh_sampled
  art = artefact.load(out, summary.content_hash)
  world = reader.load_world(zh_world_dir)
  assert art.item_ids == tuple(r["item_id"] for r in world.items)
  queries = list(dict.fromkeys(r["query"] for r in world.recall + world.ranking))
  assert art.query_texts == tuple(q for q in queries if q.strip())
  # Popularity counted over the whole log, not the 4 sampled sessions.
  pop = _train_popularity(zh_world_dir)
  assert art.item_popularity.tolist() == [pop[i] for i in art.item_ids]
  # The saved encoder + keywords + quantiser reproduce every stored code.
  embedder = text_embedder.load_text_embedder(out, summary.content_hash)
  np.testing.assert_array_equal(
    art.quantizer.encode(embedder.items(world.items)), art.item_codes
  )
  np.testing.assert_array_equal(
    art.quantizer.encode(embedder.queries(list(art.query_texts))), art.query_codes
  )
  # sid_to_items.jsonl (written from a lexsort, in blocks of 3) is the
  # in-memory multimap of the stored codes and popularity.
  rows = _table(out / "sid_to_items.jsonl")
  assert [(tuple(r["codes"]), r["item_ids"]) for r in rows] == list(
    art.sid_to_items().items()
  )
  assert [r["sid"] for r in rows] == quantizer.sid_token_strings(
    np.asarray([r["codes"] for r in rows]), opq_codes=art.opq_codes
  )
  assert any("fit sample: 8 of" in line for line in lines)  # 2 x k1 rows
  assert any("(4 sampled)" in line for line in lines)
  meta = art.metadata
  assert meta["stream"] == dataclasses.asdict(SMALL)
  assert meta["variant"] == "+opq" and set(summary.metrics) == {"+opq"}
  assert summary.metrics["+opq"]["n_items"] == len(art.item_ids)


def test_streamed_artefact_feeds_the_sid_table_and_tasks(
  zh_sampled, zh_world_dir, tmp_path
):
  summary, out, _ = zh_sampled
  table = SIDTable.from_artefact(out, summary.content_hash)
  assert table.content_hash == summary.content_hash
  reg = tasks.register_tasks(
    zh_world_dir, out, prefix="stream_build_test", stream_items=True
  )
  assert reg.counts["s1_title_to_sid"] == len(table.item_ids)


@pytest.mark.slow
def test_full_sample_equals_in_memory_build_on_zh_world(zh_world_dir, tmp_path):
  """Samples holding the whole world: the same encoder, keywords, codebooks
  and tables as the in-memory build (only config.json's metadata and the
  report differ)."""
  mem = build.build_sids(zh_world_dir, tmp_path / "mem", ZH_CFG)
  streamed = stream_build.build_sids_streamed(
    zh_world_dir, tmp_path / "str", dataclasses.replace(ZH_CFG, stream=True)
  )
  assert streamed.content_hash != mem.content_hash  # metadata says "stream"
  for name in (
    "codebooks.npz",
    "keywords.tsv",
    "text_encoder/params.npz",
    "text_encoder/spm.model",
    "items.jsonl",
    "queries.jsonl",
    "sid_to_items.jsonl",
  ):
    a = (tmp_path / "mem" / name).read_bytes()
    assert (tmp_path / "str" / name).read_bytes() == a, name
  assert streamed.metrics["+opq"]["ICR"] == mem.metrics["+opq"]["ICR"]


@pytest.mark.slow
def test_full_sample_equals_in_memory_build_on_tiny_world(tiny_sid_build, tmp_path):
  """The tiny world (1,000 items, 8,726 sessions, 2,719 queries) is inside
  every default sample: same codebooks and tables as the session's in-memory
  build of all four variants, whose "+opq" is the artefact."""
  summary, mem_dir, _, cfg = tiny_sid_build
  world = pathlib.Path(artefact.load(mem_dir).info["world_dir"])
  world = (mem_dir / world).resolve()
  out = tmp_path / "str"
  streamed = stream_build.build_sids_streamed(
    world, out, dataclasses.replace(cfg, stream=True)
  )
  for name in ("codebooks.npz", "items.jsonl", "queries.jsonl", "sid_to_items.jsonl"):
    assert (out / name).read_bytes() == (mem_dir / name).read_bytes(), name
  assert streamed.metrics["+opq"]["ICR"] == summary.metrics["+opq"]["ICR"]


def test_reservoir_is_a_uniform_sample_in_stream_order():
  hits = np.zeros(100)
  for seed in range(2000):
    sample = stream_items.Reservoir(10, seed)
    for i in range(100):
      sample.add(i)
    rows = sample.rows()
    assert [p for p, _ in rows] == sorted({v for _, v in rows})  # 10 distinct
    assert len(rows) == 10 and all(p == v for p, v in rows)
    hits[[v for _, v in rows]] += 1
  # Each of the 100 positions is kept with probability 10 / 100: 200 times
  # in expectation (sd ~13.4); a biased skip rule moves whole ranges.
  assert np.all(np.abs(hits - 200) < 60)
  assert abs(hits[:50].sum() - hits[50:].sum()) < 400
  small = stream_items.Reservoir(10, 0)
  for i in range(4):
    small.add(i)
  assert small.rows() == [(i, i) for i in range(4)]


@pytest.mark.slow
def test_release_layout_rank_jsonl_and_integer_ids(tmp_path):
  """The public release's shapes (rank.jsonl, integer ids): the streamed
  build reads them as the in-memory reader does."""
  world_dir = ROOT / "tests/testdata/kuaisearch_release_consistent"
  out = tmp_path / "sids"
  cfg = dataclasses.replace(ZH_CFG, stream=True, stream_sample=SMALL)
  summary = stream_build.build_sids_streamed(world_dir, out, cfg)
  art = artefact.load(out, summary.content_hash)
  world = reader.load_world(world_dir)
  assert art.item_ids == tuple(r["item_id"] for r in world.items)
  queries = dict.fromkeys(r["query"] for r in world.recall + world.ranking)
  assert art.query_texts == tuple(q for q in queries if q.strip())
  pop = _train_popularity(world_dir)
  assert art.item_popularity.tolist() == [pop[i] for i in art.item_ids]


def test_repeated_item_id_is_refused_naming_the_rows(zh_world_dir, tmp_path):
  world = tmp_path / "world"
  shutil.copytree(zh_world_dir, world)
  (world / "manifest.json").unlink(missing_ok=True)
  lines = (world / "items.jsonl").read_text(encoding="utf-8").splitlines()
  first = json.loads(lines[0])
  copy = dict(json.loads(lines[3]), item_id=first["item_id"])
  lines[3] = json.dumps(copy, ensure_ascii=False)
  (world / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
  cfg = dataclasses.replace(ZH_CFG, stream=True)
  with pytest.raises(reader.SchemaError, match="items.jsonl:4: field 'item_id'") as e:
    stream_build.build_sids_streamed(world, tmp_path / "sids", cfg)
  assert "(first at line 1)" in str(e.value)


def test_world_checked_build_equals_schema_checked_build(
  zh_sampled, zh_world_dir, tmp_path
):
  """``world_checked`` (the pipeline's stage) checks only the item ids: same
  artefact as the schema-checked build (sampled, the sessions' items read
  at their offsets)."""
  summary, out, _ = zh_sampled
  cfg = dataclasses.replace(ZH_CFG, stream=True, stream_sample=SMALL)
  lines: list[str] = []
  fast = stream_build.build_sids_streamed(
    zh_world_dir, tmp_path / "fast", cfg, log=lines.append, world_checked=True
  )
  assert fast.content_hash == summary.content_hash
  assert any("item ids only, the world checked" in line for line in lines)


def _write_items(path: pathlib.Path, lines: list[str]) -> None:
  path.write_bytes("".join(lines).encode("utf-8"))


@pytest.mark.parametrize("checked", [False, True])
def test_item_scan_fetch_reads_the_rows_at_their_offsets(
  zh_world_dir, tmp_path, checked
):
  """Blank lines, CRLF endings, integer ids and multi-byte text: the scan's
  ids and the fetched rows are load_world's (brute force), line numbers
  count the blank lines."""
  world = tmp_path / "world"
  shutil.copytree(zh_world_dir, world)
  (world / "manifest.json").unlink(missing_ok=True)
  rows = [
    json.loads(x) for x in (world / "items.jsonl").read_text("utf-8").splitlines()
  ]
  rows[2]["item_id"] = 7001  # the release writes integer ids
  rows[2]["brand_id"] = 9
  text = [
    json.dumps(r, ensure_ascii=False) + ("\r\n" if n % 2 else "\n")
    for n, r in enumerate(rows)
  ]
  _write_items(world / "items.jsonl", [text[0], "\n", *text[1:4], "  \n", *text[4:]])
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  scan = stream_items.ItemScan(
    world, scratch, stream_items.Reservoir(2, 0), checked=checked
  )
  expect = reader.load_world(world, verify_manifest=False, dangling="drop").items
  assert len(scan) == len(expect) == len(rows)
  assert [scan.ids.get(n) for n in range(len(scan))] == [r["item_id"] for r in expect]
  assert scan.lines.tolist() == [1, *range(3, 6), *range(7, len(rows) + 3)]
  fetched = scan.fetch([5, 2, 0, 2])
  assert list(fetched) == [0, 2, 5]
  assert all(fetched[n] == expect[n] for n in fetched)
  assert fetched[2]["item_id"] == "7001" and fetched[2]["brand_id"] == "9"
  sampled = scan.sampled()
  assert len(sampled) == 2 and all(sampled[n] == expect[n] for n in sampled)
  ids = [r["item_id"] for r in expect]
  assert scan.ids.rows([ids[4], "nope", ids[0]]).tolist() == [4, -1, 0]


@pytest.mark.parametrize(
  ("bad", "checked", "match"),
  [
    ('{"item_id": "x", ', True, r"items.jsonl:3: malformed JSON"),
    ("[1, 2]", True, r"items.jsonl:3: expected a JSON object, got list"),
    ('{"item_title": "t"}', True, r"items.jsonl:3: field 'item_id': missing"),
    ('{"item_id": ""}', True, r"items.jsonl:3: field 'item_id': empty key"),
    ('{"item_id": 1.5}', True, r"items.jsonl:3: field 'item_id': expected str"),
    ('{"item_id": true}', True, r"items.jsonl:3: field 'item_id': expected str"),
    ("PRICE", False, r"items.jsonl:3: field 'item_price': expected float"),
  ],
)
def test_item_scan_names_file_line_and_field(
  zh_world_dir, tmp_path, bad, checked, match
):
  world = tmp_path / "world"
  shutil.copytree(zh_world_dir, world)
  lines = (world / "items.jsonl").read_text("utf-8").splitlines(keepends=True)
  if bad == "PRICE":  # a field the checked scan does not read
    bad = json.dumps(dict(json.loads(lines[2]), item_price="abc"), ensure_ascii=False)
  _write_items(world / "items.jsonl", [*lines[:2], bad + "\n", *lines[3:]])
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  with pytest.raises(validation.SchemaError, match=match):
    stream_items.ItemScan(world, scratch, stream_items.Reservoir(2, 0), checked=checked)
  if not checked:  # the world stage's validation catches it; the checked scan trusts it
    scan = stream_items.ItemScan(
      world, scratch, stream_items.Reservoir(2, 0), checked=True
    )
    assert len(scan) == len(lines)


def test_stream_switch_config_and_stage_marker():
  cfg = configs.sids_config({"stream": True, "stream_sample": {"items": 7}})
  assert cfg.stream and cfg.stream_sample.items == 7
  assert cfg.stream_sample.sessions == build.StreamSample().sessions
  # Off (the main job): the marker hashes the fields it hashed before.
  off = sids_stage.marker_config(build.BuildConfig())
  assert "stream" not in off and "stream_sample" not in off
  assert sids_stage.marker_config(cfg)["stream_sample"]["items"] == 7
  # keyword_tag_weights: hashed only when set (the default sets brand/entity).
  assert off["keyword_tag_weights"] == [["brand", 4.0], ["entity", 4.0]]
  plain = configs.sids_config({"keyword_tag_weights": ()})
  assert "keyword_tag_weights" not in sids_stage.marker_config(plain)
  weighted = configs.sids_config({"keyword_tag_weights": (("brand", 4.0),)})
  assert sids_stage.marker_config(weighted)["keyword_tag_weights"] == [["brand", 4.0]]
  with pytest.raises(ValueError, match="precomputed and save_embeddings"):
    build.BuildConfig(stream=True, save_embeddings=True)
  with pytest.raises(ValueError, match="StreamSample: fields must be >= 1"):
    build.StreamSample(block_rows=0)


@pytest.mark.slow
def test_pipeline_with_streamed_sids_stage(tmp_path):
  """run.py: world -> sids (streamed) -> train on the tiny world."""
  wd = tmp_path / "wd"
  # XLA without most optimisations, and a small shuffle window (the default
  # 2,000 preprocesses the tiny tasks many times over before each phase's
  # first batch): the test is about the streamed stage's artefact feeding
  # training, not the trained numbers.
  env = dict(
    os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
  )  # fmt: skip
  env.pop("XLA_FLAGS", None)  # one CPU device (conftest's 8 only slow compiles)
  proc = subprocess.run(
    [sys.executable, str(ROOT / "run.py"), f"--workdir={wd}",
     "--gin_file=gin/worlds/tiny.gin",
     "--gin_bindings=sids_config.overrides = {'stream': True, "
     "'train': {'steps': 20}}",
     "--gin_bindings=sft_config.steps = (2, 2, 2)",
     "--gin_bindings=sft_config.shuffle_buffer = 64",
     "--gin_bindings=sft_config.length_buckets = ()",
     "--gin_bindings=pipeline_config.stages = ('world', 'sids', 'train')"],
    cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  marker = json.loads((wd / "sids" / "STAGE.json").read_text())
  art = artefact.load(wd / "sids", marker["output_hash"])
  assert art.metadata["stream"] == dataclasses.asdict(build.StreamSample())
  assert "read_log" in proc.stdout + proc.stderr  # the streamed build's steps
  assert (wd / "train" / "STAGE.json").is_file()
