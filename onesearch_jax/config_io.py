"""Frozen dataclass configs to and from JSON, and the hash of JSON inputs.

``to_dict(cfg)`` is the JSON form every config is written in
(``sft_config.json``) and hashed in (the pipeline's stage markers);
``from_dict(cls, raw)`` reads it back into ``cls`` (nested dataclasses and
tuples restored from their type hints); ``json_hash(obj)`` is the sha256 a
stage marker records for its inputs.

The JSON form and the hash are on-disk formats: a stage whose inputs hash
changes is re-run when an old workdir is resumed, so neither may change
(tests/config_io_test.py pins them). Hashing ``to_dict(cfg)`` equals hashing
``dataclasses.asdict(cfg)`` (what the world, sids and eval markers hashed
before) as long as every dict in a config has str keys: JSON turns int keys
into strings, which sort differently.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> Any:
  """The JSON-able form of a dataclass (tuples become lists; values JSON
  cannot hold become their repr); anything else goes through JSON as is."""
  obj = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
  return json.loads(json.dumps(obj, default=repr))


def json_hash(obj: Any) -> str:
  """sha256 hex of ``obj`` as sorted-key JSON (values JSON cannot hold
  hashed by their repr): the inputs hash of a stage marker."""
  blob = json.dumps(obj, sort_keys=True, default=repr).encode()
  return hashlib.sha256(blob).hexdigest()


def from_dict(
  cls: type[T], raw: Mapping[str, Any], *, absent: Mapping[str, Any] | None = None
) -> T:
  """The inverse of ``to_dict`` for the dataclass ``cls``.

  Fields typed as a dataclass (or ``X | None``) are read recursively, tuple
  fields get their lists back as (nested) tuples.

  Args:
    cls: a dataclass type whose type hints resolve at runtime.
    raw: ``to_dict`` output.
    absent: field -> value for top-level fields missing from ``raw`` (a file
      written before the field existed meant this value, which need not be
      today's default); other missing fields take the dataclass default.

  Raises:
    ValueError: ``raw`` names a field ``cls`` does not have.
  """
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(raw) - set(fields))
  if unknown:
    raise ValueError(f"{cls.__name__}: unknown fields {unknown} in {sorted(raw)}")
  hints = _hints(cls)
  values = {name: _read(hints[name], value) for name, value in raw.items()}
  for name, value in (absent or {}).items():
    if name not in fields:
      raise ValueError(f"{cls.__name__}: absent names an unknown field {name!r}")
    values.setdefault(name, value)
  return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _read(hint: Any, value: Any) -> Any:
  """``value`` (JSON) as the type ``hint`` says: dataclass or tuple."""
  if value is None:
    return None
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    for arm in arms:
      if dataclasses.is_dataclass(arm) and isinstance(value, Mapping):
        return from_dict(arm, value)
      if _is_tuple(arm) and isinstance(value, list | tuple):
        return _read(arm, value)
    return value
  if isinstance(hint, type) and dataclasses.is_dataclass(hint):
    return from_dict(hint, value)
  if _is_tuple(hint) and isinstance(value, list | tuple):
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_read(args[0], v) for v in value)
    if args and len(args) == len(value):
      return tuple(_read(a, v) for a, v in zip(args, value, strict=True))
    return _tuples(value)
  return value


def _is_tuple(hint: Any) -> bool:
  return hint is tuple or typing.get_origin(hint) is tuple


def _tuples(x: Any) -> Any:
  return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x
