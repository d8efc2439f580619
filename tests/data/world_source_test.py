"""Reading a world: schema reader and plain-json fallback agree; clear errors."""

from __future__ import annotations

import pytest

from onesearch_jax.data import world_source


def test_both_readers_agree(zh_world_dir, monkeypatch):
  a = world_source.read_world(zh_world_dir)
  monkeypatch.setattr(world_source, "USE_SCHEMA_READER", False)
  b = world_source.read_world(zh_world_dir)
  assert (a.users, a.items, a.recall) == (b.users, b.items, b.recall)
  assert len(a.recall) == 9 and a.recall[0]["query"] == "红色连衣裙女夏季"


@pytest.mark.parametrize("schema_reader", [True, False])
def test_bad_row_names_file_line_field(
  small_world, tmp_path, monkeypatch, schema_reader
):
  monkeypatch.setattr(world_source, "USE_SCHEMA_READER", schema_reader)
  for name in ("users", "items", "recall", "ranking", "relevance"):
    (tmp_path / f"{name}.jsonl").write_text((small_world / f"{name}.jsonl").read_text())
  lines = (tmp_path / "recall.jsonl").read_text().splitlines()
  lines[2] = lines[2].replace('"time_index"', '"time_idx"')
  (tmp_path / "recall.jsonl").write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"recall.jsonl:3: field 'time_index'"):
    world_source.read_world(tmp_path)
