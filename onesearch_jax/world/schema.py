"""The on-disk format: the KuaiSearch schema (SPEC.md §7), as data.

Every stage of the pipeline reads the world through these five tables, so a
user with the real KuaiSearch files (or their own logs written with the same
field names) runs the same pipeline as the simulated world.

Files: ``<dir>/{users,items,recall,ranking,relevance}.jsonl`` (one JSON object
per line) plus ``<dir>/manifest.json``; the ranking table may also be named
``rank.jsonl`` (the public release's name, ``Table.aliases``). The field names
are KuaiSearch's own.
A few *extension* fields, marked ``required=False``, carry what the simulator
knows and the real data lacks (price and attributes of an item, its publish
time, the item id of a relevance row); readers must work without them.

Conventions (our choices where KuaiSearch is silent, see docs/DATA.md):
  * ids are strings; an id field (``Field.is_id``) also accepts a JSON
    integer, as the KuaiSearch release writes them, and the reader turns it
    into its decimal string, so ``7`` and ``"7"`` are the same id;
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
  # An id ("str" or "list[str]"): a JSON integer is accepted too and read as
  # its decimal string (the KuaiSearch release writes ids as integers).
  is_id: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"field {self.name}: unknown kind {self.kind!r}")
    if self.is_id and self.kind not in ("str", "list[str]"):
      raise ValueError(f"field {self.name}: an id field is str or list[str]")


@dataclasses.dataclass(frozen=True)
class Table:
  """One file of the world: its name, key and columns."""

  name: str  # file stem: <dir>/<name>.jsonl
  fields: tuple[Field, ...]
  key: tuple[str, ...] = ()  # fields that must be unique together ("" = none)
  aliases: tuple[str, ...] = ()  # other accepted file stems (release names)

  @property
  def filename(self) -> str:
    """The name our writers use."""
    return f"{self.name}.jsonl"

  @property
  def filenames(self) -> tuple[str, ...]:
    """Every accepted file name, ours first (``reader.table_path`` picks)."""
    return (self.filename, *(f"{a}.jsonl" for a in self.aliases))

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
    Field("user_id", "str", is_id=True),
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
    Field("item_id", "str", is_id=True),
    Field("item_title", "str"),
    Field("brand_id", "str", is_id=True),
    Field("brand_name", "str"),
    Field("seller_id", "str", is_id=True),
    Field("seller_name", "str"),
    Field("category_level1_id", "str", is_id=True),
    Field("category_level1_name", "str"),
    Field("category_level2_id", "str", is_id=True),
    Field("category_level2_name", "str"),
    Field("category_level3_id", "str", is_id=True),
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
    Field("user_id", "str", is_id=True),
    Field("session_id", "str", is_id=True),
    Field("query", "str"),
    Field("impressed_item_ids", "list[str]", is_id=True, doc="display order"),
    Field("clicked_item_ids", "list[str]", is_id=True),
    Field("purchased_item_ids", "list[str]", is_id=True),
    Field("time_index", "int"),
    Field("split", "str", doc="train | test"),
    Field("search_entrance", "str", required=False),
  ),
)

RANKING = Table(
  name="ranking",
  aliases=("rank",),  # the public release's file name
  key=("session_id", "target_item_id"),
  fields=(
    Field("user_id", "str", is_id=True),
    Field("session_id", "str", is_id=True),
    Field("user_fan_number", "int"),
    Field("user_follow_number", "int"),
    Field("time_index", "int"),
    Field("search_entrance", "str"),
    Field(
      "recently_clicked_item_ids",
      "list[str]",
      is_id=True,
      doc="most recent last, <= 20",
    ),
    Field(
      "recently_purchased_item_ids",
      "list[str]",
      is_id=True,
      doc="most recent last, <= 20",
    ),
    Field("query", "str"),
    Field("target_item_id", "str", is_id=True),
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
    Field(
      "item_id",
      "str",
      required=False,
      doc="extension: the judged item",
      is_id=True,
    ),
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
