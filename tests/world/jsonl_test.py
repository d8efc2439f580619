"""world/jsonl.py: rows with line numbers; errors name file:line and field."""

from __future__ import annotations

import pytest

from onesearch_jax.world import jsonl


def _write(tmp_path, name, data: bytes):
  path = tmp_path / name
  path.write_bytes(data)
  return path


def test_rows_with_line_numbers_blank_lines_crlf_and_cjk(tmp_path):
  path = _write(
    tmp_path,
    "req.jsonl",
    '{"query": "红色连衣裙"}\r\n\n   \n{"query": "q", "n": [1, 2.5]}'.encode(),
  )
  assert list(jsonl.iter_jsonl(path, required=("query",))) == [
    (1, {"query": "红色连衣裙"}),
    (4, {"query": "q", "n": [1, 2.5]}),
  ]
  assert jsonl.read_jsonl(path) == [
    {"query": "红色连衣裙"},
    {"query": "q", "n": [1, 2.5]},
  ]


@pytest.mark.parametrize(
  "data,reason,field,message",
  [
    (
      b'{"query": "q"}\n{"query": \n',
      "malformed_json",
      None,
      "req.jsonl:2: invalid JSON: Expecting value at column 11",
    ),
    (
      b'{"query": "q"}\n["q"]\n',
      "not_object",
      None,
      "req.jsonl:2: expected a JSON object, got list",
    ),
    (
      b'{"query": "q"}\n{"query": "q"}\n{"user_id": "u"}\n',
      "missing_field",
      "query",
      "req.jsonl:3: field 'query' is missing",
    ),
    (
      b'{"query": "\xff"}\n',
      "bad_encoding",
      None,
      "req.jsonl:1: not valid UTF-8 (invalid start byte at byte 11)",
    ),
  ],
)
def test_errors_name_file_line_field(tmp_path, data, reason, field, message):
  path = _write(tmp_path, "req.jsonl", data)
  with pytest.raises(jsonl.JsonlError) as info:
    jsonl.read_jsonl(path, name="req.jsonl", required=("query",))
  assert str(info.value) == message
  assert (info.value.reason, info.value.field) == (reason, field)
  assert isinstance(info.value, ValueError)
  # Without a name, messages carry the path as given.
  with pytest.raises(jsonl.JsonlError, match=f"^{path}:"):
    jsonl.read_jsonl(path, required=("query",))


def test_duplicate_names_only_refused_when_asked(tmp_path):
  path = _write(tmp_path, "u.jsonl", b'{"user_id": "a", "user_id": "b"}\n')
  assert jsonl.read_jsonl(path) == [{"user_id": "b"}]  # json keeps the last
  with pytest.raises(jsonl.JsonlError) as info:
    list(jsonl.iter_jsonl(path, name="u.jsonl", unique_names=True))
  assert str(info.value) == "u.jsonl:1: field 'user_id' appears twice in one object"
  assert info.value.field == "user_id" and info.value.reason == "malformed_json"


def test_blank_line_is_invalid_when_not_skipped(tmp_path):
  path = _write(tmp_path, "t.jsonl", b'{"a": 1}\n\n{"a": 2}\n')
  assert jsonl.read_jsonl(path) == [{"a": 1}, {"a": 2}]
  with pytest.raises(jsonl.JsonlError, match=r"^t\.jsonl:2: invalid JSON: Expecting"):
    jsonl.read_jsonl(path, name="t.jsonl", skip_blank=False)


def test_scan_yields_errors_and_goes_on(tmp_path):
  path = _write(tmp_path, "t.jsonl", b'{"a": 1}\n{oops\n\n[2]\n')
  blanks = []
  got = list(jsonl.scan(path, name="t.jsonl", on_blank=lambda: blanks.append(1)))
  assert [(line, value) for line, value, _ in got] == [
    (1, {"a": 1}),
    (2, None),
    (4, [2]),
  ]
  assert got[0][2] is None and got[2][2] is None
  assert got[1][2].line == 2 and got[1][2].reason == "malformed_json"
  assert got[1][2].detail.startswith("Expecting property name")
  assert blanks == [1]
