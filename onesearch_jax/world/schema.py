"""The on-disk format: the KuaiSearch schema (SPEC.md §7), as data.

Every stage of the pipeline reads the world through these five tables, so a
user with the real KuaiSearch files (or their own logs written with the same
field names) runs the same pipeline as the simulated world.

Files: ``<dir>/{users,items,recall,ranking,relevance}.jsonl`` (one JSON object
per line) plus ``<dir>/manifest.json``. The field names are KuaiSearch's own.
A few *extension* fields, marked ``required=False``, carry what the simulator
knows and the real data lacks (price and attributes of an item, its publish
time, the item id of a relevance row); readers must work without them.

Conventions (our choices where KuaiSearch is silent, see docs/DATA.md):
  * ids are strings (KuaiSearch ids are large integers; strings are safe);
  * ``time_index`` is an integer timestamp in seconds from the start of the
    log; only its order matters to the pipeline, the ``split`` field decides
    train/test (the simulated world puts its last day in ``test``);
  * ``impressed_item_ids`` is in display order (position 1 first);
  * the click test set is every (user, query, clicked item) of the test
    split, the order test set every (user, query, purchased item).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Field kinds. "int"/"float"/"str"/"bool" are scalars; "list[str]" a JSON list
# of strings; "dict[str,str]" and "dict[str,float]" JSON objects.
KINDS = (
  "str",
  "int",
  "float",
  "bool",
  "list[str]",
  "dict[str,str]",
  "dict[str,float]",
)

SPLITS = ("train", "test")
SEARCH_ENTRANCES = (
  "mall",
  "homepage",
  "mall_placeholder",
  "homepage_placeholder",
  "detail_page",
)
GENDERS = ("female", "male", "unknown")

# The 18 attribute types of the OneSearch keyword dictionary (SPEC §2.2).
ATTRIBUTE_TYPES = (
  "entity",
  "modifier",
  "brand",
  "material",
  "style",
  "function",
  "location",
  "audience",
  "color",
  "scene",
  "specifications",
  "price",
  "model",
  "anchor",
  "series",
  "marketing",
  "season",
  "pattern",
)


@dataclasses.dataclass(frozen=True)
class Field:
  """One column of a table."""

  name: str
  kind: str  # one of KINDS
  required: bool = True  # False: an extension field, may be absent
  doc: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"field {self.name}: unknown kind {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class Table:
  """One file of the world: its name, key and columns."""

  name: str  # file stem: <dir>/<name>.jsonl
  fields: tuple[Field, ...]
  key: tuple[str, ...] = ()  # fields that must be unique together ("" = none)

  @property
  def filename(self) -> str:
    return f"{self.name}.jsonl"

  def field(self, name: str) -> Field:
    for f in self.fields:
      if f.name == name:
        return f
    raise KeyError(f"table {self.name} has no field {name!r}")

  @property
  def field_names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.fields)


USERS = Table(
  name="users",
  key=("user_id",),
  fields=(
    Field("user_id", "str"),
    Field("gender", "str", doc="female | male | unknown"),
    Field("age_bucket", "str", doc="e.g. '18-23', '50+'"),
    Field("fre_country", "str"),
    Field("fre_province", "str"),
    Field("fre_city", "str"),
  ),
)

ITEMS = Table(
  name="items",
  key=("item_id",),
  fields=(
    Field("item_id", "str"),
    Field("item_title", "str"),
    Field("brand_id", "str"),
    Field("brand_name", "str"),
    Field("seller_id", "str"),
    Field("seller_name", "str"),
    Field("category_level1_id", "str"),
    Field("category_level1_name", "str"),
    Field("category_level2_id", "str"),
    Field("category_level2_name", "str"),
    Field("category_level3_id", "str"),
    Field("category_level3_name", "str"),
    # Extensions (the simulator writes them; real KuaiSearch lacks them).
    Field("item_price", "float", required=False, doc="list price"),
    Field(
      "attributes",
      "dict[str,str]",
      required=False,
      doc="attribute type (ATTRIBUTE_TYPES) -> value as written in the title",
    ),
    Field(
      "publish_time_index",
      "int",
      required=False,
      doc="time_index at which the item appeared (cold-start items)",
    ),
  ),
)

RECALL = Table(
  name="recall",
  key=("session_id",),
  fields=(
    Field("user_id", "str"),
    Field("session_id", "str"),
    Field("query", "str"),
    Field("impressed_item_ids", "list[str]", doc="display order"),
    Field("clicked_item_ids", "list[str]"),
    Field("purchased_item_ids", "list[str]"),
    Field("time_index", "int"),
    Field("split", "str", doc="train | test"),
    Field("search_entrance", "str", required=False),
  ),
)

RANKING = Table(
  name="ranking",
  key=("session_id", "target_item_id"),
  fields=(
    Field("user_id", "str"),
    Field("session_id", "str"),
    Field("user_fan_number", "int"),
    Field("user_follow_number", "int"),
    Field("time_index", "int"),
    Field("search_entrance", "str"),
    Field("recently_clicked_item_ids", "list[str]", doc="most recent last, <= 20"),
    Field("recently_purchased_item_ids", "list[str]", doc="most recent last, <= 20"),
    Field("query", "str"),
    Field("target_item_id", "str"),
    Field("target_item_price", "float"),
    Field("is_clicked", "int", doc="0 | 1"),
    Field("is_purchased", "int", doc="0 | 1"),
    Field(
      "user_statistical_features",
      "dict[str,float]",
      doc="user_show_cnt_30d_hist, user_click_cnt_30d_hist, "
      "user_order_cnt_30d_hist, user_gmv_30d_hist",
    ),
    Field(
      "target_item_statistical_features",
      "dict[str,float]",
      doc="item_show_cnt_30d_hist, item_click_cnt_30d_hist, item_order_cnt_30d_hist",
    ),
    Field("split", "str", doc="train | test"),
    Field(
      "position",
      "int",
      required=False,
      doc="1-based display position of the target in its session",
    ),
  ),
)

RELEVANCE = Table(
  name="relevance",
  key=(),
  fields=(
    Field("query", "str"),
    Field("item_title", "str"),
    Field("brand", "str"),
    Field("seller_name", "str"),
    Field("attr_value", "str"),
    Field("score", "int", doc="0..3 (ESCI: I=0, C=1, S=2, E=3)"),
    Field("item_id", "str", required=False, doc="extension: the judged item"),
  ),
)

TABLES: Mapping[str, Table] = {
  t.name: t for t in (USERS, ITEMS, RECALL, RANKING, RELEVANCE)
}

MANIFEST = "manifest.json"


def empty_row(table: Table) -> dict[str, Any]:
  """A row with every required field set to a zero value (tests, templates)."""
  zero = {
    "str": "",
    "int": 0,
    "float": 0.0,
    "bool": False,
    "list[str]": [],
    "dict[str,str]": {},
    "dict[str,float]": {},
  }
  return {f.name: zero[f.kind] for f in table.fields if f.required}
