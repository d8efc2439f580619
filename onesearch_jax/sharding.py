"""Mesh creation, logical axis names, rule sets and the `constrain` helper.

This is the only module that names mesh axes. Everything else speaks in
logical axis names (the constants below); a rule set maps each logical name
to a mesh axis (or a tuple of them, or None = replicated). Rule sets are data
so a layout experiment swaps them from gin without touching model code.

Parameters and activations use different logical names for the model
dimension (EMBED vs ACT_EMBED): under FSDP the parameter's embed dimension is
sharded over 'fsdp', while activations use 'fsdp' for their batch dimension,
and one mesh axis may appear only once in a PartitionSpec.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
from flax.core import spmd as flax_spmd
from jax.sharding import AxisType, NamedSharding, PartitionSpec

# Mesh axes (the only place these strings appear).
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Logical axis names: parameters.
EMBED = "embed"  # model dimension D of a weight
MLP = "mlp"  # feed-forward hidden dimension F
HEADS = "heads"  # attention heads H
KV = "kv"  # per-head dimension K
VOCAB = "vocab"  # vocabulary V
NORM = "norm"  # RMSNorm scale vectors (small, replicated)
REL_BUCKETS = "rel_buckets"  # relative position buckets
QUERIES = "queries"  # Q-Former learned query tokens N_M
SEQ_FEATURES = "seq_features"  # long-sequence feature dimension D_seq
LAYERS = "layers"  # stacked layers (unused while layers are unrolled)

# Logical axis names: activations.
BATCH = "batch"  # B (also B*W when decoding with beams)
LENGTH = "length"  # L or T
ACT_EMBED = "act_embed"  # D of an activation
ACT_MLP = "act_mlp"  # F of an activation
ACT_HEADS = "act_heads"  # H of an activation
ACT_KV = "act_kv"  # K of an activation
ACT_VOCAB = "act_vocab"  # V of logits
BEAM = "beam"  # beams, when kept separate from the batch

LOGICAL_AXES = (
  EMBED,
  MLP,
  HEADS,
  KV,
  VOCAB,
  NORM,
  REL_BUCKETS,
  QUERIES,
  SEQ_FEATURES,
  LAYERS,
  BATCH,
  LENGTH,
  ACT_EMBED,
  ACT_MLP,
  ACT_HEADS,
  ACT_KV,
  ACT_VOCAB,
  BEAM,
)

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

_REPLICATED_SMALL: Rules = (
  (KV, None),
  (NORM, None),
  (REL_BUCKETS, None),
  (QUERIES, None),
  (SEQ_FEATURES, None),
  (LAYERS, None),
  (LENGTH, None),
  (ACT_EMBED, None),
  (ACT_KV, None),
  (BEAM, None),
)

# Pure data parallelism: every parameter replicated, the batch split over all
# devices (both batch axes, so a (n, 1, 1) or (a, b, 1) mesh both work).
DP_RULES: Rules = (
  (BATCH, (DATA, FSDP)),
  (EMBED, None),
  (MLP, None),
  (HEADS, None),
  (VOCAB, None),
  (ACT_MLP, None),
  (ACT_HEADS, None),
  (ACT_VOCAB, None),
) + _REPLICATED_SMALL

# FSDP (ZeRO-3 style): weights split along their model dimension over 'fsdp',
# gathered per layer by XLA; the batch is split over data x fsdp.
FSDP_RULES: Rules = (
  (BATCH, (DATA, FSDP)),
  (EMBED, FSDP),
  (MLP, None),
  (HEADS, None),
  (VOCAB, None),
  (ACT_MLP, None),
  (ACT_HEADS, None),
  (ACT_VOCAB, None),
) + _REPLICATED_SMALL

# FSDP + tensor (Megatron) parallelism: heads, MLP and vocab split over
# 'tensor', the model dimension over 'fsdp' (t5x standard 2D rules).
FSDP_TP_RULES: Rules = (
  (BATCH, (DATA, FSDP)),
  (EMBED, FSDP),
  (MLP, TENSOR),
  (HEADS, TENSOR),
  (VOCAB, TENSOR),
  (ACT_MLP, TENSOR),
  (ACT_HEADS, TENSOR),
  (ACT_VOCAB, TENSOR),
) + _REPLICATED_SMALL

RULE_SETS: dict[str, Rules] = {
  "dp": DP_RULES,
  "fsdp": FSDP_RULES,
  "fsdp_tp": FSDP_TP_RULES,
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh and logical-axis rules.

  Attributes:
    shape: sizes of the ('data', 'fsdp', 'tensor') axes; one entry may be -1,
      resolved against the device count.
    rules: name of a rule set in RULE_SETS ('dp', 'fsdp', 'fsdp_tp').
    custom_rules: explicit rules that replace the named set when non-empty.
  """

  shape: tuple[int, int, int] = (-1, 1, 1)  # ('data', 'fsdp', 'tensor') sizes
  rules: str = "dp"  # key of RULE_SETS
  custom_rules: Rules = ()  # overrides `rules` when given

  def __post_init__(self):
    if len(self.shape) != len(MESH_AXES):
      raise ValueError(f"MeshConfig.shape {self.shape} needs {len(MESH_AXES)} axes")
    if sum(1 for s in self.shape if s == -1) > 1:
      raise ValueError(f"MeshConfig.shape {self.shape}: at most one -1")
    if any(s == 0 or s < -1 for s in self.shape):
      raise ValueError(f"MeshConfig.shape {self.shape}: sizes must be >= 1 or -1")
    if not self.custom_rules and self.rules not in RULE_SETS:
      raise ValueError(f"MeshConfig.rules {self.rules!r} not in {sorted(RULE_SETS)}")
    validate_rules(self.logical_rules)

  @property
  def logical_rules(self) -> Rules:
    """The active rule set (custom rules win)."""
    return tuple(self.custom_rules) if self.custom_rules else RULE_SETS[self.rules]

  def resolved_shape(self, n_devices: int) -> tuple[int, ...]:
    """The mesh shape with -1 replaced so the product equals n_devices."""
    known = math.prod(s for s in self.shape if s != -1)
    if -1 in self.shape:
      if n_devices % known:
        raise ValueError(f"mesh shape {self.shape} does not divide {n_devices} devices")
      shape = tuple(n_devices // known if s == -1 else s for s in self.shape)
    else:
      shape = tuple(self.shape)
    if math.prod(shape) != n_devices:
      raise ValueError(
        f"mesh shape {shape} needs {math.prod(shape)} devices, got {n_devices}"
      )
    return shape


def mesh_config(
  rules: str = "dp",
  shape: Sequence[int] | None = None,
) -> MeshConfig:
  """Factory for gin: a MeshConfig with a default shape per rule set.

  Args:
    rules: 'dp', 'fsdp' or 'fsdp_tp'.
    shape: ('data', 'fsdp', 'tensor') sizes; defaults put every device on the
      axis the rule set uses ((-1,1,1) dp, (1,-1,1) fsdp, (1,-1,2) fsdp_tp).
  """
  defaults = {"dp": (-1, 1, 1), "fsdp": (1, -1, 1), "fsdp_tp": (1, -1, 2)}
  if rules not in defaults:
    raise ValueError(f"unknown rule set {rules!r}; known: {sorted(defaults)}")
  return MeshConfig(shape=tuple(shape) if shape else defaults[rules], rules=rules)


def validate_rules(rules: Rules) -> None:
  """Raises ValueError on unknown logical names or mesh axes in a rule set."""
  seen = set()
  for entry in rules:
    if len(entry) != 2:
      raise ValueError(f"rule {entry!r} is not a (logical, mesh) pair")
    logical, mesh_axes = entry
    if logical in seen:
      raise ValueError(f"logical axis {logical!r} appears twice in the rules")
    seen.add(logical)
    axes = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
    for axis in axes:
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(
          f"rule ({logical!r}, {mesh_axes!r}) names unknown mesh axis {axis!r}; "
          f"mesh axes are {MESH_AXES}"
        )


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None):
  """Builds the ('data', 'fsdp', 'tensor') mesh with Auto axis types.

  Args:
    cfg: the mesh config; -1 resolves against len(devices).
    devices: defaults to all devices (jax.devices()).

  Returns:
    A jax.sharding.Mesh.
  """
  devices = list(devices) if devices is not None else jax.devices()
  shape = cfg.resolved_shape(len(devices))
  return jax.make_mesh(
    shape,
    MESH_AXES,
    axis_types=(AxisType.Auto,) * len(MESH_AXES),
    devices=devices,
  )


def single_device_mesh() -> jax.sharding.Mesh:
  """A (1, 1, 1) mesh on the first device: the reference for sharded runs."""
  return make_mesh(MeshConfig(shape=(1, 1, 1)), devices=jax.devices()[:1])


def logical_to_spec(
  logical_axes: Sequence[str | None], rules: Rules | None = None
) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec through a rule set.

  Args:
    logical_axes: one logical name (or None) per array dimension.
    rules: the rule set; defaults to the active `nnx.logical_axis_rules`.

  Returns:
    The PartitionSpec.

  Raises:
    KeyError: a logical name has no rule.
  """
  rules = active_rules() if rules is None else rules
  table = dict(rules)
  out = []
  for name in logical_axes:
    if name is None:
      out.append(None)
    elif name in table:
      out.append(table[name])
    else:
      raise KeyError(f"logical axis {name!r} has no rule in {sorted(table)}")
  return PartitionSpec(*out)


def named_sharding(
  mesh: jax.sharding.Mesh,
  logical_axes: Sequence[str | None],
  rules: Rules | None = None,
) -> NamedSharding:
  """A NamedSharding on `mesh` for the logical axes under `rules`."""
  return NamedSharding(mesh, logical_to_spec(logical_axes, rules))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Fully replicated sharding on `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def active_rules() -> Rules:
  """The rules set by the innermost `nnx.logical_axis_rules` context."""
  return tuple(flax_spmd.get_logical_axis_rules())


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint through the active rules and mesh.

  A no-op when no mesh or no rules are active (plain single-device use).

  Args:
    x: the activation, one logical name per dimension in `logical_axes`.
    logical_axes: e.g. (BATCH, LENGTH, ACT_EMBED).
  """
  if x.ndim != len(logical_axes):
    raise ValueError(f"constrain: rank {x.ndim} array, axes {tuple(logical_axes)}")
  rules = active_rules()
  mesh = jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, rules))
